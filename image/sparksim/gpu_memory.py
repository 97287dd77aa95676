"""Unified memory on a simulated GB10: what running model servers hold, reflected in the node's
/proc/meminfo (the file $SPARKSIM_MEMINFO, bind-mounted over /proc/meminfo for the node).

Each holder (a simulated vLLM process) keeps one reservation file

    $SPARKSIM_STATE/gpu_reservations/<pid>.json   {"pid", "starttime", "kib", "tag"}

and the meminfo figures are always recomputed from the set of reservations whose process is
still alive: MemAvailable = base - sum, MemFree likewise. So a server killed with SIGKILL
leaks nothing for long: the next recomputation (any server starting or stopping, the container
supervisor when a container ends, every `docker` command) drops its reservation.

    $SPARKSIM_STATE/gpu_memory.json   {"base": {...}, "written": {...}}

remembers the figures without reservations ("base") and what was last written. If someone
else edited meminfo in between (a test simulating memory pressure), their figures become the
new base. The meminfo file cannot be replaced by a rename (that would break the bind mount),
so it is rewritten in place, under an flock on the file itself, keeping each line's width.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from . import state

KEYS = ("MemAvailable", "MemFree")


def meminfo_path() -> Path | None:
    value = os.environ.get("SPARKSIM_MEMINFO")
    return Path(value) if value else None


def parse_meminfo(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return values


def read_meminfo() -> dict[str, int]:
    """The node's meminfo in kB ($SPARKSIM_MEMINFO, else this machine's /proc/meminfo)."""
    path = meminfo_path() or Path("/proc/meminfo")
    return parse_meminfo(path.read_text())


def _set_value(text: str, key: str, kib: int) -> str:
    """Replace one figure, keeping the line's column layout ("MemFree:        1234 kB")."""
    pattern = re.compile(rf"^({re.escape(key)}:)(\s*)(\d+)(.*)$", re.MULTILINE)

    def repl(match: re.Match) -> str:
        width = len(match.group(2)) + len(match.group(3))
        number = str(max(0, kib))
        return match.group(1) + (number.rjust(width) if len(number) < width else " " + number) + match.group(4)

    return pattern.sub(repl, text, count=1)


def _reservations_dir(root: Path | None = None) -> Path:
    return (root or state.state_dir()) / "gpu_reservations"


def _state_file(root: Path | None = None) -> Path:
    return (root or state.state_dir()) / "gpu_memory.json"


def live_reservations(root: Path | None = None, prune: bool = True) -> list[dict]:
    found = []
    directory = _reservations_dir(root)
    if not directory.is_dir():
        return found
    for path in directory.glob("*.json"):
        record = state.read_json(path, None)
        alive = bool(record) and state.is_alive(record.get("pid"), record.get("starttime"))
        if alive:
            found.append(record)
        elif prune:
            path.unlink(missing_ok=True)
    return found


def rebalance(meminfo: Path | None = None, root: Path | None = None) -> dict[str, int] | None:
    """Recompute the node's meminfo from the live reservations. Returns the figures written,
    or None when there is no meminfo file of our own (or nothing to do). The paths default to
    $SPARKSIM_MEMINFO and $SPARKSIM_STATE (the node's own, inside a node)."""
    path = meminfo or meminfo_path()
    if path is None:
        return None
    reservations = live_reservations(root)
    status_path = _state_file(root)
    if not reservations and not status_path.exists():
        return None  # nothing held and nothing to give back: leave the file alone
    try:
        handle = open(path, "r+")
    except OSError:
        return None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read()
        current = parse_meminfo(text)
        saved = state.read_json(status_path, None)
        base = {}
        for key in KEYS:
            if key not in current:
                continue
            if saved and key in saved.get("base", {}):
                written = saved["written"].get(key)
                applied = saved["base"][key] - written if written is not None else 0
                # edited by someone else since our last write: their figure minus what we hold
                base[key] = saved["base"][key] if current[key] == written else current[key] + applied
            else:
                base[key] = current[key]
        held = sum(int(r.get("kib", 0)) for r in reservations)
        new = {key: max(0, base[key] - held) for key in base}
        for key, value in new.items():
            text = _set_value(text, key, value)
        handle.seek(0)
        handle.write(text)
        handle.truncate()
        handle.flush()
        if reservations:
            state.write_atomic(status_path, json.dumps({"base": base, "written": new}))
        else:
            status_path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return new


class Reservation:
    """The memory one process holds on this node. `hold(kib)` sets it, `release()` gives it back."""

    def __init__(self, tag: str):
        self.tag = tag
        self.kib = 0
        self.path = _reservations_dir() / f"{os.getpid()}.json"

    def hold(self, kib: int) -> None:
        self.kib = max(0, int(kib))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "starttime": state.proc_starttime(os.getpid()), "kib": self.kib,
                  "tag": self.tag}
        state.write_atomic(self.path, json.dumps(record))
        rebalance()
        _write_container_file("gpu_memory_mib", self.kib // 1024)

    def release(self) -> None:
        self.kib = 0
        self.path.unlink(missing_ok=True)
        rebalance()
        _write_container_file("gpu_memory_mib", 0)


def _write_container_file(name: str, value: object) -> None:
    """containers/<id>/<name>, read by sparksim's nvidia-smi (write-then-rename)."""
    directory = os.environ.get("SPARKSIM_CONTAINER_DIR")
    if not directory or not Path(directory).is_dir():
        return
    try:
        state.write_atomic(Path(directory) / name, f"{value}\n")
    except OSError:
        pass  # the container was removed meanwhile


def set_gpu_util(percent: int) -> None:
    _write_container_file("gpu_util", int(percent))
