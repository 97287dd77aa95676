"""Parsers for the host sections: `df`, `docker ps`, /proc/loadavg, /proc/uptime, `nproc`, `uname -n`.

Each parser turns one section's text into frozen dataclasses (`DiskUsage`, `Container`,
`LoadAverage`) or a plain value; unreadable lines go to `problems` or raise ValueError.

Pure functions only: no I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.gpu_parsers import _Serializable


@dataclass(frozen=True)
class DiskUsage(_Serializable):
    """One filesystem from `df -P -B1`."""

    filesystem: str
    mountpoint: str
    size_bytes: int
    used_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class Container(_Serializable):
    """One container from `docker ps -a --format '{{json .}}'` (docker's strings, untouched)."""

    id: str
    name: str
    image: str
    state: str  # running, exited, created, restarting, paused, dead
    status: str  # human text: "Up 2 hours", "Exited (137) 3 days ago"
    ports: str
    created_at: str
    running_for: str = ""
    command: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadAverage(_Serializable):
    one_minute: float
    five_minutes: float
    fifteen_minutes: float
    runnable_tasks: int
    total_tasks: int


# ---------------------------------------------------------------- df and /proc


def parse_df(text: str, *, problems: list[str] | None = None) -> list[DiskUsage]:
    """`df -P -B1 <paths>` -> one DiskUsage per mountpoint (/ and $HOME are often the same)."""
    problems = problems if problems is not None else []
    disks: dict[str, DiskUsage] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("Filesystem"):
            continue
        # maxsplit keeps a mountpoint with spaces whole.
        parts = line.split(None, 5)
        if len(parts) != 6 or not all(p.isdigit() for p in parts[1:4]):
            problems.append(f"unreadable line {line[:200]!r}")
            continue
        filesystem, size, used, available, _capacity, mountpoint = parts
        disks.setdefault(mountpoint, DiskUsage(filesystem, mountpoint, int(size), int(used), int(available)))
    return list(disks.values())


def parse_loadavg(text: str) -> LoadAverage:
    """/proc/loadavg (`0.52 0.61 0.58 2/1432 114687`) -> LoadAverage. Raises ValueError."""
    parts = text.split()
    if len(parts) < 4 or "/" not in parts[3]:
        raise ValueError(f"unexpected /proc/loadavg content {text[:100]!r}")
    runnable, _, total = parts[3].partition("/")
    return LoadAverage(float(parts[0]), float(parts[1]), float(parts[2]), int(runnable), int(total))


def parse_uptime(text: str) -> float:
    """/proc/uptime (`183245.67 2187654.32`) -> seconds since boot. Raises ValueError."""
    parts = text.split()
    if not parts:
        raise ValueError("empty /proc/uptime output")
    return float(parts[0])


def parse_nproc(text: str) -> int:
    """`nproc` -> number of usable CPUs. Raises ValueError."""
    return int(text.strip())


def parse_hostname(text: str) -> str:
    """`uname -n` -> the node's name. Raises ValueError on empty output."""
    name = text.strip()
    if not name or "\n" in name:
        raise ValueError(f"unexpected hostname output {text[:100]!r}")
    return name


# ---------------------------------------------------------------- docker


def _parse_labels(raw: str) -> dict[str, str]:
    """docker's `k=v,k2=v2` label string. A piece without `=` belongs to the previous value."""
    labels: dict[str, str] = {}
    last_key = None
    for piece in raw.split(",") if raw else []:
        key, sep, value = piece.partition("=")
        if sep:
            labels[key] = value
            last_key = key
        elif last_key is not None:
            labels[last_key] += "," + piece
    return labels


def _state_from_status(status: str) -> str:
    # Old engines have no State key; derive it from the human Status text.
    lowered = status.lower()
    for prefix, state in (("up", "running"), ("exited", "exited"), ("created", "created"),
                          ("restarting", "restarting"), ("dead", "dead"), ("removal", "removing")):
        if lowered.startswith(prefix):
            return "paused" if state == "running" and "(paused)" in lowered else state
    return "unknown"


def _container(entry: dict[str, Any]) -> Container:
    status = str(entry.get("Status", ""))
    command = str(entry.get("Command", ""))
    # --no-trunc wraps the command in literal double quotes.
    if len(command) >= 2 and command[0] == command[-1] == '"':
        command = command[1:-1]
    return Container(
        id=str(entry["ID"]),
        name=str(entry.get("Names", "")).split(",")[0],
        image=str(entry.get("Image", "")),
        state=str(entry.get("State") or _state_from_status(status)),
        status=status,
        ports=str(entry.get("Ports", "")),
        created_at=str(entry.get("CreatedAt", "")),
        running_for=str(entry.get("RunningFor", "")),
        command=command,
        labels=_parse_labels(str(entry.get("Labels", ""))),
    )


def parse_docker_ps(text: str, *, problems: list[str] | None = None) -> list[Container]:
    """`docker ps -a --no-trunc --format '{{json .}}'` -> Container list; bad lines go to `problems`."""
    problems = problems if problems is not None else []
    containers = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"not a JSON line: {line[:200]!r}")
            continue
        if not isinstance(entry, dict) or not entry.get("ID"):
            problems.append(f"JSON line without an ID: {line[:200]!r}")
            continue
        containers.append(_container(entry))
    return containers
