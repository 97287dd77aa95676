"""`docker run`: parse docker's flags, create the container directory, start its
supervisor, then either print the id (-d) or stay attached and relay its output."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import images, logfile, state
from .cliflags import UsageError, flags, parse

RUN_FLAGS = flags(
    ("-d --detach", "detach"), ("--rm", "rm"), ("--privileged", "privileged"),
    ("-i --interactive", "interactive"), ("-t --tty", "tty"), ("--init", "init"),
    ("-P --publish-all", "publish_all"), ("--read-only", "read_only"), ("--sig-proxy", "sig_proxy"),
    ("--no-healthcheck", "no_healthcheck"), ("-q --quiet", "quiet"),
    ("--name", "name", "value"), ("--gpus", "gpus", "value"), ("--ipc", "ipc", "value"),
    ("--network --net", "network", "value"), ("--shm-size", "shm_size", "value"),
    ("--restart", "restart", "value"), ("--entrypoint", "entrypoint", "value"),
    ("-w --workdir", "workdir", "value"), ("--runtime", "runtime", "value"),
    ("-h --hostname", "hostname", "value"), ("-u --user", "user", "value"),
    ("-m --memory", "memory", "value"), ("--memory-swap", "memory_swap", "value"),
    ("--cpus", "cpus", "value"), ("--cpuset-cpus", "cpuset_cpus", "value"), ("--pull", "pull", "value"),
    ("--platform", "platform", "value"), ("--pid", "pid", "value"), ("--uts", "uts", "value"),
    ("--stop-signal", "stop_signal", "value"), ("--stop-timeout", "stop_timeout", "value"),
    ("--log-driver", "log_driver", "value"), ("--cidfile", "cidfile", "value"),
    ("--health-cmd", "health_cmd", "value"), ("--health-interval", "health_interval", "value"),
    ("--health-timeout", "health_timeout", "value"), ("--health-retries", "health_retries", "value"),
    ("--health-start-period", "health_start_period", "value"), ("--userns", "userns", "value"),
    ("-e --env", "env", "list"), ("--env-file", "env_file", "list"), ("-v --volume", "volume", "list"),
    ("--mount", "mount", "list"), ("-p --publish", "publish", "list"), ("--ulimit", "ulimit", "list"),
    ("-l --label", "label", "list"), ("--device", "device", "list"), ("--cap-add", "cap_add", "list"),
    ("--cap-drop", "cap_drop", "list"), ("--security-opt", "security_opt", "list"),
    ("--add-host", "add_host", "list"), ("--tmpfs", "tmpfs", "list"), ("--log-opt", "log_opt", "list"),
    ("--dns", "dns", "list"), ("--group-add", "group_add", "list"), ("--sysctl", "sysctl", "list"),
    ("--expose", "expose", "list"),
)

KNOWN_RUNTIMES = ("runc", "nvidia", "io.containerd.runc.v2")
PASSTHROUGH_ENV = ("PATH", "HOME", "PYTHONPATH")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_ADJECTIVES = ("brave", "eager", "jolly", "keen", "quirky", "serene", "vibrant", "zealous")
_SCIENTISTS = ("curie", "hopper", "lovelace", "noether", "shannon", "turing", "wozniak", "yalow")


class DaemonError(Exception):
    """An error docker run reports as "docker: Error response from daemon: ...", exit 125."""


def _env_list(opts: dict, caller_env: dict) -> list[str]:
    """-e K=V as given; -e K copies K from the caller (dropped if unset), like docker."""
    entries = list(opts["env"])
    for env_file in opts["env_file"]:
        lines = Path(env_file).read_text().splitlines()
        entries += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    result = []
    for entry in entries:
        if "=" in entry:
            result.append(entry)
        elif entry in caller_env:
            result.append(f"{entry}={caller_env[entry]}")
    return result


def _bytes(text: str) -> int:
    """docker's RAMInBytes: 16g, 512m, 64k, 1024 (binary units)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", text.strip().lower())
    if not match:
        raise UsageError(f'invalid argument "{text}" for "--shm-size" flag: invalid size: \'{text}\'')
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def _ulimit(text: str) -> dict:
    name, _, limits = text.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        return {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    except ValueError as exc:
        raise UsageError(f'invalid argument "{text}" for "--ulimit" flag: invalid ulimit argument: {text}') from exc


def _mounts(volumes: list[str]) -> list[dict]:
    mounts = []
    for spec in volumes:
        parts = spec.split(":")
        source, destination = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        mode = parts[2] if len(parts) > 2 else ""
        if source.startswith(("/", ".", "~")):
            path = str(Path(os.path.expanduser(source)).resolve())
            mounts.append({"Type": "bind", "Source": path, "Destination": destination, "Mode": mode,
                           "RW": "ro" not in mode.split(","), "Propagation": "rprivate"})
        else:
            name = source or secrets.token_hex(32)
            path = str(state.state_dir() / "volumes" / name / "_data")
            mounts.append({"Type": "volume", "Name": name, "Source": path, "Destination": destination,
                           "Driver": "local", "Mode": mode or "z", "RW": "ro" not in mode.split(","),
                           "Propagation": ""})
    return mounts


def _publish(specs: list[str]) -> list[str]:
    """-p [ip:]host:container[/proto] -> "ip:host:container/proto"."""
    published = []
    for spec in specs:
        spec, _, proto = spec.partition("/")
        parts = spec.rsplit(":", 2)
        host_ip, host_port, container_port = (["0.0.0.0", *parts] if len(parts) == 2 else
                                              parts if len(parts) == 3 else ["0.0.0.0", "", parts[0]])
        published.append(f"{host_ip or '0.0.0.0'}:{host_port}:{container_port}/{proto or 'tcp'}")
    return published


def build_config(opts: dict, image: str, cmd: list[str], caller_env: dict) -> dict:
    network = opts["network"] or "bridge"
    if network not in ("host", "bridge", "none", "default"):
        raise DaemonError(f"network {network} not found")
    runtime = opts["runtime"] or "runc"
    if runtime not in KNOWN_RUNTIMES:
        raise DaemonError(f"unknown or invalid runtime name: {runtime}")
    restart = opts["restart"] or "no"
    if restart.partition(":")[0] not in ("no", "always", "unless-stopped", "on-failure"):
        raise DaemonError(f"invalid restart policy '{restart}'")
    if opts["rm"] and restart != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    publish = _publish(opts["publish"])
    if publish and network == "host":
        print("WARNING: Published ports are discarded when using host network mode", file=sys.stderr)
        publish = []
    host_env = {k: v for k, v in caller_env.items() if k in PASSTHROUGH_ENV or k.startswith("SPARKSIM_")}
    host_env.setdefault("SPARKSIM_NODE_ADDR", state.node_addr())
    return {
        "name": opts["name"] or f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SCIENTISTS)}",
        "image": image,
        "image_id": images.find_image(image)["id"],
        "cmd": cmd,
        "entrypoint": [opts["entrypoint"]] if opts["entrypoint"] else None,
        "env": _env_list(opts, caller_env),
        "host_env": host_env,
        "labels": dict((label.partition("=")[0], label.partition("=")[2]) for label in opts["label"]),
        "gpus": opts["gpus"],
        "ipc": opts["ipc"] or "private",
        "network": network,
        "shm_size": _bytes(opts["shm_size"]) if opts["shm_size"] else 67108864,
        "ulimits": [_ulimit(u) for u in opts["ulimit"]],
        "mounts": _mounts(opts["volume"]),
        "publish": publish,
        "restart": restart,
        "workdir": opts["workdir"] or "",
        "runtime": runtime,
        "privileged": opts["privileged"],
        "auto_remove": opts["rm"],
        "hostname": opts["hostname"] or "",
        "user": opts["user"] or "",
        "created": time.time(),
    }


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
    for line in images.pull_lines(image, explicit_tag=True):
        print(line, file=sys.stderr)
    images.add_image(image)


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
        container_dir = state.state_dir() / "containers" / secrets.token_hex(32)
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
        subprocess.Popen(
            [sys.executable, "-m", "sparksim.container_supervisor", str(container.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env=env, cwd=container.path, start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if container.read("error") is not None:
            return container.read("error")
        if container.pid() or container.exit_code() is not None:
            return None
        time.sleep(0.01)
    return "container did not start within 15 s (see supervisor.err)"


def attach(container: state.Container) -> int:
    """Foreground run: relay output until the container exits; forward SIGINT/SIGTERM."""

    def forward(signum, _frame):
        pid = container.pid()
        if pid and container.process_alive():
            os.killpg(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    logfile.follow(container, 0, False, lambda: container.exit_code() is None)
    return container.effective_exit_code()


def run(argv: list[str], caller_env: dict) -> int:
    opts, rest = parse(RUN_FLAGS, argv, interspersed=False)
    if not rest:
        raise UsageError('"docker run" requires at least 1 argument.')
    image, cmd = rest[0], rest[1:]
    ensure_image(image, opts["pull"])
    container = create(build_config(opts, image, cmd, caller_env))
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
