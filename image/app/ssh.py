"""Running commands on the Sparks: one persistent SSH connection per node.

Why a pool: a command over an open asyncssh connection takes ~2.5 ms, a new `ssh` process
~270 ms (FACTS.md). Each `SSHNode` owns one connection, opened on first use, kept alive with
SSH keepalives (a dead node is noticed in ~interval x count seconds) and reopened with
exponential backoff after it drops. `LocalNode` is the same interface for a node that is this
machine.

This module is the ONE boundary where asyncssh, OSError and timeouts become the project's
errors (app/errors.py). Callers pass commands that are already safe: user values must have
gone through app/shellsafe.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

import asyncssh

from app.errors import (
    ConfigError,
    NodeError,
    NodeTimeout,
    NodeUnreachable,
    NotFound,
    RemoteCommandFailed,
)
from app.settings import NodeConfig, Settings

_BACKOFF_FIRST_S = 0.5
# Below OpenSSH's default MaxSessions (10), leaving room for followed logs and download jobs.
_MAX_CONCURRENT_COMMANDS = 6
_BACKOFF_MAX_S = 8.0  # capped so a revived node is back within a probe or two
_SESSION_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8)  # a refused session, opened again (1.55 s in all)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float


class Node(Protocol):
    name: str

    async def run(self, command: str, *, timeout: float | None = None, check: bool = True,
                  input: str | None = None) -> CommandResult: ...

    def stream(self, command: str) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


def _finish(node: str, command: str, exit_status: int | None, stdout: str, stderr: str,
            started: float, check: bool) -> CommandResult:
    """Shared by both transports: exit_status None means the channel died before an exit code."""
    if exit_status is None:
        raise NodeUnreachable(f"{node}: the connection was lost while running a command", node=node)
    result = CommandResult(exit_status, stdout, stderr, time.monotonic() - started)
    if check and exit_status != 0:
        first_word = command.split(None, 1)[0] if command.strip() else command
        # The last lines, not just the last: docker ends with "See 'docker run --help'." after the reason.
        lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
        detail = " / ".join(lines[-3:])[-400:]
        raise RemoteCommandFailed(
            f"{node}: `{first_word} ...` exited with status {exit_status}: {detail}",
            node=node, exit_status=exit_status, stderr=stderr,
        )
    return result


class _HostKeyRecorder(asyncssh.SSHClient):
    """Remembers the key a server offered, so a refusal can name its fingerprint."""

    def __init__(self, node: "SSHNode") -> None:
        self._node = node

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        self._node.offered_fingerprint = key.get_fingerprint("sha256")
        return False  # only keys in known_hosts are trusted

    def connection_lost(self, exc: Exception | None) -> None:
        self._node._on_connection_lost(exc)


class SSHNode:
    """One Spark reached over SSH. Safe to call `run` concurrently (one channel per call)."""

    def __init__(self, config: NodeConfig, settings: Settings) -> None:
        self.name = config.name
        self.config = config
        self._settings = settings
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._command_slots = asyncio.Semaphore(_MAX_CONCURRENT_COMMANDS)
        self._backoff_s = 0.0
        self._next_attempt_at = 0.0
        self.last_error: str | None = None
        self.offered_fingerprint: str | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _on_connection_lost(self, exc: Exception | None) -> None:
        self._conn = None
        if exc is not None:
            self.last_error = f"connection lost: {exc}"

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is not None:
            return self._conn
        async with self._connect_lock:
            if self._conn is not None:
                return self._conn
            wait = self._next_attempt_at - time.monotonic()
            if wait > 0:
                # Backing off: answer at once with the last reason instead of piling up connects.
                raise NodeUnreachable(f"{self.name}: {self.last_error or 'unreachable'}", node=self.name)
            try:
                self._conn = await self._open()
            except NodeError as exc:
                self.last_error = exc.message.removeprefix(f"{self.name}: ")
                self._backoff_s = min(_BACKOFF_MAX_S, max(_BACKOFF_FIRST_S, self._backoff_s * 2))
                self._next_attempt_at = time.monotonic() + self._backoff_s
                raise
            self._backoff_s = 0.0
            self.last_error = None
            return self._conn

    async def _open(self) -> asyncssh.SSHClientConnection:
        cfg, s = self.config, self._settings
        known_hosts = s.known_hosts_path
        where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        if not known_hosts.is_file():
            raise ConfigError(
                f"{self.name}: SSH_KNOWN_HOSTS file {known_hosts} does not exist; add the node's host key "
                f"(ssh-keyscan -p {cfg.port} {cfg.host} >> {known_hosts}) after checking its fingerprint")
        keys = [str(s.ssh_key_path)] if s.ssh_key_path else ()
        if s.ssh_key_path and not s.ssh_key_path.is_file():
            raise ConfigError(f"SSH_KEY_PATH {s.ssh_key_path} does not exist or is not a file")
        self.offered_fingerprint = None
        try:
            conn, _client = await asyncio.wait_for(
                asyncssh.create_connection(
                    lambda: _HostKeyRecorder(self), cfg.host, port=cfg.port, username=cfg.user,
                    known_hosts=str(known_hosts), client_keys=keys or None,
                    agent_path=None, password=None, kbdint_auth=False,
                    keepalive_interval=s.ssh_keepalive_interval_s,
                    keepalive_count_max=s.ssh_keepalive_count,
                    connect_timeout=s.ssh_connect_timeout_s,
                ),
                timeout=s.ssh_connect_timeout_s + 1,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            fp = self.offered_fingerprint or "unknown"
            raise NodeUnreachable(
                f"{self.name}: host key of {cfg.host}:{cfg.port} is not trusted (offered {fp}); "
                f"it is not in {known_hosts}. Verify the fingerprint on the node, then add it "
                f"(ssh-keyscan -p {cfg.port} {cfg.host} >> {known_hosts})", node=self.name) from exc
        except asyncssh.PermissionDenied as exc:
            raise NodeUnreachable(f"{self.name}: {where} refused the key: {exc.reason}", node=self.name) from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise NodeUnreachable(f"{self.name}: no answer from {where} within "
                                  f"{s.ssh_connect_timeout_s:g} s", node=self.name) from exc
        except (OSError, asyncssh.Error) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) else getattr(exc, "reason", "")) or str(exc)
            raise NodeUnreachable(f"{self.name}: cannot connect to {where}: {reason}",
                                  node=self.name) from exc
        return conn

    async def run(self, command: str, *, timeout: float | None = None, check: bool = True,
                  input: str | None = None) -> CommandResult:
        timeout = timeout or self._settings.ssh_command_timeout_s
        started = time.monotonic()
        conn = await self._connection()
        try:
            # sshd refuses more than MaxSessions (10 by default) channels on one connection: short
            # commands queue for a slot here instead (long-lived streams are not counted).
            async with self._command_slots:
                result = await self._run_in_session(conn, command, input, started + timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise NodeTimeout(f"{self.name}: no answer within {timeout:g} s", node=self.name) from exc
        except asyncssh.ChannelOpenError as exc:  # the connection is fine; this one channel was refused
            raise NodeUnreachable(f"{self.name}: the node refused a new SSH session ({exc.reason}); "
                                  "check MaxSessions in its sshd_config", node=self.name) from exc
        except (OSError, asyncssh.Error) as exc:
            self._conn = None
            self.last_error = f"connection lost: {exc}"
            raise NodeUnreachable(f"{self.name}: {self.last_error}", node=self.name) from exc
        return _finish(self.name, command, result.exit_status, _text(result.stdout), _text(result.stderr),
                       started, check)

    @staticmethod
    async def _run_in_session(conn: asyncssh.SSHClientConnection, command: str, input: str | None,
                              deadline: float) -> asyncssh.SSHCompletedProcess:
        """conn.run in a new session, opened again a few times if sshd refuses it: a busy sshd frees
        a finished command's session slot a moment after the client sees it end, so a burst of
        short commands can briefly find MaxSessions taken. Nothing ran on a refused session, so
        opening it again cannot run the command twice."""
        def attempt() -> Awaitable[asyncssh.SSHCompletedProcess]:
            # errors="replace": output cut at a byte offset (a job log read in pieces) can split a
            # UTF-8 character; a strict decode would be a protocol error that drops the connection.
            return asyncio.wait_for(conn.run(command, check=False, input=input, errors="replace"),
                                    timeout=max(0.001, deadline - time.monotonic()))

        for delay in _SESSION_RETRY_DELAYS_S:
            try:
                return await attempt()
            except asyncssh.ChannelOpenError:
                if time.monotonic() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
        return await attempt()

    async def stream(self, command: str) -> AsyncIterator[str]:
        """Yield the command's output line by line as it arrives (stdout and stderr merged),
        e.g. `docker logs -f`. Closing the iterator closes the channel, which ends the command."""
        conn = await self._connection()
        try:
            process = await conn.create_process(command, stderr=asyncssh.STDOUT)
        except (OSError, asyncssh.Error) as exc:
            raise NodeUnreachable(f"{self.name}: cannot start a command: {exc}", node=self.name) from exc
        try:
            async for line in process.stdout:
                yield line
        except (OSError, asyncssh.Error) as exc:
            raise NodeUnreachable(f"{self.name}: connection lost: {exc}", node=self.name) from exc
        finally:
            process.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), timeout=2)
            except (asyncio.TimeoutError, TimeoutError, OSError, asyncssh.Error):
                pass


class LocalNode:
    """This machine, without SSH: the default inventory when no SPARK{n}_HOST is set."""

    def __init__(self, config: NodeConfig, settings: Settings) -> None:
        self.name = config.name
        self.config = config
        self._settings = settings
        self.last_error: str | None = None
        self.connected = True

    async def run(self, command: str, *, timeout: float | None = None, check: bool = True,
                  input: str | None = None) -> CommandResult:
        timeout = timeout or self._settings.ssh_command_timeout_s
        started = time.monotonic()
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None), timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            proc.kill()
            await proc.wait()
            raise NodeTimeout(f"{self.name}: no answer within {timeout:g} s", node=self.name) from exc
        return _finish(self.name, command, proc.returncode, _text(out), _text(err), started, check)

    async def stream(self, command: str) -> AsyncIterator[str]:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            async for line in proc.stdout:
                yield line.decode("utf-8", "replace")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def close(self) -> None:
        return None


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


class NodePool:
    """The inventory: name -> node. Owned by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.nodes: dict[str, Node] = {
            cfg.name: (LocalNode(cfg, settings) if cfg.is_local else SSHNode(cfg, settings))
            for cfg in settings.nodes
        }

    def get(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise NotFound(f"no node named {name!r}; configured nodes: {known}", field="node") from None

    async def run(self, node: str, command: str, **kwargs) -> CommandResult:
        return await self.get(node).run(command, **kwargs)

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes.values()), return_exceptions=True)


def fingerprint_of_public_key(path: Path) -> str:
    """SHA256 fingerprint, as `ssh-keygen -lf` prints it (used in messages and docs)."""
    return asyncssh.read_public_key(str(path)).get_fingerprint("sha256")
