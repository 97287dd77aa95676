"""A cluster of simulated Sparks, and the settings an app needs to reach it.

    python -m sparksim.cluster --nodes 2 --env-file /tmp/sparks.env

starts Spark 1 on 127.0.0.2 and Spark 2 on 127.0.0.3 (real sshd each), writes the SPARK{n}_*
/ SSH_* variables for spark-control to the env file, and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparksim.node import SimNode, free_port, install_tools, run
from sparksim.peers import connect_peers

_NETNS_SUBNET = "10.213"  # private addresses inside this machine's own namespaces only
_BRIDGE_LOCK = "/tmp/.sparksim-bridges.lock"


def netns_available() -> str | None:
    """None when network namespaces work here, else the reason they do not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"scprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', '') or exc}"
    run(["ip", "netns", "delete", probe])
    return None


class SimCluster:
    def __init__(self, n_nodes: int = 2, base: Path | None = None, network: str = "auto",
                 fixed_port: int | None = None) -> None:
        """network: "netns" (each node its own network namespace on a private bridge: own ports,
        can be blackholed), "loopback" (127.0.0.2, 127.0.0.3, …: shared ports), or "auto"."""
        self.base = base or Path(tempfile.mkdtemp(prefix="sparksim-", dir="/tmp"))
        self._own_base = base is None
        if network == "auto":
            network = "netns" if netns_available() is None else "loopback"
        self.network = network
        self.nodes: list[SimNode] = []
        self._netns: list[str] = []
        self._bridge: str | None = None
        self.n_nodes = n_nodes
        self.fixed_port = fixed_port

    @property
    def client_key(self) -> Path:
        return self.base / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.base / "client" / "known_hosts"

    def start(self) -> "SimCluster":
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        install_tools(self.base)
        self.client_key.parent.mkdir(exist_ok=True)
        os.chmod(self.client_key.parent, 0o700)
        if not self.client_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "spark-control", "-f", str(self.client_key)])
        public_key = self.client_key.with_suffix(".pub").read_text()
        tag = self.base.name.rsplit("-", 1)[-1][:8]
        subnet = self._make_bridge() if self.network == "netns" else None
        for i in range(1, self.n_nodes + 1):
            if subnet:
                netns = f"spk{tag}n{i}"
                address = self._make_netns(netns, f"{subnet}.{i + 1}")
            else:
                address, netns = f"127.0.0.{i + 1}", None
            port = self.fixed_port or (2222 if netns else free_port(address))
            node = SimNode(i, self.base, address, port, netns=netns, tag=tag)
            node.prepare(public_key)
            node.start()
            self.nodes.append(node)
        self.known_hosts.write_text("".join(n.host_key_line() for n in self.nodes))
        connect_peers(self.nodes)  # weights are copied node to node over SSH, as between real Sparks
        return self

    def _make_bridge(self) -> str:
        """A private bridge for this cluster's nodes: 10.213.K.1 on the host, nodes .2, .3, …
        Clusters started at once (the test workers) take turns, so no two pick the same K."""
        with open(_BRIDGE_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
            k = next(k for k in range(1, 255) if f" {_NETNS_SUBNET}.{k}." not in used)
            self._bridge = f"spkbr{k}"
            run(["ip", "link", "add", self._bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{_NETNS_SUBNET}.{k}.1/24", "dev", self._bridge])
            run(["ip", "link", "set", self._bridge, "up"])
        return f"{_NETNS_SUBNET}.{k}"

    def _make_netns(self, ns: str, address: str) -> str:
        """A namespace whose eth0 is a veth on the cluster's bridge: the node's own network stack."""
        host_if = "v" + ns.removeprefix("spk")[-13:]  # unique per node; interface names are <= 15 chars
        run(["ip", "netns", "add", ns])
        self._netns.append(ns)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", host_if, "master", self._bridge])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return address

    def node(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)

    def ssh(self, node_name: str, command: str, *, check: bool = False) -> subprocess.CompletedProcess:
        """Run `command` on a node as its user, over SSH like the product does (for tests and checks)."""
        n = self.node(node_name)
        return subprocess.run(
            ["ssh", "-i", str(self.client_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(n.port),
             f"{n.user}@{n.address}", command], capture_output=True, text=True, check=check, timeout=60)

    def app_env(self) -> dict[str, str]:
        """The environment that points spark-control at this cluster."""
        env = {"SSH_KEY_PATH": str(self.client_key), "SSH_KNOWN_HOSTS": str(self.known_hosts)}
        for n in self.nodes:
            env[f"SPARK{n.index}_HOST"] = n.address
            env[f"SPARK{n.index}_USER"] = n.user
            env[f"SPARK{n.index}_PORT"] = str(n.port)
        return env

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        for ns in self._netns:
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
        if self._bridge:
            subprocess.run(["ip", "link", "delete", self._bridge], check=False, capture_output=True)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run simulated DGX Sparks (real sshd) until Ctrl-C.")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--env-file", type=Path, help="write the app's SPARK*/SSH_* variables here")
    parser.add_argument("--port", type=int, default=2222, help="sshd port on every node address")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("sparksim needs root (it creates users and starts sshd).", file=sys.stderr)
        return 2
    cluster = SimCluster(args.nodes, fixed_port=args.port)
    try:
        cluster.start()
        env = cluster.app_env()
        if args.env_file:
            args.env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
        for n in cluster.nodes:
            print(f"sparksim: {n.name} is {n.user}@{n.address}:{n.port}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
