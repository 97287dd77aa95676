"""A cluster of simulated Sparks, and the settings an app needs to reach it.

    python -m sparksim.cluster --nodes 2 --env-file /tmp/sparks.env

starts Spark 1 on 127.0.0.2 and Spark 2 on 127.0.0.3 (real sshd each), writes the SPARK{n}_*
/ SSH_* variables for spark-control to the env file, and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparksim.node import SimNode, free_port, install_tools, run

_NETNS_SUBNET = "10.213"  # private addresses inside this machine's own namespaces only


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
    def __init__(self, n_nodes: int = 2, base: Path | None = None, netns_nodes: tuple[int, ...] = (),
                 fixed_port: int | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="sparksim-", dir="/tmp"))
        self._own_base = base is None
        self.netns_nodes = netns_nodes
        self.nodes: list[SimNode] = []
        self._netns: list[str] = []
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
        for i in range(1, self.n_nodes + 1):
            if i in self.netns_nodes:
                address, netns = self._make_netns(i), f"sparksim{os.getpid()}n{i}"
            else:
                address, netns = f"127.0.0.{i + 1}", None
            port = self.fixed_port or (2222 if netns else free_port(address))
            node = SimNode(i, self.base, address, port, netns=netns, tag=self.base.name.rsplit("-", 1)[-1][:8])
            node.prepare(public_key)
            node.start()
            self.nodes.append(node)
        self.known_hosts.write_text("".join(n.host_key_line() for n in self.nodes))
        return self

    def _make_netns(self, i: int) -> str:
        """A namespace with a veth to the host: the node is 10.213.i.2, the host side 10.213.i.1."""
        ns = f"sparksim{os.getpid()}n{i}"
        host_if, node_if = f"scv{os.getpid() % 10000}n{i}", "eth0"
        run(["ip", "netns", "add", ns])
        self._netns.append(ns)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if, "netns", ns])
        run(["ip", "addr", "add", f"{_NETNS_SUBNET}.{i}.1/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{_NETNS_SUBNET}.{i}.2/30", "dev", node_if])
        run(["ip", "-n", ns, "link", "set", node_if, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return f"{_NETNS_SUBNET}.{i}.2"

    def node(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)

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
