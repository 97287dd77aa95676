"""Parsers for the GPU and memory sections: `nvidia-smi --query-*` CSV and /proc/meminfo.

GB10 has unified memory: `nvidia-smi` answers `[N/A]` for every memory field, so node memory
comes from /proc/meminfo (`MemInfo`) and GPU memory per process from `--query-compute-apps`
(`GpuProcess`). Also owns `_Serializable`, the `to_dict` base of every status dataclass.

Pure functions only: no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

from app.status_script import COMPUTE_APPS_FIELDS, GPU_QUERY_FIELDS

# ---------------------------------------------------------------- data


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class GpuInfo(_Serializable):
    """One row of `nvidia-smi --query-gpu`. None = not reported (GB10 memory is `[N/A]`)."""

    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    utilization_percent: int | None = None
    temperature_c: int | None = None
    power_draw_w: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    pstate: str | None = None
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None


@dataclass(frozen=True)
class GpuProcess(_Serializable):
    """One row of `nvidia-smi --query-compute-apps`: a process holding GPU memory."""

    pid: int
    process_name: str | None = None
    used_memory_mib: int | None = None
    gpu_uuid: str | None = None


@dataclass(frozen=True)
class MemInfo(_Serializable):
    """System memory from /proc/meminfo, in bytes. On GB10 this is also the GPU's memory."""

    total_bytes: int
    available_bytes: int
    used_bytes: int  # total - available: tracks a loaded model's weights on GB10
    free_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    swap_used_bytes: int


# ---------------------------------------------------------------- nvidia-smi CSV


def _is_not_reported(cell: str) -> bool:
    # [N/A], [Not Supported], [Unknown Error], [GPU requires reset] ... all mean "no value".
    return cell == "" or cell == "N/A" or cell.startswith("[")


_NUMBER_RE = re.compile(r"([-+]?[0-9]+(?:\.[0-9]+)?)(?:\s*(?:%|[A-Za-z]+))?")


def _number(cell: str) -> float | None:
    """A numeric cell, with or without its unit (`11.17 W` from --format=csv without nounits)."""
    if _is_not_reported(cell):
        return None
    match = _NUMBER_RE.fullmatch(cell)
    if not match:
        raise ValueError(f"{cell!r} is not a number")
    return float(match.group(1))


def _int_cell(cell: str) -> int | None:
    value = _number(cell)
    return None if value is None else round(value)


def _text_cell(cell: str) -> str | None:
    return None if _is_not_reported(cell) else cell


# nvidia-smi query field (or its header spelling) -> (dataclass attribute, converter)
_GPU_COLUMNS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "index": ("index", _int_cell),
    "name": ("name", _text_cell),
    "uuid": ("uuid", _text_cell),
    "utilization.gpu": ("utilization_percent", _int_cell),
    "temperature.gpu": ("temperature_c", _int_cell),
    "power.draw": ("power_draw_w", _number),
    "clocks.sm": ("sm_clock_mhz", _int_cell),
    "clocks.current.sm": ("sm_clock_mhz", _int_cell),
    "clocks.max.sm": ("sm_clock_max_mhz", _int_cell),
    "pstate": ("pstate", _text_cell),
    "memory.used": ("memory_used_mib", _int_cell),
    "memory.total": ("memory_total_mib", _int_cell),
}

_COMPUTE_APP_COLUMNS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "pid": ("pid", _int_cell),
    "process_name": ("process_name", _text_cell),
    "name": ("process_name", _text_cell),
    "used_memory": ("used_memory_mib", _int_cell),
    "used_gpu_memory": ("used_memory_mib", _int_cell),
    "gpu_uuid": ("gpu_uuid", _text_cell),
}

_HEADER_CELL_RE = re.compile(r"([a-z_][a-z0-9_.]*)(?:\s*\[[^\]]*\])?")


def _header_fields(line: str, known: dict[str, Any]) -> tuple[str, ...] | None:
    """The field names if `line` is a --format=csv header (`memory.total [MiB], ...`), else None."""
    names = []
    for cell in line.split(","):
        match = _HEADER_CELL_RE.fullmatch(cell.strip())
        if not match:
            return None
        names.append(match.group(1))
    # A stray lowercase word ("garbage") is not a header: at least one name must be a field we know.
    return tuple(names) if any(name in known for name in names) else None


