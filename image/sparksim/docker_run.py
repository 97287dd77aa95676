"""`docker run`: create the container directory, start its supervisor, then either
print the id (-d) or stay attached and relay its output. Also the daemon's duty of
noticing containers that died with the node."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import images, logfile, state
from .cliflags import UsageError, parse
from .run_config import RUN_FLAGS, DaemonError, build_config

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def ensure_image(image: str, pull: str | None) -> None:
    """Pull implicitly when missing, printing docker's lines on stderr."""
    if images.find_image(image) and pull != "always":
        return
    if pull == "never":
        raise DaemonError(f"No such image: {images.parse_ref(image)}")
    if not images.find_image(image):
        print(f"Unable to find image '{images.parse_ref(image)}' locally", file=sys.stderr)
    error = images.pull_error(image)
    if error:
        raise DaemonError(error)
    for line in images.pull_progress(image, explicit_tag=True, seconds=images.pull_seconds()):
        print(line, file=sys.stderr, flush=True)
    images.add_image(image)
    print("\n".join(images.pull_done_lines(image)), file=sys.stderr)


def _link_mounts(container_dir: Path, mounts: list[dict]) -> None:
    """Make each mount visible inside rootfs as a symlink (best effort: no real mounts here)."""
    for mount in mounts:
        try:
            Path(mount["Source"]).mkdir(parents=True, exist_ok=True)
            link = container_dir / "rootfs" / mount["Destination"].lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(mount["Source"])
        except OSError:
            pass


def create(config: dict) -> state.Container:
    """Claim the name and create the directory, atomically w.r.t. other `docker run`s."""
    if not _NAME_RE.match(config["name"]):
        raise DaemonError(
            f"Invalid container name ({config['name']}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    with state.locked():
        clash = next((c for c in state.all_containers() if c.name == config["name"]), None)
        if clash:
            raise DaemonError(
                f'Conflict. The container name "/{config["name"]}" is already in use by container '
                f'"{clash.id}". You have to remove (or rename) that container to be able to reuse that name'
            )
        container_dir = state.state_dir() / "containers" / os.urandom(32).hex()
        (container_dir / "rootfs").mkdir(parents=True)
        state.write_atomic(container_dir / "config.json", json.dumps(config, indent=1))
    _link_mounts(container_dir, config["mounts"])
    return state.Container(container_dir)


def start(container: state.Container) -> str | None:
    """Spawn the supervisor in its own session and wait until the process runs.
    Returns docker's error message if it could not be started."""
    env = dict(container.config["host_env"])
    # The supervisor must import sparksim whatever the caller's PYTHONPATH was.
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    with open(container.path / "supervisor.err", "ab") as err:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "sparksim.container_supervisor", str(container.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env=env, cwd=container.path, start_new_session=True,
        )
    deadline = time.monotonic() + 60  # a busy machine (the test suite's two workers) can be slow to spawn it
    while time.monotonic() < deadline:
        if container.read("error") is not None:
            return container.read("error")
        if container.pid():  # (an exec failure writes exit_code, then error, and never a pid)
            return None
        if supervisor.poll() is not None and container.read("error") is None:
            return f"sparksim: the container supervisor died: {container.read('supervisor.err')}"
        time.sleep(0.01)
    return "container did not start within 60 s (see supervisor.err)"


def recover_after_crash() -> None:
    """What dockerd does when it comes back after a crash: containers found dead get exit
    code 255, and those with --restart always/unless-stopped are started again. There is
    no daemon here, so every `docker` invocation does it first. Memory held by model servers that
    died with the node is given back as well (sparksim/gpu_memory.py)."""
    from . import gpu_memory

    try:
        gpu_memory.rebalance()
    except OSError:
        pass
    with state.locked():
        for container in state.all_containers():
            if not container.crashed():
                continue
            container.write("finished_at", time.time())
            container.write("exit_code", 255)
            policy = container.config.get("restart", "no")
            if policy in ("always", "unless-stopped") and container.read("stop_requested") is None:
                for stale in ("exit_code", "pid", "pid_start"):
                    (container.path / stale).unlink(missing_ok=True)
                start(container)


def attach(container: state.Container) -> int:
    """Foreground run: relay output until the container exits; forward SIGINT/SIGTERM."""

    def forward(signum, _frame):
        pid = container.pid()
        if pid and container.process_alive():
            os.killpg(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    logfile.follow(container, 0, False, lambda: container.exit_code() is None and not container.crashed())
    return container.effective_exit_code()


def run(argv: list[str], caller_env: dict) -> int:
    opts, rest = parse(RUN_FLAGS, argv, interspersed=False)
    if not rest:
        raise UsageError('"docker run" requires at least 1 argument.')
    image, cmd = rest[0], rest[1:]
    slow = state.state_dir() / "run_seconds"  # a test makes the daemon slow to create the container
    if slow.exists():
        time.sleep(float(slow.read_text().strip() or 0))
    config = build_config(opts, image, cmd, caller_env)
    ensure_image(image, opts["pull"])
    config["image_id"] = images.find_image(image)["id"]
    container = create(config)
    attached = None
    if not opts["detach"]:
        # Held until we have read the exit code, so a --rm supervisor waits for us.
        attached = open(container.path / "attached", "w")
        fcntl.flock(attached, fcntl.LOCK_SH)
    error = start(container)
    if error:
        print(f"docker: Error response from daemon: {error}.", file=sys.stderr)
        return container.exit_code() or 125
    if opts["detach"]:
        print(container.id)
        return 0
    code = attach(container)
    attached.close()
    return code
