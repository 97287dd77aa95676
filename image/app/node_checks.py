"""Pre-flight check 4: a node's command against the facts gathered on that node (app.node_facts).

    check_node(node, parsed, facts, ...)   memory (MemAvailable less a headroom covers what vLLM
                                           claims), the API and master ports are free, the image is
                                           present or pullable, no container of the same name runs

Memory figures are in GB of 2**30 bytes (what vLLM's logs and `free -g` call GiB).
"""

from __future__ import annotations

import math
from typing import Any

from app.launch_parse import ParsedLaunch, flag_float, flag_int
from app.node_facts import NodeFacts, normalize_image
from app.preflight_verdict import Findings, gb

GB = 2**30


def check_node(node: str, parsed: ParsedLaunch, facts: NodeFacts, usable_gb: float, headroom_gb: float,
               size_gb: float | None, count: int, *, found: Findings) -> None:
    """Check 4 for one node of a `count`-node launch; what could not be gathered becomes a warning."""
    for message in facts.problems:
        found.warn("node facts", node, f"could not check everything: {message}")
    _check_memory(node, parsed, facts, usable_gb, headroom_gb, size_gb, count, found)
    _check_ports(node, parsed, facts, count, found)
    _check_image(node, parsed, facts, found)
    _check_container(node, parsed, facts, found)


def _check_memory(node: str, parsed: ParsedLaunch, facts: NodeFacts, usable_gb: float, headroom_gb: float,
                  size_gb: float | None, count: int, found: Findings) -> None:
    # vLLM claims gpu_memory_utilization x total at start and refuses to start with less free
    util = flag_float(parsed, "--gpu-memory-utilization") or 0.9
    if facts.mem_available_bytes is None:
        return
    available = facts.mem_available_bytes / GB
    claim = util * usable_gb
    if claim + headroom_gb <= available:
        return
    best = math.floor((available - headroom_gb) / usable_gb * 100) / 100
    floor = size_gb / (usable_gb * count) if size_gb is not None else 0.0
    if best > 0 and best >= floor:
        advice = f"lower --gpu-memory-utilization to at most {best:.2f}, or free memory on {node}"
    else:
        advice = f"free memory on {node} (stop what runs there)"
    if facts.running_containers:
        advice += f"; running containers: {', '.join(facts.running_containers[:5])}"
    found.problem("memory", node, f"{gb(available)} available (MemAvailable), but --gpu-memory-utilization "
                                  f"{util:g} x {gb(usable_gb)} = {gb(claim)} plus {gb(headroom_gb)} "
                                  f"headroom = {gb(claim + headroom_gb)} is needed; {advice}")


def _check_ports(node: str, parsed: ParsedLaunch, facts: NodeFacts, count: int, found: Findings) -> None:
    # the API port on nodes that serve it; the master port on the rank-0 node
    host = parsed.flags.get("--host")
    ports = []
    if not parsed.headless:
        ports.append(("--port", flag_int(parsed, "--port")))
    if count > 1 and (flag_int(parsed, "--node-rank") or 0) == 0:
        ports.append(("--master-port", flag_int(parsed, "--master-port")))
    for flag, port in ports:
        if port is None or not _port_taken(facts, port, host):
            continue
        owner = facts.port_owners.get(port)
        held = f" (held by {owner})" if owner else ""
        free = _free_port_hint(facts, port)
        found.problem("port", node, f"{flag} {port} is already listening{held}; stop what holds it or use "
                                    f"{flag} {free}")


def _check_image(node: str, parsed: ParsedLaunch, facts: NodeFacts, found: Findings) -> None:
    wanted = normalize_image(parsed.image)
    if "@" in parsed.image:
        found.warn("image", node, f"image {parsed.image} is pinned by digest; its presence cannot be confirmed "
                                  "from `docker images`")
    elif wanted not in {normalize_image(i) for i in facts.images_present}:
        if facts.can_pull is False:
            found.problem("image", node, f"image {parsed.image} is not on the node and cannot be pulled there; "
                                         f"pull or load it on {node} first (docker pull {parsed.image})")
        elif not any(p.startswith("images unchecked") for p in facts.problems):
            found.warn("image", node, f"image {parsed.image} is not on the node yet: docker will pull it before "
                                      "starting (several GB; the launch waits for it)")


def _check_container(node: str, parsed: ParsedLaunch, facts: NodeFacts, found: Findings) -> None:
    name = parsed.container_name
    if name and name in facts.running_containers:
        found.problem("container", node, f"a container named {name} is already running; stop it first "
                                         f"(docker stop {name}) or swap to this model")
    elif name and name in facts.stopped_containers:
        found.warn("container", node, f"a stopped container named {name} exists: it must be removed "
                                      f"(docker rm {name}) before docker run can reuse the name")


_WILDCARDS = {"*", "0.0.0.0", "::", ""}


def _port_taken(facts: NodeFacts, port: int, host: Any) -> bool:
    if port not in facts.listening_ports:
        return False
    if not isinstance(host, str) or host in _WILDCARDS or not facts.listeners:
        return True  # binding every address conflicts with any listener on the port
    return any(p == port and (address in _WILDCARDS or address == host) for address, p in facts.listeners)


def _free_port_hint(facts: NodeFacts, port: int) -> str:
    """The first port above `port` that nothing listens on (65535 at most)."""
    candidate = port + 1
    while candidate in facts.listening_ports and candidate < 65535:
        candidate += 1
    return str(candidate)

