"""Facts about a node that the pre-flight checks a launch against, from ONE SSH round trip.

`NODE_FACTS_COMMAND` prints each fact in a probes-style section (the same
`@@spark-control:<section>@@` framing as app.probes, whose section splitter and failure wording
are reused); `parse_node_facts(output)` reads them back into `NodeFacts`:

    meminfo     MemAvailable and MemTotal
    ports       listening TCP sockets, from `ss -Htlnp` or, without ss, /proc/net/tcp{,6}
    images      `docker images` as repository:tag (compare with normalize_image)
    containers  `docker ps -a`: running and stopped names, and the port a running one holds

Parsing never raises: what could not be gathered is in `NodeFacts.problems`. The script
contains no user values.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from app.probes import SectionOutput, exit_status_problem, parse_meminfo, split_sections


@dataclass
class NodeFacts:
    """What the pre-flight needs to know about a node, gathered by NODE_FACTS_COMMAND."""

    mem_available_bytes: int | None = None
    listening_ports: set[int] = field(default_factory=set)
    images_present: set[str] = field(default_factory=set)
    can_pull: bool | None = None          # None: unknown (the gatherer cannot tell without pulling)
    running_containers: list[str] = field(default_factory=list)
    stopped_containers: list[str] = field(default_factory=list)
    port_owners: dict[int, str] = field(default_factory=dict)   # what holds a port, when known
    listeners: list[tuple[str, int]] = field(default_factory=list)  # (local address, port)
    mem_total_bytes: int | None = None
    ports_source: str | None = None       # "ss" or "/proc/net/tcp"
    problems: list[str] = field(default_factory=list)  # what could not be gathered, and why

    def to_dict(self) -> dict[str, Any]:
        return {"mem_available_bytes": self.mem_available_bytes, "mem_total_bytes": self.mem_total_bytes,
                "listening_ports": sorted(self.listening_ports), "port_owners": self.port_owners,
                "images_present": sorted(self.images_present), "can_pull": self.can_pull,
                "running_containers": self.running_containers, "stopped_containers": self.stopped_containers,
                "ports_source": self.ports_source, "problems": self.problems}


_FACT_SECTIONS: dict[str, str] = {
    "meminfo": "cat /proc/meminfo",
    # ss is iproute2; without it (or with an ss too old for -H) read the kernel's tables.
    "ports": "{ command -v ss >/dev/null 2>&1 && ss -Htlnp 2>/dev/null; } || "
             "{ cat /proc/net/tcp && { cat /proc/net/tcp6 2>/dev/null || true; }; }",
    "images": "_sc_t docker images --format '{{.Repository}}:{{.Tag}}'",
    "containers": "_sc_t docker ps -a --format '{{.Names}}|{{.State}}|{{.Label \"spark-control.port\"}}'",
}

_FACTS_PRELUDE = """\
# spark-control pre-flight facts: memory, listening TCP ports, docker images and containers.
_sc_t() { if command -v timeout >/dev/null 2>&1; then timeout 8 "$@"; else "$@"; fi; }
"""


def build_node_facts_script() -> str:
    """One POSIX sh script printing each fact in a probes-style section. No user values."""
    lines = [_FACTS_PRELUDE]
    for name, command in _FACT_SECTIONS.items():
        lines.append(f"printf '@@spark-control:{name}@@\\n'")
        lines.append(f"{{ {command}; }} </dev/null 2>&1")
        lines.append("printf '\\n@@spark-control:rc=%s@@\\n' \"$?\"")
    return "\n".join(lines) + "\n"


NODE_FACTS_SCRIPT = build_node_facts_script()
NODE_FACTS_COMMAND = "sh -c " + shlex.quote(NODE_FACTS_SCRIPT)

_SS_USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')
_PROC_TCP_LINE = re.compile(r"\s*\d+:\s+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})\s+\S+\s+([0-9A-Fa-f]{2})\s")


def _split_host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    host = host.split("%", 1)[0]  # 127.0.0.53%lo, fe80::1%eth0
    return (host or "*"), int(port)


def _proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host (little-endian) order
    fixed = b"".join(raw[k:k + 4][::-1] for k in range(0, len(raw), 4))
    address = ipaddress.ip_address(fixed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def parse_listening_ports(text: str, *, problems: list[str] | None = None
                          ) -> tuple[list[tuple[str, int]], dict[int, str], str | None]:
    """`ss -Htln[p]` or /proc/net/tcp{,6} output -> ([(address, port)], {port: owner}, source)."""
    problems = problems if problems is not None else []
    listeners: list[tuple[str, int]] = []
    owners: dict[int, str] = {}
    source = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("State", "sl ")):
            continue
        proc = _PROC_TCP_LINE.match(line)
        if proc:
            source = source or "/proc/net/tcp"
            if proc.group(3).upper() != "0A":  # 0A = TCP_LISTEN
                continue
            try:
                listeners.append((_proc_address(proc.group(1)), int(proc.group(2), 16)))
            except ValueError:
                problems.append(f"unreadable /proc/net/tcp line {stripped[:120]!r}")
            continue
        parts = stripped.split()
        if parts[0] in ("LISTEN", "UNCONN", "ESTAB") and len(parts) >= 5:
            source = source or "ss"
            if parts[0] != "LISTEN":
                continue
            local = _split_host_port(parts[3])
            if local is None:
                problems.append(f"unreadable ss line {stripped[:120]!r}")
                continue
            listeners.append(local)
            user = _SS_USERS.search(stripped)
            if user:
                owners.setdefault(local[1], f"process {user.group(1)} (pid {user.group(2)})")
            continue
        problems.append(f"unreadable line {stripped[:120]!r}")
    return listeners, owners, source


def parse_node_facts(text: str) -> NodeFacts:
    """NODE_FACTS_COMMAND output -> NodeFacts. Never raises: what is missing is in `problems`."""
    facts = NodeFacts()
    sections = split_sections(text or "")
    if not sections:
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "(no output)")
        facts.problems.append(f"no fact sections in the node's output: {first[:200]}")
        return facts

    def body(name: str, tool: str) -> str | None:
        section = sections.get(name)
        if section is None:
            facts.problems.append(f"{name} unchecked: no output (the facts script did not reach this section)")
            return None
        # probes words the failure ("docker not found on the node", "... permission denied (add the
        # SSH user to the 'docker' group)") from the tool's name.
        failure = exit_status_problem(SectionOutput(tool, section.output, section.exit_status))
        if failure:
            facts.problems.append(f"{name} unchecked: {failure}")
            return None
        return section.output

    meminfo = body("meminfo", "meminfo")
    if meminfo is not None:
        try:
            memory = parse_meminfo(meminfo)
            facts.mem_available_bytes, facts.mem_total_bytes = memory.available_bytes, memory.total_bytes
        except ValueError as exc:
            facts.problems.append(f"meminfo unchecked: {exc}")

    ports = body("ports", "ss (and /proc/net/tcp)")
    if ports is not None:
        line_problems: list[str] = []
        listeners, owners, source = parse_listening_ports(ports, problems=line_problems)
        facts.listeners, facts.port_owners, facts.ports_source = listeners, owners, source
        facts.listening_ports = {port for _, port in listeners}
        facts.problems.extend(f"ports: {p}" for p in line_problems)

    images = body("images", "docker")
    if images is not None:
        for line in images.splitlines():
            line = line.strip()
            if line and not line.startswith("<none>"):
                facts.images_present.add(line)

    containers = body("containers", "docker")
    if containers is not None:
        for line in containers.splitlines():
            if not line.strip():
                continue
            name, _, rest = line.strip().partition("|")
            state, _, port = rest.partition("|")
            if state == "running":
                facts.running_containers.append(name)
                if port.isdigit():
                    facts.port_owners[int(port)] = f"container {name}"  # better than a process name
            else:
                facts.stopped_containers.append(name)
    return facts


def normalize_image(reference: str) -> str:
    """The form `docker images --format '{{.Repository}}:{{.Tag}}'` prints for an image reference."""
    ref = reference.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        ref += ":latest"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    return ref
