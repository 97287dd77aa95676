"""The gateway's HTTP/1.1 client for model servers: keep-alive connections, bytes relayed as read.

Why not httpx here: the gateway's cost per request is what it adds to every token an app
receives, and measured on this project's machines (bench/proxy_overhead.py) httpx spent
about 1 ms of CPU per relayed request, most of it in its connection pool (which scans every
pooled connection, with a socket poll each, on every request: it grows with concurrency) and
in anyio reads (a selector registration per read, a cancel scope per read). This client does
only what the relay needs: POST a body, read the status and headers, then hand over the body
as it arrives (chunked, content-length or until close), with per-phase timeouts and flow
control. httpx stays for everything else (readiness checks, the lifecycle).

Semantics the gateway relies on:
  - one connection per request in flight, reused (LIFO) when the response was read to its end;
    idle connections are dropped after `keepalive_expiry_s`, before a vLLM (uvicorn, 5 s)
    closes them under us;
  - a reused connection that the server had already closed (no byte of a response came back)
    is retried once on a new connection; nothing else is retried;
  - closing a response before its end closes the connection: the model server sees the
    client go away and stops generating;
  - errors are UpstreamError subclasses named like httpx's (ConnectError, ConnectTimeout,
    ReadTimeout, RemoteProtocolError), since the gateway puts the name in its messages.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class UpstreamError(Exception):
    """The model server could not be reached or broke the HTTP exchange."""


class ConnectError(UpstreamError):
    pass


class ConnectTimeout(UpstreamError):
    pass


class ReadTimeout(UpstreamError):
    pass


class RemoteProtocolError(UpstreamError):
    pass


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)
_MAX_HEAD_BYTES = 64 * 1024
_HIGH_WATER = 256 * 1024   # body bytes read ahead of a slow client before the socket is paused
_LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """One TCP connection and the response being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.in_use = False
        self._waiter: asyncio.Future | None = None
        self._prepare()

    def _prepare(self) -> None:
        self.buf = b""
        self.state = _HEAD
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_ready = False
        self.remaining = 0
        self.keep_alive = True
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.no_body = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.in_use:
            if self.state == _UNTIL_CLOSE:
                self.state = _DONE
            elif self.state != _DONE and self.error is None:
                self.error = RemoteProtocolError("the server closed the connection before the response ended"
                                                 if self.got_bytes else "the server closed the connection "
                                                                        "without sending a response")
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.in_use or self.state == _DONE:
            self.transport.close()  # bytes nobody asked for: this connection is not to be trusted
            return
        self.got_bytes = True
        try:
            self._parse(self.buf + data if self.buf else data)
        except (ValueError, IndexError) as exc:
            self.error = RemoteProtocolError(f"unparsable HTTP response: {exc}")
            self.keep_alive = False
            self.transport.close()
        if self.buffered > _HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        return None  # close the transport; connection_lost reports the end

    # -- parsing -------------------------------------------------------------------------------
    def _body(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.buffered += len(piece)

    def _parse(self, buf: bytes) -> None:
        while buf:
            state = self.state
            if state == _CHUNK_DATA:
                if len(buf) <= self.remaining:
                    self._body(buf)
                    self.remaining -= len(buf)
                    buf = b""
                else:
                    self._body(buf[:self.remaining])
                    buf = buf[self.remaining:]
                    self.remaining = 0
                if self.remaining == 0:
                    self.state = _CHUNK_CRLF
            elif state == _CHUNK_SIZE or state == _CHUNK_CRLF or state == _TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD_BYTES:
                        raise ValueError("chunk header too long")
                    break
                line, buf = buf[:end], buf[end + 2:]
                if state == _CHUNK_CRLF:
                    if line:
                        raise ValueError("chunk not followed by CRLF")
                    self.state = _CHUNK_SIZE
                elif state == _CHUNK_SIZE:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size:
                        self.state, self.remaining = _CHUNK_DATA, size
                    else:
                        self.state = _TRAILERS
                elif not line:          # the blank line after the (usually absent) trailers
                    self.state = _DONE
            elif state == _LENGTH:
                if len(buf) <= self.remaining:
                    self._body(buf)
                    self.remaining -= len(buf)
                    buf = b""
                else:
                    raise ValueError("more bytes than Content-Length")
                if self.remaining == 0:
                    self.state = _DONE
            elif state == _UNTIL_CLOSE:
                self._body(buf)
                buf = b""
            elif state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD_BYTES:
                        raise ValueError("response head too long")
                    break
                head, buf = buf[:end], buf[end + 4:]
                self._head(head)
            else:  # _DONE and bytes remain: a server that sent more than one response
                raise ValueError("bytes after the end of the response")
        self.buf = buf

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, status, *_ = lines[0].split(b" ", 2)
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:40]!r}")
        status = int(status)
        if 100 <= status < 200:   # 100 Continue and friends: the real head follows
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self.status, self.headers, self.head_ready = status, headers, True
        connection = headers.get("connection", "").lower()
        if "close" in connection or (version == b"HTTP/1.0" and "keep-alive" not in connection):
            self.keep_alive = False
        if self.no_body or status in (204, 304):
            self.state = _DONE
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNK_SIZE
        elif "content-length" in headers:
            self.remaining = int(headers["content-length"])
            self.state = _LENGTH if self.remaining else _DONE
        else:
            self.state, self.keep_alive = _UNTIL_CLOSE, False

    # -- waiting -------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout_s: float | None) -> None:
        """Until more of the response has arrived (or it ended, or failed)."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout_s, self._timed_out, waiter) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _timed_out(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(ReadTimeout("no data from the server in time"))

    def take(self) -> bytes:
        """Everything read so far, resuming a paused socket."""
        data = self.pieces.popleft() if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces.clear()
        self.buffered = 0
        if self.paused and not self.lost:
            self.paused = False
            self.transport.resume_reading()
        return data


class UpstreamResponse:
    """A response whose body is still on the wire: read it with aread() or aiter_raw(), then aclose()."""

    def __init__(self, pool: UpstreamPool, key: tuple, conn: _Connection, read_timeout_s: float | None) -> None:
        self._pool, self._key, self._conn, self._read_timeout_s = pool, key, conn, read_timeout_s
        self.status_code = conn.status
        self.headers = conn.headers
        self._closed = False

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed), one piece per read from the socket."""
        conn = self._conn
        while True:
            if conn.pieces:
                yield conn.take()
                continue
            if conn.state == _DONE:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._read_timeout_s)

    async def aread(self) -> bytes:
        parts = [piece async for piece in self.aiter_raw()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        conn.in_use = False
        if conn.state == _DONE and conn.keep_alive and not conn.lost and not conn.buf and conn.error is None:
            self._pool._release(self._key, conn)
        else:
            conn.transport.close()


class UpstreamPool:
    """Keep-alive connections per (scheme, host, port); no limit on connections in use."""

    def __init__(self, *, connect_timeout_s: float = 3.0, keepalive_expiry_s: float = 4.0,
                 max_idle_per_origin: int = 1024, user_agent: str = "spark-control") -> None:
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_expiry_s = keepalive_expiry_s
        self.max_idle_per_origin = max_idle_per_origin
        self.user_agent = user_agent
        self._idle: dict[tuple, list[_Connection]] = {}
        self._origins: dict[str, tuple] = {}
        self._ssl: ssl.SSLContext | None = None

    def _origin(self, base_url: str) -> tuple:
        origin = self._origins.get(base_url)
        if origin is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConnectError(f"not an http(s) URL: {base_url!r}")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            host = parts.hostname
            host_header = f"[{host}]" if ":" in host else host
            if parts.port:
                host_header += f":{port}"
            origin = (tls, host, port, host_header.encode("idna"), parts.path.rstrip("/").encode())
            self._origins[base_url] = origin
        return origin

    async def post(self, base_url: str, path: str, body: bytes, *, read_timeout_s: float | None,
                   content_type: bytes = b"application/json") -> UpstreamResponse:
        """Send the request; returns once the status and headers are in (the body follows)."""
        origin = self._origin(base_url)
        tls, _, _, host_header, prefix = origin
        request = b"".join((
            b"POST ", prefix, path.encode(), b" HTTP/1.1\r\nhost: ", host_header,
            b"\r\ncontent-type: ", content_type, b"\r\naccept: */*\r\nuser-agent: ", self.user_agent.encode(),
            b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        for attempt in (1, 2):
            conn = self._acquire(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin)
            conn._prepare()
            conn.in_use = True
            conn.transport.write(request)
            try:
                while not conn.head_ready:
                    if conn.error is not None:
                        raise conn.error
                    if conn.lost:   # closed before this request was even written
                        raise RemoteProtocolError("the server closed the connection without sending a response")
                    await conn.wait(read_timeout_s)
            except BaseException as exc:
                conn.in_use = False
                conn.transport.close()
                if isinstance(exc, RemoteProtocolError) and reused and not conn.got_bytes and attempt == 1:
                    continue   # a keep-alive connection the server had closed: once more, on a new one
                raise
            return UpstreamResponse(self, origin, conn, read_timeout_s)
        raise AssertionError("unreachable")

    def _acquire(self, origin: tuple) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        # The oldest idle connection expires first: drop it while we are here (amortised cleanup).
        if now - idle[0].idle_since > self.keepalive_expiry_s or idle[0].lost:
            idle.pop(0).transport.close()
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since <= self.keepalive_expiry_s:
                return conn
            conn.transport.close()
        return None

    def _release(self, origin: tuple, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.transport.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    async def _connect(self, origin: tuple) -> _Connection:
        tls, host, port, _, _ = origin
        loop = asyncio.get_running_loop()
        context = None
        if tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port, ssl=context), self.connect_timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            raise ConnectTimeout(f"no connection to {host}:{port} within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.transport.close()
        self._idle.clear()
