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

This module is the facade: `parse_status`, `NodeStatus` and `Problem` live here; the script and
its section framing are app/status_script.py, the section parsers app/gpu_parsers.py and
app/host_parsers.py. Every public name of those is re-exported, so `from app.probes import ...`
and `probes.X` keep working.

Pure functions only: no I/O here. The script contains no user values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from app.gpu_parsers import (
    GpuInfo,
    GpuProcess,
    MemInfo,
    _Serializable,
    parse_compute_apps,
    parse_gpu_query,
    parse_meminfo,
)
from app.host_parsers import (
    Container,
    DiskUsage,
    LoadAverage,
    parse_df,
    parse_docker_ps,
    parse_hostname,
    parse_loadavg,
    parse_nproc,
    parse_uptime,
)
from app.status_script import (
    COMMAND_TIMEOUT_S,
    COMPUTE_APPS_FIELDS,
    GPU_QUERY_FIELDS,
    SECTION_COMMANDS,
    STATUS_COMMAND,
    STATUS_SCRIPT,
    SectionOutput,
    _first_line,
    _TOOLS,
    build_status_script,
    exit_status_problem,
    split_sections,
)

__all__ = [
    "COMMAND_TIMEOUT_S", "COMPUTE_APPS_FIELDS", "GPU_QUERY_FIELDS", "SECTION_COMMANDS", "STATUS_COMMAND",
    "STATUS_SCRIPT", "Container", "DiskUsage", "GpuInfo", "GpuProcess", "LoadAverage", "MemInfo", "NodeStatus",
    "Problem", "SectionOutput", "build_status_script", "exit_status_problem", "parse_compute_apps", "parse_df",
    "parse_docker_ps", "parse_gpu_query", "parse_hostname", "parse_loadavg", "parse_meminfo", "parse_nproc",
    "parse_status", "parse_uptime", "split_sections",
]


@dataclass(frozen=True)
class Problem(_Serializable):
    """Something the status could not report, and why, e.g. ("gpu", "nvidia-smi not found on the node")."""

    section: str
    message: str


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
