"""Shared fixtures: simulated Sparks (real sshd), and the real app served by uvicorn on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

IMAGE_DIR = Path(__file__).resolve().parent.parent
# Simulated models load in about a second instead of minutes (read by the nodes at start).
os.environ.setdefault("SPARKSIM_LOAD_SECONDS", "1")
ARTIFACTS = IMAGE_DIR.parent / "test-artifacts"


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


class RunningApp:
    """`uvicorn app.server:app` in a subprocess, exactly as a user starts it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SSH_"))}
        full_env.update(env)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.server:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--timeout-graceful-shutdown", "3"],
            cwd=IMAGE_DIR, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 20.0) -> "RunningApp":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"app did not answer /api/health within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=kw.pop("timeout", 30), **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


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


# Modules whose integration tests run the simulated Sparks' real engines (llama.cpp, torch), which
# `make test` may still be building in the background on a fresh machine.
_ENGINE_MODULES = {"test_lifecycle", "test_sparksim_vllm", "test_spark_embed", "test_embeddings_proxy",
                   "test_dashboard_models"}
_ENGINES_READY = ".spark-embed-installed"  # the last stamp `make sim-venv` writes


def pytest_collection_modifyitems(config, items):
    """Fast unit tests first, so a failure shows early; then real servers; last, what needs the
    engines (so their build overlaps everything else)."""
    for item in items:
        if item.get_closest_marker("integration") and item.module.__name__ in _ENGINE_MODULES:
            item.add_marker(pytest.mark.engines)
    items.sort(key=lambda item: (item.get_closest_marker("integration") is not None,
                                 item.get_closest_marker("engines") is not None))


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


@pytest.fixture(autouse=True)
def _wait_for_engines(request):
    if request.node.get_closest_marker("engines"):
        request.getfixturevalue("_engines_built")
