"""What a node is doing, from ONE shell script's output: one SSH round trip per node per refresh.

`STATUS_SCRIPT` runs every probe command on the node and prints each command's output in a
section:

    @@spark-control:<section>@@
    <stdout and stderr of the command>
    @@spark-control:rc=<exit status>@@

`parse_status(output)` splits the sections and parses each into frozen dataclasses. It never
raises: a missing tool (`nvidia-smi` not installed: rc 127), a failing one (docker without
permission: rc 1) or an unreadable line becomes a `Problem(section, message)` in
`NodeStatus.problems`, and the rest of the status is still returned.

GB10 has unified memory: `nvidia-smi` answers `[N/A]` for every memory field, so node memory
comes from /proc/meminfo (`NodeStatus.memory`) and GPU memory per process from
`--query-compute-apps` (`NodeStatus.gpu_processes`).

Pure functions only: no I/O here. The script contains no user values.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

# ---------------------------------------------------------------- the script

GPU_QUERY_FIELDS = ("index", "name", "uuid", "utilization.gpu", "temperature.gpu", "power.draw", "clocks.sm",
                    "clocks.max.sm", "pstate", "memory.used", "memory.total")
COMPUTE_APPS_FIELDS = ("pid", "process_name", "used_memory")

SECTION_COMMANDS: dict[str, str] = {
    # uname -n is the same kernel nodename as `hostname`, and POSIX: slim images lack `hostname`.
    "hostname": "uname -n",
    "gpu": f"nvidia-smi --query-gpu={','.join(GPU_QUERY_FIELDS)} --format=csv,noheader,nounits",
    "gpu_processes": f"nvidia-smi --query-compute-apps={','.join(COMPUTE_APPS_FIELDS)} --format=csv,noheader,nounits",
    "meminfo": "cat /proc/meminfo",
    "disk": 'df -P -B1 / "$HOME"',
    "docker": "docker ps -a --no-trunc --format '{{json .}}'",
    "loadavg": "cat /proc/loadavg",
    "uptime": "cat /proc/uptime",
    "nproc": "nproc",
}

# Per command, so one wedged nvidia-smi or docker daemon cannot stall the whole refresh.
COMMAND_TIMEOUT_S = 5

_SECTION_RE = re.compile(r"@@spark-control:([a-z_]+)@@")
_EXIT_RE = re.compile(r"@@spark-control:rc=([0-9]+)@@")

_SCRIPT_PRELUDE = """\
# spark-control status probe. Commands run in parallel (nvidia-smi and docker each take tens of
# ms on a Spark), then print one section each, in order; a failing command never aborts it.
_sc_dir=$(mktemp -d 2>/dev/null) || { _sc_dir=/tmp/.spark-control-probe.$$; mkdir -p "$_sc_dir"; }
_sc_run() {
    _sc_name=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout @TIMEOUT@ "$@" </dev/null >"$_sc_dir/$_sc_name" 2>&1
    else
        "$@" </dev/null >"$_sc_dir/$_sc_name" 2>&1
    fi
    echo "$?" >"$_sc_dir/$_sc_name.rc"
}
"""

_SCRIPT_EPILOGUE = """\
wait
for _sc_name in @SECTIONS@; do
    printf '@@spark-control:%s@@\\n' "$_sc_name"
    cat "$_sc_dir/$_sc_name" 2>/dev/null
    # The leading newline keeps the trailer on its own line after output without one.
    printf '\\n@@spark-control:rc=%s@@\\n' "$(cat "$_sc_dir/$_sc_name.rc" 2>/dev/null || echo 255)"
