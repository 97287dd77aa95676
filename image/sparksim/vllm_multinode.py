"""vLLM's native multi-node launch (`--nnodes N --node-rank r --master-addr A --master-port P`),
as a small TCP rendezvous standing in for torch.distributed + NCCL.

The head (rank 0) listens on its node's address at the master port, like torch's TCPStore;
each worker (rank >= 1, `--headless`) connects to master-addr:master-port, retrying until the
join timeout. They exchange one JSON object per line:

    worker -> head   {"hello": {"node_rank", "model", "tp", "pp", "nnodes", "node"}}
    head -> worker   {"ok": true} | {"error": "..."}
    worker -> head   {"loaded": true} | {"error": "..."}      (after loading its shard)
    both             {"ping": <time>} every second; {"shutdown": true} on a graceful stop

A peer whose connection closes, or that stays silent longer than the peer timeout, is gone:
the other side fails with an NCCL-like error, as a real TP group does.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable

PING_SECONDS = 1.0


def peer_timeout() -> float:
    return float(os.environ.get("SPARKSIM_PEER_TIMEOUT", "15"))


def join_timeout() -> float:
    return float(os.environ.get("SPARKSIM_JOIN_TIMEOUT", "120"))


class PeerGone(Exception):
    pass


class Link:
    """One line-delimited JSON connection to a peer."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock = sock
        self.name = name
        self.sock.settimeout(None)
        self.reader = sock.makefile("r", encoding="utf-8", newline="\n")
        self.send_lock = threading.Lock()
        self.last_heard = time.monotonic()
        self.closed = False

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise PeerGone(str(exc)) from exc

    def receive(self, timeout: float | None = None) -> dict:
        """Next message other than a ping. Raises PeerGone on EOF, error or timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerGone("timed out")
                self.sock.settimeout(remaining)
            try:
                line = self.reader.readline()
            except (OSError, ValueError) as exc:
                raise PeerGone(str(exc) or "timed out") from exc
            finally:
                self.sock.settimeout(None)
            if not line:
                raise PeerGone("Connection closed by remote peer")
            self.last_heard = time.monotonic()
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "ping" not in message:
                return message

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def watch(link: Link, on_message: Callable[[dict], None], on_gone: Callable[[str], None],
          stopping: threading.Event) -> None:
    """Background: ping the peer every second, hand its messages over, report when it is gone."""

    def pinger() -> None:
        while not stopping.is_set() and not link.closed:
            try:
                link.send({"ping": time.time()})
            except PeerGone:
                return
            if time.monotonic() - link.last_heard > peer_timeout():
                if not stopping.is_set() and not link.closed:
                    on_gone(f"no message from {link.name} for {peer_timeout():.0f} s")
                return
            stopping.wait(PING_SECONDS)

    def reader() -> None:
        while not stopping.is_set():
            try:
                message = link.receive()
            except PeerGone as exc:
                if not stopping.is_set() and not link.closed:
                    on_gone(str(exc))
                return
            on_message(message)

    threading.Thread(target=pinger, daemon=True, name=f"ping-{link.name}").start()
    threading.Thread(target=reader, daemon=True, name=f"read-{link.name}").start()


class Head:
    """Rank 0: listens, admits nnodes-1 workers whose launch matches its own."""

    def __init__(self, bind_addr: str, port: int, expected: dict):
        self.expected = expected
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind_addr, port))  # OSError: the caller reports it like torch does
        self.listener.listen(16)
        self.links: dict[int, Link] = {}

    def admit(self, workers: int, deadline: float, stopping: threading.Event) -> None:
        """Wait for `workers` workers; raises TimeoutError (with the count) or ValueError."""
        self.listener.settimeout(0.2)
        while len(self.links) < workers:
            if stopping.is_set():
                raise InterruptedError
            if time.monotonic() > deadline:
                raise TimeoutError(len(self.links))
            try:
                sock, address = self.listener.accept()
            except socket.timeout:
                continue
            link = Link(sock, f"{address[0]}:{address[1]}")
            try:
                hello = link.receive(timeout=10).get("hello") or {}
            except PeerGone:
                link.close()
                continue
            problem = self._mismatch(hello)
            if problem:
                try:
                    link.send({"error": problem})
                finally:
                    link.close()
                raise ValueError(problem)
            link.name = f"rank {hello['node_rank']} ({hello.get('node') or address[0]})"
            link.send({"ok": True})
            self.links[hello["node_rank"]] = link
        self.listener.close()

    def _mismatch(self, hello: dict) -> str | None:
        rank = hello.get("node_rank")
        if not isinstance(rank, int) or not 1 <= rank < self.expected["nnodes"]:
            return f"node_rank {rank} is not valid for nnodes={self.expected['nnodes']}"
        if rank in self.links:
            return f"two workers claim node_rank {rank}"
        for key in ("model", "tp", "pp", "nnodes"):
            if hello.get(key) != self.expected[key]:
                return (f"worker rank {rank} was launched with {key}={hello.get(key)!r} but the head has "
                        f"{key}={self.expected[key]!r}")
        return None

    def close(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass
        for link in self.links.values():
            link.close()


def connect(master_addr: str, port: int, hello: dict, deadline: float, stopping: threading.Event) -> Link:
    """Worker side: connect (retrying until the deadline), say hello, wait for the head's answer.
    Raises TimeoutError if the head never answered, ValueError if it refused us."""
    while True:
        if stopping.is_set():
            raise InterruptedError
        try:
            sock = socket.create_connection((master_addr, port), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError from None
            stopping.wait(0.2)
    link = Link(sock, f"head {master_addr}:{port}")
    link.send({"hello": hello})
    try:
        answer = link.receive(timeout=max(1.0, deadline - time.monotonic()))
    except PeerGone as exc:
        link.close()
        raise TimeoutError from exc
    if answer.get("error"):
        link.close()
        raise ValueError(answer["error"])
    return link
