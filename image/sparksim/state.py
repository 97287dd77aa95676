"""The simulated docker engine's on-disk state, shared by docker_cli, the container
supervisor and nvidia_smi.

Layout under $SPARKSIM_STATE (default $HOME/.sparksim):

    lock                    flock'ed around every state change (create, remove, images)
    images.json             [{"repository", "tag", "id", "created", "size"}]
    logins.json             {"registry": {"username": ...}}   (never a password)
    unpullable              optional: image names that fail to pull, one per line
    pull_seconds            optional: how long a pull downloads, in seconds (else $SPARKSIM_PULL_DELAY, 0)
    run_seconds             optional: how long `docker run` takes before it creates the container (a busy daemon)
    nvidia_smi_fault        optional: if present, nvidia-smi fails like a driver that is gone
    volumes/<name>/_data    named volumes (-v name:/path)
    containers/<64-hex id>/
        config.json         what `docker run` asked for (written once)
        rootfs/             the container's "/" (its working directory lives inside)
        log                 docker json-file lines: {"log", "stream", "time"}
        supervisor          "<pid> <starttime>" of the process that runs the container
        supervisor.err      the supervisor's own stderr (tracebacks land here)
        pid, pid_start      main process pid and its /proc starttime (guards against pid reuse)
        started_at          epoch seconds of the latest start
        exit_code, finished_at   written when the main process ends
        error               why the process could not be started (exec failed)
        restart_count, restarting, stop_requested   restart-policy bookkeeping
        attached            flock'ed by a foreground `docker run` until it has read the exit code
        gpu_memory_mib      optional, written by the container's process: GPU MiB it holds
        gpu_util            optional, likewise: the GPU utilization % it causes (nvidia-smi)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator


def state_dir() -> Path:
    root = os.environ.get("SPARKSIM_STATE") or os.path.join(os.environ.get("HOME", "/tmp"), ".sparksim")
    path = Path(root)
    (path / "containers").mkdir(parents=True, exist_ok=True)
    return path


def node_addr() -> str:
    return os.environ.get("SPARKSIM_NODE_ADDR") or "127.0.0.1"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialize state changes across concurrent `docker` invocations."""
    with open(state_dir() / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


def proc_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int | None, starttime: int | None = None) -> bool:
    if not pid:
        return False
    current = proc_starttime(pid)
    return current is not None and (starttime is None or current == starttime)


class Container:
    """One container directory; every status question is answered from its files."""

    def __init__(self, path: Path):
        self.path = path
        self.id = path.name
        self.config: dict[str, Any] = read_json(path / "config.json", {})

    @property
    def name(self) -> str:
        return self.config.get("name", "")

    def read(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text().strip()
        except OSError:
            return None

    def write(self, name: str, value: object) -> None:
        try:
            write_atomic(self.path / name, f"{value}\n")
        except FileNotFoundError:
            pass  # the container was removed meanwhile (rm -f): nothing left to record

    def number(self, name: str) -> float | None:
        text = self.read(name)
        try:
            return float(text) if text else None
        except ValueError:
            return None

    def pid(self) -> int | None:
        value = self.number("pid")
        return int(value) if value else None

    def exit_code(self) -> int | None:
        value = self.number("exit_code")
        return None if value is None else int(value)

    def process_alive(self) -> bool:
        start = self.number("pid_start")
        return is_alive(self.pid(), int(start) if start is not None else None)

    def supervisor_alive(self) -> bool:
        parts = (self.read("supervisor") or "").split()
        return len(parts) == 2 and is_alive(int(parts[0]), int(parts[1]))

    def status(self) -> str:
        """docker's State.Status: created, running, restarting or exited."""
        if self.read("error") is not None:
            return "created"
        if self.read("restarting") is not None and self.supervisor_alive():
            return "restarting"
        if self.exit_code() is not None:
            return "exited"
        if self.process_alive():
            return "running"
        if self.supervisor_alive():
            # Either still starting, or about to record the exit code it just reaped.
            return "running" if self.pid() else "created"
        return "exited" if self.pid() else "created"

    def crashed(self) -> bool:
        """Started, then its process and its supervisor vanished without a word (the node
        crashed or every process of the user was killed)."""
        return (self.pid() is not None and self.exit_code() is None and self.read("error") is None
                and not self.process_alive() and not self.supervisor_alive())

    def effective_exit_code(self) -> int:
        code = self.exit_code()
        if code is None and self.crashed():
            return 255  # what dockerd records for containers it finds dead after a crash
        return code or 0

    def uses_gpu(self) -> bool:
        return bool(self.config.get("gpus"))

    def gpu_memory_mib(self) -> int:
        value = self.number("gpu_memory_mib")
        return int(value) if value else 0

    def remove(self) -> None:
        import shutil  # only here: it is slow to import and most commands never remove

        shutil.rmtree(self.path, ignore_errors=True)


def all_containers() -> list[Container]:
    """Newest first, like `docker ps`."""
    found = [Container(p) for p in (state_dir() / "containers").iterdir() if (p / "config.json").exists()]
    return sorted(found, key=lambda c: c.config.get("created", 0), reverse=True)


def find_container(ref: str) -> Container | None:
    """Resolve a name ("/name" too), a full id or a unique id prefix."""
    ref = ref[1:] if ref.startswith("/") else ref
    containers = all_containers()
    for container in containers:
        if ref in (container.id, container.name):
            return container
    by_prefix = [c for c in containers if ref and c.id.startswith(ref)]
    return by_prefix[0] if len(by_prefix) == 1 else None
