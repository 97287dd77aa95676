"""How long does refreshing the status of BOTH Sparks take, and where does the time go?

    cd image && .venv/bin/python ../bench/ssh_status.py [--rounds N]      (or `make bench`)

Starts two simulated Sparks (real sshd on 127.0.0.2 / 127.0.0.3 with sparksim's `docker` and
`nvidia-smi`; needs root) and measures, in the same run and interleaved round by round:

  (a) spark-control: `StatusService.probe_all()` over the pooled, persistent asyncssh
      connections (warm), and the cold refresh (a new pool: connect + auth + probe);
  (b) the shell-script way: a new OpenSSH `ssh` process per probe command (every
      `probes.SECTION_COMMANDS` entry), commands one after another per node, nodes in parallel;
  (c) one new `ssh` process per node running the whole status script (no pool, one round trip);

and, to split SSH time from the time the node's tools take:

  - transport only: `true` over the pool vs `true` through a new `ssh` process;
  - on-node only: the status script (and the nine commands one after another) timed ON the
    node with perf_counter, started over the pool, so no SSH time is inside the interval.

Every row is "both nodes, in parallel": the time until the slower node has answered. Rounds
run the methods in a rotating order so no method always goes first after a pause. Loopback
only; the cluster is stopped in a `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

IMAGE_DIR = Path(__file__).resolve().parent.parent / "image"
if str(IMAGE_DIR) not in sys.path:
    sys.path.insert(0, str(IMAGE_DIR))  # works from any directory, not only image/

import asyncssh  # noqa: E402

from app import probes  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.ssh import NodePool, SSHNode  # noqa: E402
from app.status import StatusService  # noqa: E402

SSH_TIMEOUT_S = 30.0  # one ssh process; a hang fails the run instead of stalling it
NODE_PYTHON = "/usr/bin/python3"  # the nodes' system python (sparksim's tools use it too)

# Runs ON the node, started over the pool: waits until a shared start time (both nodes begin
# together, as in a refresh), then times the work with perf_counter. Python's start-up and the
# SSH round trip are outside the interval. `sh -c CMD` per command is what sshd does for each
# `ssh host CMD`; the script mode is what spark-control's STATUS_COMMAND does.
_ON_NODE_TIMER = r"""
import json, subprocess, sys, time
job = json.load(sys.stdin)
delay = job["start_at"] - time.time()
if delay > 0:
    time.sleep(delay)
times = []
for command in job["commands"]:
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


# ---------------------------------------------------------------- the ways to refresh


class Bench:
    def __init__(self, cluster, rounds: int) -> None:
        self.cluster = cluster
        self.rounds = rounds
        self.settings = Settings.from_env(cluster.app_env())
        self.pool = NodePool(self.settings)
        self.per_command: dict[str, list[float]] = {}  # section -> on-node seconds per round
        self.status = StatusService(self.pool, timeout_s=min(5.0, self.settings.ssh_command_timeout_s))
        self.ssh_base = [
            "ssh", "-i", str(cluster.client_key),
            "-o", f"UserKnownHostsFile={cluster.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            # A new process must mean a new connection, whatever ~/.ssh/config says.
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
        ]

    def ssh_argv(self, node, command: str) -> list[str]:
        return [*self.ssh_base, "-p", str(node.port), f"{node.user}@{node.address}", command]

    async def ssh(self, node, command: str) -> str:
        """One new `ssh` process: fork/exec, TCP, key exchange, auth, one command, teardown."""
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_argv(node, command), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), SSH_TIMEOUT_S)
        except (asyncio.TimeoutError, TimeoutError):
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"ssh to {node.name} did not finish within {SSH_TIMEOUT_S:g} s") from None
        except BaseException:  # cancelled (Ctrl-C): leave no ssh process behind
            if proc.returncode is None:
                proc.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"ssh to {node.name} `{command[:40]}` exited {proc.returncode}: "
                               f"{err.decode(errors='replace').strip()[-300:]}")
        return out.decode(errors="replace")

    @staticmethod
    def check_statuses(statuses: list[dict], how: str) -> None:
        for s in statuses:
            if not s.get("reachable") or not s.get("gpus") or not s.get("memory"):
                raise RuntimeError(f"{how}: {s['name']} gave an incomplete status: "
                                   f"{s.get('reason') or s.get('problems')}")

    # (a) spark-control, warm and cold
    async def a_warm(self) -> None:
        self.check_statuses(await self.status.probe_all(), "(a) warm")

    async def a_cold(self) -> float:
        """A new pool: connect + auth + probe. Timed inside, so closing the pool is not counted."""
        pool = NodePool(self.settings)
        service = StatusService(pool, timeout_s=self.status.timeout_s)
        try:
            t0 = time.perf_counter()
            statuses = await service.probe_all()
            elapsed = time.perf_counter() - t0
        finally:
            await pool.close()
        self.check_statuses(statuses, "(a) cold")
        return elapsed

    # (b) new ssh process per command
    async def b_per_command(self) -> None:
        async def one_node(node) -> None:
            for command in probes.SECTION_COMMANDS.values():
                await self.ssh(node, command)
        await asyncio.gather(*(one_node(n) for n in self.cluster.nodes))

    # (c) new ssh process per node, the whole script
    async def c_per_node(self) -> None:
        async def one_node(node) -> dict:
            out = await self.ssh(node, probes.STATUS_COMMAND)
            status = probes.parse_status(out).to_dict()
            return {"name": node.name, "reachable": True, **status}
        self.check_statuses(list(await asyncio.gather(*(one_node(n) for n in self.cluster.nodes))), "(c)")

    # transport only
    async def t_pool(self) -> None:
        await asyncio.gather(*(self.pool.run(n.name, "true") for n in self.cluster.nodes))

    async def t_ssh(self) -> None:
        await asyncio.gather(*(self.ssh(n, "true") for n in self.cluster.nodes))

    # on-node only (returns the slower node's own measurement)
    async def on_node(self, commands: list[str]) -> list[list[float]]:
        """Both nodes run `commands` together, each timing itself: seconds per command per node."""
        job = json.dumps({"start_at": time.time() + 0.1, "commands": commands})
        command = f"{NODE_PYTHON} -c {shlex.quote(_ON_NODE_TIMER)}"
        results = await asyncio.gather(*(self.pool.run(n.name, command, input=job) for n in self.cluster.nodes))
        return [json.loads(r.stdout) for r in results]

    async def node_script(self) -> float:
        return max(times[0] for times in await self.on_node([probes.STATUS_SCRIPT]))

    async def node_sequential(self) -> float:
        """The 9 commands one after another; each command's time (slower node) is kept too."""
        per_node = await self.on_node(list(probes.SECTION_COMMANDS.values()))
        for name, times in zip(probes.SECTION_COMMANDS, zip(*per_node)):
            self.per_command.setdefault(name, []).append(max(times))
        return max(sum(times) for times in per_node)

    async def first_connect_only(self) -> float:
        """Connect + auth of both nodes, nothing else (a new pool's connections, no command)."""
        pool = NodePool(self.settings)
        try:
            t0 = time.perf_counter()
            await asyncio.gather(*(node._connection() for node in pool.nodes.values() if isinstance(node, SSHNode)))
            return time.perf_counter() - t0
        finally:
            await pool.close()