done
rm -rf "$_sc_dir"
"""


def build_status_script(command_timeout_s: int = COMMAND_TIMEOUT_S) -> str:
    """The POSIX sh status script; every command is killed after `command_timeout_s` seconds."""
    lines = [_SCRIPT_PRELUDE.replace("@TIMEOUT@", str(int(command_timeout_s)))]
    lines += [f"_sc_run {name} {command} &" for name, command in SECTION_COMMANDS.items()]
    lines.append(_SCRIPT_EPILOGUE.replace("@SECTIONS@", " ".join(SECTION_COMMANDS)))
    return "\n".join(lines)


STATUS_SCRIPT = build_status_script()

# For a login shell that is not POSIX (fish, csh): run the script under sh explicitly.
STATUS_COMMAND = "sh -c " + shlex.quote(STATUS_SCRIPT)

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


@dataclass(frozen=True)
class Problem(_Serializable):
    """Something the status could not report, and why, e.g. ("gpu", "nvidia-smi not found on the node")."""

    section: str
    message: str


@dataclass(frozen=True)
class SectionOutput:
    name: str
    output: str
    exit_status: int | None  # None: the trailer never arrived (output cut off)


@dataclass(frozen=True)
class NodeStatus(_Serializable):
    hostname: str | None = None
    cpu_count: int | None = None
    uptime_seconds: float | None = None
    load: LoadAverage | None = None
    memory: MemInfo | None = None
    gpus: tuple[GpuInfo, ...] = ()
    gpu_processes: tuple[GpuProcess, ...] = ()
    gpu_process_memory_mib: int = 0  # sum over gpu_processes; below memory.used_bytes (CPU-side allocations)
    disks: tuple[DiskUsage, ...] = ()
    containers: tuple[Container, ...] = ()
    problems: tuple[Problem, ...] = ()


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


# ---------------------------------------------------------------- /proc and df


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


# ---------------------------------------------------------------- the whole script


def split_sections(text: str) -> dict[str, SectionOutput]:
    """STATUS_SCRIPT output -> {section name: SectionOutput}. Text outside sections is ignored."""
    sections: dict[str, SectionOutput] = {}
    name: str | None = None
    body: list[str] = []

    def close(exit_status: int | None) -> None:
        # The script prints "\n" before the trailer: drop the blank line it leaves.
        lines = body[:-1] if body and body[-1] == "" else body
        sections[name] = SectionOutput(name, "\n".join(lines), exit_status)

    for line in text.split("\n"):
        line = line.rstrip("\r")
        exit_match = _EXIT_RE.fullmatch(line)
        section_match = _SECTION_RE.fullmatch(line)
        if exit_match and name is not None:
            close(int(exit_match.group(1)))
            name = None
        elif section_match:
            if name is not None:
                close(None)
            name, body = section_match.group(1), []
        elif name is not None:
            body.append(line)
    if name is not None:
        close(None)
    return sections


_TOOLS = {
    "hostname": "uname", "gpu": "nvidia-smi", "gpu_processes": "nvidia-smi", "meminfo": "/proc/meminfo",
    "disk": "df", "docker": "docker", "loadavg": "/proc/loadavg", "uptime": "/proc/uptime", "nproc": "nproc",
}


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return "(no output)"


def exit_status_problem(section: SectionOutput) -> str | None:
    """Why a section's command failed, in words a user can act on; None if it succeeded."""
    tool = _TOOLS.get(section.name, section.name)
    status = section.exit_status
    if status == 0:
        return None
    if status is None:
        return f"{tool}: output cut off before the command finished"
    if status == 127:
        return f"{tool} not found on the node"
    if status == 126:
        return f"{tool} is not executable on the node"
    if status == 124:
        return f"{tool} did not answer in time (killed by the probe's timeout)"
    detail = _first_line(section.output)
    hint = ""
    if section.name == "docker" and "permission denied" in detail.lower():
        hint = " (add the SSH user to the 'docker' group)"
    return f"{tool} failed (exit {status}): {detail}{hint}"


def _read_section(sections: dict[str, SectionOutput], name: str, parse: Callable[[str, list[str]], Any],
                  problems: list[Problem], default: Any) -> Any:
    """Parse one section, turning a failed command or unreadable output into Problems."""
    section = sections.get(name)
    if section is None:
        problems.append(Problem(name, "no output: the status script did not reach this section"))
        return default
    failure = exit_status_problem(section)
    if failure:
        problems.append(Problem(name, failure))
    line_problems: list[str] = []
    try:
        value = parse(section.output, line_problems)
    except ValueError as exc:
        value = default
        line_problems.append(str(exc))
    # After a failed command its error text is not data: the exit status already explains it.
    if not failure:
        problems.extend(Problem(name, f"{_TOOLS[name]}: {message}") for message in line_problems)
    return value


def parse_status(text: str) -> NodeStatus:
    """STATUS_SCRIPT output -> NodeStatus. Never raises; what is missing is in `problems`."""
    sections = split_sections(text)
    problems: list[Problem] = []
    if not sections:
        problems.append(Problem("script", f"no status sections in the node's output: {_first_line(text)}"))
        return NodeStatus(problems=tuple(problems))

    def read(name: str, parse: Callable[[str, list[str]], Any], default: Any = None) -> Any:
        return _read_section(sections, name, parse, problems, default)

    hostname = read("hostname", lambda text, _: parse_hostname(text))
    gpus = read("gpu", lambda text, p: parse_gpu_query(text, problems=p), [])
    gpu_processes = read("gpu_processes", lambda text, p: parse_compute_apps(text, problems=p), [])
    memory = read("meminfo", lambda text, _: parse_meminfo(text))
    disks = read("disk", lambda text, p: parse_df(text, problems=p), [])
    containers = read("docker", lambda text, p: parse_docker_ps(text, problems=p), [])
    load = read("loadavg", lambda text, _: parse_loadavg(text))
    uptime = read("uptime", lambda text, _: parse_uptime(text))
    cpu_count = read("nproc", lambda text, _: parse_nproc(text))
    return NodeStatus(
        hostname=hostname,
        cpu_count=cpu_count,
        uptime_seconds=uptime,
        load=load,
        memory=memory,
        gpus=tuple(gpus),
        gpu_processes=tuple(gpu_processes),
        gpu_process_memory_mib=sum(p.used_memory_mib or 0 for p in gpu_processes),
        disks=tuple(disks),
        containers=tuple(containers),
        problems=tuple(problems),
    )
