"""Shared fixtures: simulated Sparks (real sshd), and the real app served by uvicorn on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx
import pytest
from hypothesis import settings

IMAGE_DIR = Path(__file__).resolve().parent.parent
# Simulated models load in about a second instead of minutes (read by the nodes at start).
os.environ.setdefault("SPARKSIM_LOAD_SECONDS", "1")
ARTIFACTS = IMAGE_DIR.parent / "test-artifacts"
# The suite runs on two workers beside the engines' build: an example's time says nothing about
# behaviour there (the speed targets are measured in bench/), so no per-example deadline.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


def _sim_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "simulated Sparks need root (useradd, unshare, mount)"
    for tool in ("/usr/sbin/sshd", "/usr/bin/python3", "unshare", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} is missing (make test installs it)"
    return None


@pytest.fixture(scope="session")
def sim_cluster():
    """Spark 1 and Spark 2: real OpenSSH servers with sparksim's tools, each in its own network
    namespace on a private bridge (10.213.K.2, .3) or, where namespaces are unavailable, on
    127.0.0.2 and 127.0.0.3."""
    problem = _sim_prerequisites()
    if problem:
        pytest.fail(f"cannot start simulated Sparks: {problem}")
    from sparksim.cluster import SimCluster

    cluster = SimCluster(2).start()
    yield cluster
    cluster.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornProcess:
    """`python -m uvicorn <target>` in a subprocess on loopback, its output in a log file; ready when
    `health_path` answers 200. Subclasses say which app, under which Python, with which environment."""

    name = "app"
    health_path = "/health"
    ready_timeout_s = 20.0

    def __init__(self, python: str | Path, target: str, env: dict[str, str], log_path: Path,
                 *uvicorn_args: str, cwd: Path = IMAGE_DIR) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(python), "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(self.port), *uvicorn_args],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float | None = None) -> Self:
        timeout = self.ready_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}{self.health_path}", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {self.health_path} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class RunningApp(UvicornProcess):
    """`uvicorn app.server:app` in a subprocess, exactly as a user starts it."""

    health_path = "/api/health"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SSH_"))}
        # Its data files beside its log unless the test says: never the user's own data directory,
        # and never one shared with an app of another test (or of the other worker).
        full_env["DATA_DIR"] = str(log_path.parent / "data")
        full_env.update(env)
        super().__init__(sys.executable, "app.server:app", full_env, log_path, "--timeout-graceful-shutdown", "3")

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=kw.pop("timeout", 30), **kw)


@pytest.fixture
def start_app(tmp_path) -> Iterator:
    """Factory: start_app(env) -> RunningApp (ready). Every app started is stopped afterwards."""
    apps: list[RunningApp] = []

    def _start(env: dict[str, str], *, wait: bool = True) -> RunningApp:
        base = {"CONNECTIVITY_LOG": str(tmp_path / "data" / "connectivity.json"),
                "REDACTION_MAP_DB": str(tmp_path / "data" / "redaction_maps.db"),
                "CONNECTIVITY_INTERVAL_S": "1", "SSH_KEEPALIVE_INTERVAL_S": "1"}
        app = RunningApp({**base, **env}, tmp_path / f"app{len(apps)}.log")
        apps.append(app)
        return app.wait_ready() if wait else app

    yield _start
    for app in apps:
        app.stop()


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Poll `predicate()` until it returns a truthy value; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message}; last value: {last!r}")


@contextmanager
def sim_app(sim_cluster, directory: Path, **env: str) -> Iterator[RunningApp]:
    """The app as a user starts it, against the simulated Sparks, its data files in `directory`;
    fast probes, no deep-health schedule unless `env` says otherwise. For module fixtures:
    `with sim_app(sim_cluster, tmp_path_factory.mktemp("x")) as app: yield app`."""
    running = RunningApp({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(directory / "c.json"),
                          "REDACTION_MAP_DB": str(directory / "redaction_maps.db"),
                          "CONNECTIVITY_INTERVAL_S": "1", "SSH_KEEPALIVE_INTERVAL_S": "1",
                          "DEEP_HEALTH_INTERVAL_S": "0", **env}, directory / "app.log")
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def launching_app_fixtures(name: str, *, stop_within_s: float, poll_s: float):
    """The fixtures of a module whose tests launch models, as `app, clean_nodes = launching_app_fixtures(...)`:
    `app`, the app against the simulated Sparks for the whole module, polling launches fast (its files in a
    fresh directory `name`), and `clean_nodes` (autouse), which ends every test with every node up, no model
    deployed and no container on any node, whatever happened (stop_all_models)."""

    @pytest.fixture(scope="module")
    def app(sim_cluster, tmp_path_factory):
        """The app as a user starts it, for every test of the module."""
        with sim_app(sim_cluster, tmp_path_factory.mktemp(name), LAUNCH_POLL_INTERVAL_S="0.3",
                     LAUNCH_TIMEOUT_S="90") as running:
            yield running

    @pytest.fixture(autouse=True)
    def clean_nodes(app, sim_cluster):
        """After every test: every node up, no model deployed, no container (stop_all_models)."""
        yield
        stop_all_models(app, sim_cluster, timeout=stop_within_s, interval=poll_s)

    return app, clean_nodes


def deployed(app: RunningApp) -> list[dict]:
    """The deployments the app knows of, whatever their state."""
    return [m["deployment"] for m in app.get("/api/models").json()["models"] if m["deployment"]]


def stop_all_models(app: RunningApp, sim_cluster, *, timeout: float, interval: float) -> None:
    """Leave every node up, no model deployed and no container on any node; fails if a model
    would not stop within `timeout` s (asking again every `interval` s)."""
    for node in sim_cluster.nodes:
        if node.proc is None:  # crashed by the test
            node.revive()
    deadline = time.monotonic() + timeout
    while (remaining := deployed(app)) and time.monotonic() < deadline:
        for deployment in remaining:
            if deployment["state"] not in ("starting", "loading", "stopping"):
                app.post(f"/api/models/{deployment['model']}/stop")  # 409 while its node is busy: next round
        time.sleep(interval)
    for node in sim_cluster.nodes:
        sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f")
    assert not deployed(app), f"could not stop: {deployed(app)}"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Playwright), one per test module."""
    from browser import chromium  # Playwright is imported only by the tests that drive a browser

    with chromium() as launched:
        yield launched