def _split_row(line: str, width: int, free_text_column: int | None) -> list[str]:
    # nvidia-smi joins cells with ", "; a process name may contain one, so extra cells are
    # folded back into the free-text column.
    cells = line.split(", ")
    extra = len(cells) - width
    if extra > 0 and free_text_column is not None:
        end = free_text_column + extra + 1
        cells[free_text_column:end] = [", ".join(cells[free_text_column:end])]
    if len(cells) != width:
        raise ValueError(f"expected {width} comma-separated values, got {len(cells)}")
    return [cell.strip() for cell in cells]


def _parse_query_rows(text: str, fields: tuple[str, ...], columns: dict[str, tuple[str, Callable[[str], Any]]],
                      free_text_field: str, problems: list[str]) -> list[dict[str, Any]]:
    """Rows of an `nvidia-smi --query-*` CSV as {attribute: value}; unknown fields are ignored."""
    rows = []
    lines = [line for line in text.splitlines() if line.strip()]
    # Only the first line can be a header (a one-column row like "python" would look like one).
    header = _header_fields(lines[0], columns) if lines else None
    if header is not None:
        fields, lines = header, lines[1:]  # --format=csv with header: trust it over the caller
    for line in lines:
        free_text = fields.index(free_text_field) if free_text_field in fields else None
        try:
            cells = _split_row(line, len(fields), free_text)
            row = {columns[f][0]: columns[f][1](cell) for f, cell in zip(fields, cells) if f in columns}
        except ValueError as exc:
            problems.append(f"unreadable line {line[:200]!r}: {exc}")
            continue
        rows.append(row)
    return rows


def parse_gpu_query(text: str, *, fields: tuple[str, ...] = GPU_QUERY_FIELDS,
                    problems: list[str] | None = None) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]` -> one GpuInfo per GPU.

    A header line, if present, overrides `fields`. Unreadable lines are skipped and described
    in `problems` (when given).
    """
    rows = _parse_query_rows(text, fields, _GPU_COLUMNS, "name", problems if problems is not None else [])
    return [GpuInfo(**row) for row in rows]


def parse_compute_apps(text: str, *, fields: tuple[str, ...] = COMPUTE_APPS_FIELDS,
                       problems: list[str] | None = None) -> list[GpuProcess]:
    """`nvidia-smi --query-compute-apps=<fields> --format=csv,noheader,nounits` -> GpuProcess list."""
    problems = problems if problems is not None else []
    processes = []
    for row in _parse_query_rows(text, fields, _COMPUTE_APP_COLUMNS, "process_name", problems):
        if row.get("pid") is None:
            problems.append(f"process row without a pid: {row}")
            continue
        processes.append(GpuProcess(**row))
    return processes


# ---------------------------------------------------------------- /proc/meminfo


def _meminfo_bytes(text: str) -> dict[str, int]:
    """`Key:  123 kB` lines as {Key: bytes}; the kernel's "kB" is KiB."""
    values = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        multiplier = 1024 if parts[1:] == ["kB"] else 1
        values[key.strip()] = int(parts[0]) * multiplier
    return values


def parse_meminfo(text: str) -> MemInfo:
    """/proc/meminfo -> MemInfo. Raises ValueError without MemTotal and MemAvailable."""
    values = _meminfo_bytes(text)
    missing = [key for key in ("MemTotal", "MemAvailable") if key not in values]
    if missing:
        raise ValueError(f"no {' or '.join(missing)} line in /proc/meminfo output")
    total, available = values["MemTotal"], values["MemAvailable"]
    swap_total, swap_free = values.get("SwapTotal", 0), values.get("SwapFree", 0)
    return MemInfo(
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        free_bytes=values.get("MemFree", 0),
        swap_total_bytes=swap_total,
        swap_free_bytes=swap_free,
        swap_used_bytes=swap_total - swap_free,
    )

