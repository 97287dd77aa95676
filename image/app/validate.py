"""The vLLM pre-flight: read a built `docker run ... vllm serve ...` command back and refuse it
before any SSH call if it cannot work.

It works on the COMMAND STRING, exactly what would run in the node's shell, not on the
structures that built it: `shlex.split(command)` must give back the argv (shellsafe's
invariant), and a command that the node's shell would read differently from shlex (an
unquoted `;`, `$(...)`, a glob) is refused outright.

    parse_launch_command(command) -> ParsedLaunch     docker's flags, the image, vLLM's flags
    check_launch([(node, command), ...], ...) -> Verdict
    raise_for_problems(verdict)                       InvalidInput (HTTP 400) naming every problem
    NODE_FACTS_COMMAND / parse_node_facts(output)     MemAvailable, listening ports, images, containers

Checks, in this order (docs/PREFLIGHT.md has examples of every message):

1. syntax: every command splits, is `docker run [docker flags] IMAGE vllm serve MODEL [flags]`,
   every vLLM flag exists in `vllm_args.json` (the option table of one real vLLM release; the
   closest name is suggested), has its value, and numbers parse and are in range;
2. topology: tensor x pipeline (x data) parallel equals the GPUs of the placement; multi-node
   commands agree on the model and the parallel layout, have --nnodes = node count, ranks
   0..n-1, --headless on every worker and the same --master-addr/--master-port;
3. memory: the weights fit in gpu-memory-utilization x usable memory x nodes;
4. node facts (when given): each node's MemAvailable (less a headroom) covers what vLLM will
   claim, the API port (and the master port) is free, the image is present or pullable, no
   container of the same name is running.

This module owns that order (check_launch) and is the pre-flight's public face: the names
above are re-exported from the modules that own them.

    app.shell_split        the command string -> argv, refusing what the shell would misread
    app.docker_argv        docker run's flags, the image, the container command
    app.vllm_flags         the flag table (vllm_args.json): lookup, "did you mean", value types
    app.vllm_argv          vllm serve's arguments -> the model and the flag uses
    app.launch_parse       ParsedLaunch and parse_launch_command, tying the three together
    app.node_facts         NodeFacts, NODE_FACTS_COMMAND and its parsing, normalize_image
    app.plan_checks        checks 1 (ranges), 2 and 3
    app.node_checks        check 4
    app.preflight_verdict  Problem, Verdict, raise_for_problems

Pure functions: no I/O except reading the bundled flag table once. Facts about nodes are
passed in. Memory figures are in GB of 2**30 bytes (what vLLM's logs and `free -g` call GiB;
a Spark's MemTotal of 127600748 kB is 121.7 of them).
"""

from __future__ import annotations

from typing import Sequence

from app.errors import InvalidInput
from app.launch_parse import ParsedLaunch, parse_launch_command
from app.node_checks import check_node
from app.node_facts import (NODE_FACTS_COMMAND, NODE_FACTS_SCRIPT, NodeFacts, build_node_facts_script,
                            normalize_image, parse_listening_ports, parse_node_facts)
from app.plan_checks import check_docker_side, check_ranges, check_topology, check_weights
from app.preflight_verdict import Findings, Problem, Verdict, raise_for_problems
from app.vllm_argv import FlagUse
from app.vllm_flags import FlagSpec, VllmFlagTable, load_vllm_flags

DEFAULT_USABLE_MEMORY_GB = 121.0
MEMORY_HEADROOM_GB = 4.0       # kept free beyond what vLLM claims: unified-memory OOM can wedge a Spark


def check_launch(plan_commands: Sequence[tuple[str, str]], *, gpus_per_node: int = 1,
                 usable_memory_gb_per_node: float = DEFAULT_USABLE_MEMORY_GB, model_size_gb: float | None = None,
                 node_facts: dict[str, NodeFacts] | None = None,
                 memory_headroom_gb: float = MEMORY_HEADROOM_GB) -> Verdict:
    """Pre-flight a launch plan: [(node name, command)], head first. Never raises on a bad plan.

    Without node_facts only the command itself is checked (no SSH needed); with node_facts
    ({node name: NodeFacts}) memory, ports, images and containers on the nodes are checked too.
    """
    table = load_vllm_flags()
    found = Findings()
    checked = ["syntax"]
    parsed: dict[str, ParsedLaunch] = {}
    commands = list(plan_commands)
    if not commands:
        found.problem("syntax", None, "the launch plan has no commands")
    names = [node for node, _ in commands]
    for node in {n for n in names if names.count(n) > 1}:
        found.problem("topology", node, "appears more than once in the placement")

    # 1. syntax
    for node, command in commands:
        try:
            result = parse_launch_command(command, strict=False, table=table)
        except InvalidInput as exc:
            found.problem("syntax", node, exc.message)
            continue
        parsed[node] = result
        for message in result.problems:
            found.problem("syntax", node, message)
        for message in result.warnings:
            found.warn("syntax", node, message)
        check_ranges(node, result, found)
        check_docker_side(node, result, found, multi_node=len(commands) > 1)

    # 2-4 read the flags' values: they run once every command has passed 1.
    if not commands or found.problems:
        return Verdict(ok=False, problems=found.problems, warnings=found.warnings, vllm_version=table.version,
                       checked=checked, parsed=parsed)
    checked.append("topology")
    check_topology(commands, parsed, gpus_per_node, found, table)
    if model_size_gb is not None:
        checked.append("memory")
        check_weights(parsed, model_size_gb, usable_memory_gb_per_node, found)
    if node_facts is not None:
        checked.append("node facts")
        for node, result in parsed.items():
            facts = node_facts.get(node)
            if facts is None:
                found.warn("node facts", node, "no facts were gathered for this node: memory, port and image "
                                                "were not checked there")
                continue
            check_node(node, result, facts, usable_memory_gb_per_node, memory_headroom_gb, model_size_gb,
                       len(commands), found=found)
    return Verdict(ok=not found.problems, problems=found.problems, warnings=found.warnings,
                   vllm_version=table.version, checked=checked, parsed=parsed)


__all__ = [
    "FlagSpec", "FlagUse", "NODE_FACTS_COMMAND", "NODE_FACTS_SCRIPT", "NodeFacts", "ParsedLaunch", "Problem",
    "Verdict", "VllmFlagTable", "build_node_facts_script", "check_launch", "load_vllm_flags", "normalize_image",
    "parse_launch_command", "parse_listening_ports", "parse_node_facts", "raise_for_problems",
]
