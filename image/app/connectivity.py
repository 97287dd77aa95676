"""The connectivity log: is every node reachable, since when, and how often it was not.

A background task probes every node every few seconds (the full status probe, so the latest
status of each node is cached for free). Transitions (up -> down -> up) are kept in a bounded
history in CONNECTIVITY_LOG, a JSON file written atomically (temp file, fsync, rename), so a
crash mid-write leaves the previous version intact. A missing or unreadable file is never an
error for the user: the log starts empty and says why in `log_problem`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_PERIODIC_SAVE_S = 30.0  # between transitions, counters are saved at most this often


class ConnectivityLog:
    """In-memory state mirrored to a JSON file. Not thread-safe; used from the event loop."""

    def __init__(self, path: Path, max_events: int) -> None:
        self.path = path
        self.max_events = max_events
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.log_problem: str | None = None
        self._last_save = 0.0

    def load(self) -> None:
        remove_stale_temp_files(self.path)
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            self.nodes = dict(data["nodes"])
            self.events = list(data["events"])[-self.max_events:]
        except FileNotFoundError:
            return
        except OSError as exc:  # not a directory, no permission: the save will say so too
            self.log_problem = f"cannot read {self.path}: {exc.strerror or exc}"
            log.warning("connectivity log: %s", self.log_problem)
        except (ValueError, KeyError, TypeError) as exc:
            # Keep the damaged file for a human to look at, and start afresh.
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            try:
                self.path.rename(aside)
                self.log_problem = f"{self.path} was unreadable ({exc}); moved aside to {aside.name}"
            except OSError:
                self.log_problem = f"{self.path} was unreadable ({exc})"
            log.warning("connectivity log: %s", self.log_problem)

    def record(self, node: str, ok: bool, *, latency_ms: float | None, reason: str | None,
               now: float | None = None) -> bool:
        """Account one probe. Returns True when the node changed state (a transition)."""
        now = time.time() if now is None else now
        entry = self.nodes.get(node)
        state = "up" if ok else "down"
        if entry is None:
            entry = self.nodes[node] = {
                "state": state, "since": now, "first_seen": now, "last_check": now,
                "up_s": 0.0, "down_s": 0.0, "checks": 0, "failures": 0,
            }
            changed = True
        else:
            elapsed = max(0.0, now - entry["last_check"])
            entry["up_s" if entry["state"] == "up" else "down_s"] += elapsed
            changed = entry["state"] != state
            if changed:
                entry["state"], entry["since"] = state, now
        entry["last_check"] = now
        entry["checks"] += 1
        entry["failures"] += 0 if ok else 1
        entry["latency_ms"] = latency_ms
        entry["reason"] = None if ok else reason
        if changed:
            first = entry["checks"] == 1  # the first observation, not a recovery
            self.events.append({"ts": now, "node": node, "state": state, "reason": entry["reason"],
                                "first_seen": first})
            del self.events[:-self.max_events]
        return changed

    def summary(self, configured: list[str] | None = None) -> dict[str, Any]:
        """Every configured node, in order (state "unknown" until its first probe answers); nodes
        only in the file (removed from the configuration since) are left out."""
        nodes = {}
        for name in configured if configured is not None else list(self.nodes):
            e = self.nodes.get(name)
            if e is None:
                nodes[name] = {"state": "unknown", "since": None, "last_check": None, "latency_ms": None,
                               "reason": "not checked yet", "checks": 0, "failures": 0,
                               "uptime_ratio": None, "observed_s": 0.0}
                continue
            total = e["up_s"] + e["down_s"]
            nodes[name] = {
                "state": e["state"], "since": e["since"], "last_check": e["last_check"],
                "latency_ms": e.get("latency_ms"), "reason": e.get("reason"),
                "checks": e["checks"], "failures": e["failures"],
                "uptime_ratio": (e["up_s"] / total) if total > 0 else (1.0 if e["state"] == "up" else 0.0),
                "observed_s": total,
            }
        return {"nodes": nodes, "transitions": list(reversed(self.events)), "log_file": str(self.path),
                "log_problem": self.log_problem}

    def save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < _PERIODIC_SAVE_S:
            return
        payload = json.dumps({"version": _FORMAT_VERSION, "nodes": self.nodes, "events": self.events})
        try:
            write_atomically(self.path, payload)
            self._last_save = now
            if self.log_problem and self.log_problem.startswith(("cannot write", "cannot read")):
                self.log_problem = None
        except OSError as exc:
            self.log_problem = f"cannot write {self.path}: {exc.strerror or exc}"
            log.warning("connectivity log: %s", self.log_problem)


def remove_stale_temp_files(path: Path) -> None:
    """Temp files of writes that a kill -9 interrupted (the `except` below never ran). Called at
    start, when no write of this process can be in flight."""
    try:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    except OSError:
        pass  # an unreadable directory shows up as log_problem on the first save


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


ProbeResult = tuple[bool, float | None, str | None]  # ok, latency in ms, reason when down


class ConnectivityMonitor:
    """Calls `probe(node)` for every node every `interval_s` and records the outcome."""

    def __init__(self, log_: ConnectivityLog, node_names: list[str],
                 probe: Callable[[str], Awaitable[ProbeResult]], interval_s: float,
                 on_round: Callable[[], None] | None = None) -> None:
        self.log = log_
        self.on_round = on_round
        self.node_names = node_names
        self.probe = probe
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    def summary(self) -> dict[str, Any]:
        return {**self.log.summary(self.node_names), "interval_s": self.interval_s}

    async def probe_all(self) -> None:
        # Each node is recorded the moment its probe answers: a node that hangs until its
        # timeout must not hold back the news about the others.
        changed = False

        async def probe_one(name: str) -> None:
            nonlocal changed
            ok, latency_ms, reason = await self.probe(name)
            if self.log.record(name, ok, latency_ms=latency_ms, reason=reason):
                changed = True
                log.info("node %s is %s%s", name, "up" if ok else "down", f": {reason}" if reason else "")

        await asyncio.gather(*(probe_one(n) for n in self.node_names))
        self.log.save(force=changed)
        if self.on_round is not None:
            self.on_round()

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_all()
            except Exception:  # a bug in one round must not stop the monitor
                log.exception("connectivity probe round failed")
            await asyncio.sleep(max(0.1, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="connectivity-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.log.save(force=True)
