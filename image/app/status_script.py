"""The status script and its output framing: one SSH round trip per node per refresh.

Owns `SECTION_COMMANDS` (the probe commands and their nvidia-smi query fields), the script
builder and `STATUS_SCRIPT`/`STATUS_COMMAND`, which print each command's output in a section:

    @@spark-control:<section>@@
    <stdout and stderr of the command>
    @@spark-control:rc=<exit status>@@

and the reading side of that framing: `split_sections` -> `SectionOutput`, and
`exit_status_problem` (a failed command's exit status in words). Parsing a section's content
is app/gpu_parsers.py and app/host_parsers.py; the whole status is app/probes.py.

Pure functions only: no I/O here. The script contains no user values.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SectionOutput:
    name: str
    output: str
    exit_status: int | None  # None: the trailer never arrived (output cut off)


# ---------------------------------------------------------------- reading its output


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

