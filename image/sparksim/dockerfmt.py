"""How docker prints things: durations, sizes, timestamps, quoted commands, tables.

Each helper mirrors the Go code docker's CLI uses (go-units, strconv, text/tabwriter)
so parsers written against a real Spark also parse the simulator.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what docker shows for "never"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "5 seconds", "About a minute"..."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(timestamp: float) -> str:
    return human_duration(time.time() - timestamp) + " ago"


def human_size(size_bytes: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    size = float(size_bytes)
    unit = 0
    while size >= 1000 and unit < len(units) - 1:
        size /= 1000
        unit += 1
    return f"{size:.3g}{units[unit]}"


def rfc3339nano(timestamp: float | None) -> str:
    """Docker API timestamps: 2025-11-27T12:00:00.123456789Z (UTC)."""
    if not timestamp:
        return ZERO_TIME
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    nanos = int(round((timestamp % 1) * 1e9)) % 1_000_000_000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def go_time_string(timestamp: float) -> str:
    """Go's time.Time.String() in local time, used by `docker ps` CreatedAt."""
    moment = datetime.fromtimestamp(timestamp).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %z ") + (moment.tzname() or "UTC")


def ellipsis(text: str, max_len: int) -> str:
    """docker's stringutils.Ellipsis: cut to max_len runes, the last one being '…'."""
    if len(text) <= max_len:
        return text
    return text[: max_len - 1] + "…"


def go_quote(text: str) -> str:
    """Close enough to Go's strconv.Quote for command lines."""
    return json.dumps(text, ensure_ascii=False)


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """text/tabwriter as docker configures it: NewWriter(out, 10, 1, 3, ' ', 0).

    Every tab-terminated cell is padded to max(minwidth, widest cell + padding);
    the last cell of a line is printed as is.
    """
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for cells in rows:
        for index, cell in enumerate(cells[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    out = []
    for cells in rows:
        padded = [cell.ljust(max(minwidth, widths[i] + padding)) for i, cell in enumerate(cells[:-1])]
        out.append("".join(padded) + cells[-1])
    return "".join(line + "\n" for line in out)
