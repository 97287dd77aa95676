"""Pre-flight checks 1-3, on the commands alone (no SSH): ranges, topology, weights.

    check_ranges(node, parsed, found)         numeric flags vLLM would reject (part of check 1)
    check_docker_side(node, parsed, found)    a container without a GPU, multi-node without host networking
    check_topology(commands, parsed, ...)     check 2: the parallel layout fits the placement, and
                                              multi-node commands agree (model, image, ranks, master)
    check_weights(parsed, size_gb, ...)       check 3: the weights fit the memory vLLM may claim

Each appends to a Findings (app.preflight_verdict); the order they run in is app.validate's.
"""

from __future__ import annotations

import math

from app.launch_parse import ParsedLaunch, flag_float, flag_int, flag_value
from app.node_facts import normalize_image
from app.preflight_verdict import Findings, gb, plural
from app.vllm_flags import VllmFlagTable, human_int

MAX_GPU_MEMORY_UTILIZATION = 0.95  # the highest value the pre-flight ever suggests
KV_CACHE_WARN_GB = 2.0         # less than this left per node after the weights: warn


def check_ranges(node: str, parsed: ParsedLaunch, found: Findings) -> None:
    """The numeric flags whose range vLLM would reject (or that cannot work on a Spark)."""
    def written(flag: str) -> str:
        uses = [u for u in parsed.uses if u.flag == flag and u.key is None]
        return uses[-1].written.split("=", 1)[0] if uses else flag

    util = parsed.flags.get("--gpu-memory-utilization")
    if util is not None:
        value = float(util)
        if not 0 < value <= 1:
            found.problem("syntax", node, f"{written('--gpu-memory-utilization')} {util}: "
                                          f"--gpu-memory-utilization must be in (0, 1], e.g. 0.8")
    for flag, low, what in (("--max-model-len", 1, "a positive number of tokens, e.g. 32768 or 32k"),
                            ("--tensor-parallel-size", 1, "at least 1"), ("--pipeline-parallel-size", 1, "at least 1"),
                            ("--data-parallel-size", 1, "at least 1"), ("--nnodes", 1, "at least 1"),
                            ("--node-rank", 0, "0 or more")):
        raw = parsed.flags.get(flag)
        if raw is not None and human_int(str(raw)) < low:
            found.problem("syntax", node, f"{written(flag)} {raw}: {flag} must be {what}")
    for flag in ("--port", "--master-port", "--data-parallel-rpc-port"):
        raw = parsed.flags.get(flag)
        if raw is not None and not 1 <= int(raw) <= 65535:
            found.problem("syntax", node, f"{written(flag)} {raw}: {flag} must be a TCP port from 1 to 65535")


def check_docker_side(node: str, parsed: ParsedLaunch, found: Findings, *, multi_node: bool) -> None:
    """docker run's side of a vLLM launch: warnings only."""
    if not (parsed.has_docker_flag("--gpus") or parsed.docker_value("--runtime") == "nvidia"):
        found.warn("syntax", node, "docker run has no --gpus (nor --runtime nvidia): the container may see no GPU")
    if multi_node and parsed.docker_value("--network") != "host":
        found.warn("topology", node, "a multi-node launch without --network host: the nodes reach each other "
                                     "only through host networking")