# ---------------------------------------------------------------- measuring and printing

ROWS = [  # key, label; the steps themselves are listed in measure()
    ("a_warm", "(a) spark-control: probe_all(), pooled connections (warm)"),
    ("a_cold", "(a) cold: new pool, connect+auth+probe"),
    ("b", "(b) new `ssh` per command, 9 commands/node sequential"),
    ("c", "(c) new `ssh` per node, whole status script"),
    ("t_pool", "transport: `true` over the pool"),
    ("t_ssh", "transport: `true`, new `ssh` process"),
    ("connect", "transport: connect+auth only, new asyncssh pool"),
    ("node_script", "on node: status script (parallel commands), no SSH"),
    ("node_seq", "on node: the 9 commands one after another, no SSH"),
]


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """How busy all CPUs were over the next `seconds` (from /proc/stat): other work on the machine."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 0.1 else f"{x:.2f}x"


def machine_info() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    usable = len(os.sched_getaffinity(0))
    return [
        f"machine : {usable} usable cores (nproc), {os.cpu_count()} online, {cpu}; {os_name}, "
        f"kernel {platform.release()}",
        f"software: Python {platform.python_version()}, asyncssh {asyncssh.__version__}, {ssh_version}",
    ]


async def measure(bench: Bench) -> tuple[dict[str, list[float]], float]:
    samples: dict[str, list[float]] = {key: [] for key, _ in ROWS}
    steps: list[tuple[str, Callable[[], Awaitable], str]] = [
        ("a_warm", bench.a_warm, "wall"), ("a_cold", bench.a_cold, "self"),
        ("b", bench.b_per_command, "wall"), ("c", bench.c_per_node, "wall"),
        ("t_pool", bench.t_pool, "wall"), ("t_ssh", bench.t_ssh, "wall"),
        ("connect", bench.first_connect_only, "self"),
        ("node_script", bench.node_script, "self"), ("node_seq", bench.node_sequential, "self"),
    ]

    # The very first refresh of this process: cold connections, plus one-time costs (imports
    # of crypto back ends, first page-ins of sshd and the tools).
    t0 = time.perf_counter()
    bench.check_statuses(await bench.status.probe_all(), "first refresh")
    first = time.perf_counter() - t0

    for key, step, _ in steps:  # one untimed warm-up (b is nine of t_ssh: skipped to save time)
        if key != "b":
            await step()
    bench.per_command.clear()

    for r in range(bench.rounds):
        shift = r % len(steps)
        for key, step, kind in steps[shift:] + steps[:shift]:
            if kind == "wall":
                t0 = time.perf_counter()
                await step()
                samples[key].append(time.perf_counter() - t0)
            else:
                samples[key].append(await step())
        if sys.stderr.isatty():
            print(f"\rround {r + 1}/{bench.rounds}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return samples, first


async def measure_and_close(bench: Bench) -> tuple[dict[str, list[float]], float]:
    try:
        return await measure(bench)
    finally:
        await bench.pool.close()  # in the loop that opened the connections


def render(samples: dict[str, list[float]], first: float, rounds: int, per_command: dict[str, list[float]]) -> str:
    ms = {key: [v * 1000 for v in values] for key, values in samples.items()}
    med = {key: statistics.median(values) for key, values in ms.items()}
    base = med["a_warm"]
    label_w = max(len(label) for _, label in ROWS)

    def table(keys: list[str], with_ratio: bool) -> list[str]:
        head = f"{'both nodes, ms':<{label_w}}  {'median':>8}  {'p90':>8}  {'min':>8}"
        head += f"  {'x (a)':>7}" if with_ratio else ""
        lines = [head, "-" * len(head)]
        for key, label in ROWS:
            if key not in keys:
                continue
            values = ms[key]
            line = f"{label:<{label_w}}  {med[key]:8.1f}  {p90(values):8.1f}  {min(values):8.1f}"
            if with_ratio:
                line += f"  {ratio(med[key] / base):>7}"
            lines.append(line)
        return lines

    n_cmds = len(probes.SECTION_COMMANDS)
    out = [f"Status refresh of 2 simulated Sparks, {rounds} rounds (median / nearest-rank p90 / min)", ""]
    out += table(["a_warm", "a_cold", "b", "c", "t_pool", "t_ssh"], with_ratio=True)
    out += ["", f"very first refresh of the process (cold, one-time costs included): {first * 1000:.1f} ms", ""]
    out += ["Where the time goes (medians):", ""]
    out += table(["node_script", "node_seq", "t_pool", "t_ssh", "connect"], with_ratio=False)
    out += ["", "On-node time per command (run one after another; slower node; median / p90 / min ms):", ""]
    for name, command in probes.SECTION_COMMANDS.items():
        values = [v * 1000 for v in per_command.get(name, [])]
        short = command if len(command) <= 40 else command[:37] + "..."
        if values:
            out.append(f"  {name:<14}{short:<42}{statistics.median(values):8.1f}  {p90(values):8.1f}  "
                       f"{min(values):8.1f}")
    predicted_a = med["node_script"] + med["t_pool"]
    predicted_b = n_cmds * med["t_ssh"] + med["node_seq"]
    out += [
        "",
        f"(a) warm ~= pooled `true` {med['t_pool']:.1f} + on-node script {med['node_script']:.1f} "
        f"= {predicted_a:.1f} ms predicted, {med['a_warm']:.1f} ms measured",
        f"(b)      ~= {n_cmds} x new ssh {med['t_ssh']:.1f} + on-node sequential {med['node_seq']:.1f} "
        f"= {predicted_b:.1f} ms predicted, {med['b']:.1f} ms measured",
        f"(c)      ~= new ssh {med['t_ssh']:.1f} + on-node script {med['node_script']:.1f} "
        f"= {med['t_ssh'] + med['node_script']:.1f} ms predicted, {med['c']:.1f} ms measured",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20; 1-500)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 500:
        parser.error("--rounds must be between 1 and 500")
    if os.geteuid() != 0:
        print("this benchmark starts simulated Sparks (users, sshd): run it as root", file=sys.stderr)
        return 2
    for tool in ("ssh", "/usr/sbin/sshd", NODE_PYTHON):
        if not shutil.which(tool):
            print(f"{tool} is missing (`make bootstrap` installs it)", file=sys.stderr)
            return 2

    from sparksim.cluster import SimCluster

    busy_before = cpu_busy_fraction()  # before anything of ours runs
    started = time.perf_counter()
    cluster = SimCluster(2, network="loopback")  # 127.0.0.2 / 127.0.0.3: no veth or bridge in the path
    try:
        cluster.start()
        bench = Bench(cluster, args.rounds)
        print("\n".join(machine_info()))
        print("nodes   : " + ", ".join(f"{n.name} {n.user}@{n.address}:{n.port}" for n in cluster.nodes))
        print("(b)/(c) : " + shlex.join(bench.ssh_argv(cluster.nodes[0], "CMD")))
        print()
        samples, first = asyncio.run(measure_and_close(bench))
        print(render(samples, first, args.rounds, bench.per_command))
    finally:
        cluster.stop()
    busy_after = cpu_busy_fraction()
    print(f"\nAll CPUs busy with other work: {busy_before:.0%} in the second before the run, "
          f"{busy_after:.0%} in the second after it.")
    if max(busy_before, busy_after) > 0.10:
        print("warning: the machine was not quiet; the numbers include that contention "
              "(run it again on a quiet machine)")
    print(f"\n(whole run, cluster start and stop included: {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the cluster is already stopped by main's finally
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
