"""Runs one container's main process after `docker run` has returned.

Started by docker_cli as `python3 -m sparksim.container_supervisor <container dir>`
in its own session, so it outlives the CLI and the SSH session that ran it. It
plays the part of containerd-shim: execs the command (in its own process group,
so `docker stop` can signal the whole container), copies stdout/stderr into the
json-file `log`, records pid / exit code / times, applies the restart policy and
removes the container afterwards when it was started with --rm.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import images, state
from .dockerfmt import rfc3339nano


def container_env(container: state.Container) -> dict[str, str]:
    """Caller's pass-through env, the simulator's own variables, then the -e vars."""
    config = container.config
    env = dict(config.get("host_env", {}))
    env.update(
        {
            "SPARKSIM_NODE_ADDR": env.get("SPARKSIM_NODE_ADDR") or "127.0.0.1",
            "SPARKSIM_CONTAINER_ID": container.id,
            "SPARKSIM_CONTAINER_NAME": container.name,
            "SPARKSIM_CONTAINER_DIR": str(container.path),
            "SPARKSIM_ROOTFS": str(container.path / "rootfs"),
            "SPARKSIM_PUBLISH": ",".join(config.get("publish", [])),
            "HOSTNAME": container.id[:12],
        }
    )
    for pair in config.get("env", []):
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def working_dir(container: state.Container) -> Path:
    path = container.path / "rootfs" / container.config.get("workdir", "/").lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pump(stream, stream_name: str, log_fd: int, lock: threading.Lock) -> None:
    # docker's json-file driver: one JSON object per line of output, 16 KiB max each.
    for raw in iter(lambda: stream.readline(16384), b""):
        entry = {"log": raw.decode("utf-8", "replace"), "stream": stream_name, "time": rfc3339nano(time.time())}
        with lock:
            os.write(log_fd, (json.dumps(entry) + "\n").encode())


def _start_error(argv0: str, exc: OSError) -> tuple[str, int]:
    """docker's wording for an exec that fails, and the exit code `docker run` returns."""
    prefix = (
        "failed to create task for container: failed to create shim task: OCI runtime create failed: "
        "runc create failed: unable to start container process: error during container init: "
    )
    if exc.errno == errno.ENOENT:
        return f'{prefix}exec: "{argv0}": executable file not found in $PATH: unknown', 127
    return f'{prefix}exec: "{argv0}": permission denied: unknown', 126


def _record_start_failure(container: state.Container, message: str, code: int) -> None:
    container.write("finished_at", time.time())
    container.write("exit_code", code)
    container.write("error", message)  # last: `docker run` waits for it, then reads the code


def run_once(container: state.Container, child_holder: list) -> int | None:
    """Run the main process to completion; its exit code, or None if it could not start."""
    try:
        argv = images.local_argv(container.config)
    except Exception as exc:  # a broken image rule must fail the start, not hang `docker run`
        _record_start_failure(container, f"sparksim: cannot resolve the image's command: {exc!r}", 126)
        return None
    container.write("started_at", time.time())
    (container.path / "log_closed").unlink(missing_ok=True)  # this run's log is open again
    log_fd = os.open(container.path / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=working_dir(container),
            env=container_env(container),
            start_new_session=True,  # own process group: stop/kill signal the whole container
        )
    except OSError as exc:
        os.close(log_fd)
        _record_start_failure(container, *_start_error(argv[0], exc))
        return None
    child_holder[:] = [child]
    container.write("pid_start", state.proc_starttime(child.pid))
    container.write("pid", child.pid)
    lock = threading.Lock()
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, "stdout", log_fd, lock), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, "stderr", log_fd, lock), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    # Wait without reaping, so the group id cannot be reused before we signal it:
    # a container ends with its main process, so its stragglers go down too.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    _kill_group(child.pid)
    returncode = child.wait()
    _give_back_gpu_memory()
    for pump in pumps:
        pump.join(timeout=2)
    os.close(log_fd)
    container.write("log_closed", 1)  # `logs -f` ends on this, not on a status that may turn first
    code = 128 - returncode if returncode < 0 else returncode
    container.write("finished_at", time.time())
    container.write("exit_code", code)
    return code


def _give_back_gpu_memory() -> None:
    """A model server killed without a chance to release its memory (docker kill, rm -f): the node's
    meminfo is recomputed from the processes still alive before the exit is recorded."""
    try:
        from . import gpu_memory

        gpu_memory.rebalance()
    except Exception:  # noqa: BLE001 - bookkeeping must never keep a container from ending
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def should_restart(container: state.Container, exit_code: int, restarts: int) -> bool:
    policy, _, limit = container.config.get("restart", "no").partition(":")
    if container.read("stop_requested") is not None:
        return False
    if policy in ("always", "unless-stopped"):
        return True
    if policy == "on-failure":
        return exit_code != 0 and (not limit or restarts < int(limit))
    return False


def _remove_when_released(container: state.Container) -> None:
    """--rm: wait until a foreground `docker run` has read the exit code, then delete."""
    attached = container.path / "attached"
    if attached.exists():
        with open(attached) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
    with state.locked():
        container.remove()


def main(argv: list[str]) -> int:
    container = state.Container(Path(argv[0]))
    container.write("supervisor", f"{os.getpid()} {state.proc_starttime(os.getpid())}")
    child_holder: list[subprocess.Popen] = []

    def forward(signum, _frame):
        # Being told to stop means the container is being stopped: pass it on.
        container.write("stop_requested", signum)
        if child_holder and child_holder[0].poll() is None:
            try:
                os.killpg(child_holder[0].pid, signum)
            except OSError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    restarts, backoff = 0, 0.1
    while True:
        began = time.monotonic()
        code = run_once(container, child_holder)
        if code is None or not should_restart(container, code, restarts):
            break
        backoff = 0.1 if time.monotonic() - began > 10 else min(backoff * 2, 10.0)
        container.write("restarting", 1)
        time.sleep(backoff)
        if container.read("stop_requested") is not None:
            (container.path / "restarting").unlink(missing_ok=True)
            break
        restarts += 1
        container.write("restart_count", restarts)
        (container.path / "exit_code").unlink(missing_ok=True)
        (container.path / "restarting").unlink(missing_ok=True)
    if container.config.get("auto_remove"):
        _remove_when_released(container)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