def check_topology(commands: list[tuple[str, str]], parsed: dict[str, ParsedLaunch], gpus_per_node: int,
                   found: Findings, table: VllmFlagTable) -> None:
    nodes = [node for node, _ in commands]
    count = len(nodes)
    gpus = count * gpus_per_node
    head = parsed[nodes[0]]
    placement = "+".join(nodes)

    # Every node must run the same engine layout.
    agree = ["--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size", "--nnodes",
             "--master-addr", "--master-port", "--revision", "--quantization", "--dtype", "--kv-cache-dtype",
             "--max-model-len", "--distributed-executor-backend"]
    for node in nodes[1:]:
        other = parsed[node]
        if other.model != head.model:
            found.problem("topology", node, f"serves model {other.model!r} but {nodes[0]} serves {head.model!r}; "
                                            "every node of a launch must serve the same model")
        if normalize_image(other.image) != normalize_image(head.image):
            found.problem("topology", node, f"runs image {other.image} but {nodes[0]} runs {head.image}; mixed vLLM "
                                            "versions cannot form one engine")
        for flag in agree:
            mine, theirs = flag_value(other, flag), flag_value(head, flag)
            if str(mine) != str(theirs):
                found.problem("topology", node, f"{flag} {mine} differs from {nodes[0]}'s {flag} {theirs}; every "
                                                "node must agree")

    tp = flag_int(head, "--tensor-parallel-size") or 1
    pp = flag_int(head, "--pipeline-parallel-size") or 1
    dp = flag_int(head, "--data-parallel-size") or 1
    world = tp * pp * dp
    if world != gpus:
        product = f"--tensor-parallel-size {tp} x --pipeline-parallel-size {pp}"
        if dp != 1:
            product += f" x --data-parallel-size {dp}"
        fits = [f"--tensor-parallel-size {gpus // p} --pipeline-parallel-size {p}"
                for p in (1, count) if gpus % p == 0 and (p == 1 or count > 1)]
        hint = " or ".join(dict.fromkeys(fits))
        more = (f", or place it on {world // gpus_per_node} nodes" if world % gpus_per_node == 0
                and world // gpus_per_node != count else "")
        per_node = plural(gpus_per_node, "GPU")
        found.problem("topology", None, f"{product} = {world} GPUs, but placement {placement} has "
                                        f"{plural(gpus, 'GPU')} ({plural(count, 'node')} x {per_node}); "
                                        f"use {hint}{more}")

    if count == 1:
        nnodes = flag_int(head, "--nnodes") or 1
        if nnodes != 1:
            found.problem("topology", nodes[0], f"--nnodes {nnodes} but the placement has 1 node; drop --nnodes "
                                                f"or place the model on {nnodes} nodes")
        if head.headless:
            found.problem("topology", nodes[0], "--headless on a single node: nothing would serve the API")
        return

    ranks: dict[int, str] = {}
    for position, node in enumerate(nodes):
        result = parsed[node]
        if "--nnodes" not in result.flags:
            found.problem("topology", node, f"no --nnodes: a {count}-node launch needs --nnodes {count} on every node")
        elif flag_int(result, "--nnodes") != count:
            found.problem("topology", node, f"--nnodes {flag_int(result, '--nnodes')} but the placement "
                                            f"({placement}) has {count} nodes; use --nnodes {count}")
        if "--node-rank" not in result.flags and position > 0:
            found.problem("topology", node, f"no --node-rank: vLLM would take rank 0, the same as {nodes[0]}; "
                                            f"use --node-rank {position}")
        rank = flag_int(result, "--node-rank") or 0
        if rank in ranks:
            found.problem("topology", node, f"--node-rank {rank} is also {ranks[rank]}'s; ranks must be "
                                            f"0..{count - 1}, each once")
        elif not 0 <= rank < count:
            found.problem("topology", node, f"--node-rank {rank} is outside 0..{count - 1} for {count} nodes")
        ranks.setdefault(rank, node)
        if rank == 0 and result.headless:
            found.problem("topology", node, "--node-rank 0 with --headless: the rank-0 node serves the API and "
                                            "must not be headless")
        if rank > 0 and not result.headless:
            found.problem("topology", node, f"--node-rank {rank} without --headless: every worker node needs "
                                            "--headless (only rank 0 serves the API)")
        if "--master-addr" not in result.flags:
            default = table.default("--master-addr")
            found.problem("topology", node, f"no --master-addr: vLLM would use its default {default}, which the "
                                            "other nodes cannot reach; use the rank-0 node's fabric address")
    if ranks.get(0) not in (None, nodes[0]):
        found.warn("topology", None, f"rank 0 is {ranks[0]}, not the first node of the placement ({nodes[0]})")


def check_weights(parsed: dict[str, ParsedLaunch], size_gb: float, usable_gb: float, found: Findings) -> None:
    count = len(parsed)
    head = next(iter(parsed.values()))
    util = flag_float(head, "--gpu-memory-utilization") or 0.9
    budget = util * usable_gb * count
    where = plural(count, "node")
    if size_gb > budget:
        options = []
        needed_util = _ceil2(size_gb / (usable_gb * count))
        if needed_util <= MAX_GPU_MEMORY_UTILIZATION:
            options.append(f"raise --gpu-memory-utilization to at least {needed_util:.2f}")
        nodes_now = math.ceil(size_gb / (min(util, MAX_GPU_MEMORY_UTILIZATION) * usable_gb))
        nodes_max = math.ceil(size_gb / (MAX_GPU_MEMORY_UTILIZATION * usable_gb))
        if nodes_now > count:
            options.append(f"place it on {nodes_now} nodes")
        if count < nodes_max < nodes_now:
            options.append(f"on {nodes_max} nodes with --gpu-memory-utilization "
                           f"{_ceil2(size_gb / (usable_gb * nodes_max)):.2f}")
        advice = " or ".join(options) or "pick a smaller (more quantized) model"
        found.problem("memory", None, f"the weights need {gb(size_gb)} but --gpu-memory-utilization {util:g} x "
                                      f"{gb(usable_gb)} usable x {where} = {gb(budget)}; {advice}")
        return
    left = (budget - size_gb) / count
    if left < KV_CACHE_WARN_GB:
        found.warn("memory", None, f"the weights ({gb(size_gb)}) leave only {gb(left)} per node for the KV "
                                   f"cache within --gpu-memory-utilization {util:g}; vLLM may refuse to start "
                                   "('No available memory for the cache blocks')")


def _ceil2(value: float) -> float:
    """Round up to two decimals (a utilization that is enough, never one that is just short)."""
    return math.ceil(round(value * 100, 6)) / 100