@pytest.fixture
def pages(browser):
    """browser.Pages: pages.open(url, width, ...) -> (page, PageProblems); every context is closed afterwards."""
    from browser import Pages

    opened = Pages(browser)
    yield opened
    opened.close()


# Modules whose integration tests run the simulated Sparks' real engines (llama.cpp, torch), which
# `make test` may still be building in the background on a fresh machine.
_ENGINE_MODULES = {"test_lifecycle", "test_sparksim_vllm", "test_spark_embed", "test_embeddings_proxy",
                   "test_dashboard_models", "test_audio_engines"}
_ENGINES_READY = ".audio-installed"  # the last stamp `make sim-venv` writes


def pytest_configure(config):
    """Two workers need network namespaces: without them both workers' simulated Sparks would share
    127.0.0.x and the ports their models and services bind. Then the suite runs in one process
    (decided before pytest-xdist starts its workers, which it does in a later configure hook)."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") != "no":
        from sparksim.cluster import netns_available

        problem = netns_available()
        if problem:
            print(f"\nnetwork namespaces unavailable ({problem}): running the suite in one process")
            config.option.numprocesses, config.option.dist = None, "no"


def pytest_collection_modifyitems(config, items):
    """Fast unit tests first, so a failure shows early; then real servers; last, what needs the
    engines (so their build overlaps everything else). On xdist workers, which take a test file
    at a time (make test: --dist loadfile), whole files are ordered that way: a file with any
    engine test goes last.

    A test that needs the engines waits for their build before any of its fixtures starts (a
    module's server fixture may run the engines): `_engines_built` goes first in its list."""
    for item in items:
        if item.get_closest_marker("integration") and item.module.__name__ in _ENGINE_MODULES:
            item.add_marker(pytest.mark.engines)
        if item.get_closest_marker("engines") and "_engines_built" not in item.fixturenames:
            item.fixturenames.insert(0, "_engines_built")  # shared by a function's parametrized items

    def rank(item) -> tuple[bool, bool]:
        return item.get_closest_marker("integration") is not None, item.get_closest_marker("engines") is not None

    if os.environ.get("PYTEST_XDIST_WORKER"):
        by_file: dict[str, tuple[bool, bool]] = {}
        for item in items:
            by_file[item.path] = max(by_file.get(item.path, (False, False)), rank(item))
        items.sort(key=lambda item: (by_file[item.path][1], by_file[item.path][0], rank(item)))
    else:
        items.sort(key=rank)


@pytest.fixture(scope="session")
def _engines_built():
    venv = Path(os.environ.get("SPARKSIM_VENV") or "/opt/sparksim-venv")
    failed, log = Path(f"{venv}.failed"), Path(f"{venv}.log")
    deadline = time.monotonic() + 30 * 60
    while not (venv / _ENGINES_READY).exists():
        if failed.exists():
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"building the simulated Sparks' engines failed (make sim-venv):\n{tail}")
        stalled = log.exists() and time.time() - log.stat().st_mtime > 15 * 60
        if not log.exists() or stalled or time.monotonic() > deadline:
            pytest.fail(f"{venv} is not built: run `make sim-venv` (make test does it)")
        time.sleep(2)

