"""What a `docker run` command line asks for: docker's run flags, and the container
config they turn into (written once to containers/<id>/config.json)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from . import state
from .cliflags import UsageError, flags


class DaemonError(Exception):
    """An error docker run reports as "docker: Error response from daemon: ...", exit 125."""


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

_ADJECTIVES = ("brave", "eager", "jolly", "keen", "quirky", "serene", "vibrant", "zealous")
_SCIENTISTS = ("curie", "hopper", "lovelace", "noether", "shannon", "turing", "wozniak", "yalow")


def _random_name() -> str:
    """docker's "adjective_scientist" names, from a short list."""
    first, second = os.urandom(2)
    return f"{_ADJECTIVES[first % len(_ADJECTIVES)]}_{_SCIENTISTS[second % len(_SCIENTISTS)]}"


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
            name = source or os.urandom(32).hex()
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
        # A bare container port gets the same host port (docker would pick a free one).
        host_ip, host_port, container_port = (["0.0.0.0", *parts] if len(parts) == 2 else
                                              parts if len(parts) == 3 else ["0.0.0.0", parts[0], parts[0]])
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
        raise UsageError("Conflicting options: --restart and --rm.")
    publish = _publish(opts["publish"])
    if publish and network == "host":
        print("WARNING: Published ports are discarded when using host network mode", file=sys.stderr)
        publish = []
    host_env = {k: v for k, v in caller_env.items() if k in PASSTHROUGH_ENV or k.startswith("SPARKSIM_")}
    host_env.setdefault("SPARKSIM_NODE_ADDR", state.node_addr())
    return {
        "name": opts["name"] or _random_name(),
        "image": image,
        "image_id": "",  # known once the image is there (run pulls after validating flags)
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
