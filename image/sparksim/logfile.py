"""Reading a container's json-file log: `docker logs`, `logs -f` and foreground `docker run`."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

from . import state


def read_entries(container: state.Container, offset: int = 0) -> tuple[list[dict], int]:
    """Complete entries after byte `offset`, and the offset just past the last one read."""
    try:
        with open(container.path / "log", "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    entries = []
    for line in complete.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries, offset + len(complete)


def print_entries(entries: list[dict], timestamps: bool = False) -> None:
    """Each entry goes back to the stream it came from, as `docker logs` does."""
    for entry in entries:
        out = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
        out.write((entry["time"] + " " if timestamps else "") + entry["log"])
    sys.stdout.flush()
    sys.stderr.flush()


def follow(container: state.Container, offset: int, timestamps: bool, running: Callable[[], bool]) -> None:
    """Print entries as they arrive until `running()` turns false and the log is drained."""
    while True:
        still_running = running()
        if not still_running:
            # The status can turn (`docker stop` recording the exit itself) before the supervisor
            # has written the last lines it pumped: real docker ends the stream when the log
            # closes, so wait for that (briefly; a supervisor that is gone writes nothing more).
            deadline = time.monotonic() + 2
            while (container.read("log_closed") is None and container.supervisor_alive()
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        entries, offset = read_entries(container, offset)
        print_entries(entries, timestamps)
        if not still_running:
            return
        if not entries:
            time.sleep(0.05)
