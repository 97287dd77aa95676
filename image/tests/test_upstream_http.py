"""The gateway's upstream HTTP/1.1 client against real sockets: framing split at every byte,
keep-alive reuse, a stale keep-alive connection retried once, errors named like httpx's."""

from __future__ import annotations

import asyncio

import pytest

from app.upstream_http import ConnectError, ReadTimeout, RemoteProtocolError, UpstreamPool

CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
           b"f\r\ndata: {\"a\":1}\n\n\r\n"
           b"7;ext=1\r\ndata: x\r\n"
           b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
CHUNKED_BODY = b"data: {\"a\":1}\n\ndata: xdata: [DONE]\n\n"


class ScriptedServer:
    """Answers each request on a connection with the next scripted reply, written in pieces."""

    def __init__(self, replies: list[bytes], piece: int | None = None, close_after_each: bool = False,
                 silent: bool = False, answers_per_connection: int | None = None) -> None:
        self.replies, self.piece, self.close_after_each, self.silent = replies, piece, close_after_each, silent
        self.answers_per_connection = answers_per_connection
        self.connections = 0
        self.requests: list[bytes] = []
        self.eof = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                if answered == self.answers_per_connection:
                    return   # the keep-alive race: the request arrives as the server drops the connection
                answered += 1
                self.requests.append(head + body)
                if self.silent:
                    await reader.read()   # never answers; returns at the client's EOF
                    self.eof.set()
                    return
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                step = self.piece or len(reply)
                for i in range(0, len(reply), step):
                    writer.write(reply[i:i + step])
                    await writer.drain()
                    if self.piece:
                        await asyncio.sleep(0)
                if self.close_after_each:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


async def _body(pool: UpstreamPool, url: str, timeout: float | None = 5.0) -> tuple[int, bytes]:
    response = await pool.post(url, "/v1/chat/completions", b'{"model":"m"}', read_timeout_s=timeout)
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


@pytest.mark.parametrize("piece", [1, 2, 3, 7, None])
async def test_chunked_body_whatever_the_read_boundaries(piece):
    pool = UpstreamPool()
    async with ScriptedServer([CHUNKED], piece=piece) as url:
        assert await _body(pool, url) == (200, CHUNKED_BODY)
    await pool.aclose()


async def test_keep_alive_reuses_one_connection_and_sends_a_proper_request():
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"])
    pool = UpstreamPool()
    async with server as url:
        for _ in range(3):
            assert await _body(pool, url) == (200, b"ok")
    await pool.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and first.endswith(b'\r\n\r\n{"model":"m"}')
    assert b"host: 127.0.0.1:" in first and b"content-length: 13\r\n" in first


async def test_a_base_url_path_prefix_is_kept():
    server = ScriptedServer([b"HTTP/1.1 204 No Content\r\n\r\n"])
    pool = UpstreamPool()
    async with server as url:
        assert await _body(pool, url + "/prefix/") == (204, b"")
    await pool.aclose()
    assert server.requests[0].startswith(b"POST /prefix/v1/chat/completions ")


async def test_a_body_without_length_ends_at_close_and_the_connection_is_not_reused():
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\n\r\nuntil close"], close_after_each=True)
    pool = UpstreamPool()
    async with server as url:
        assert await _body(pool, url) == (200, b"until close")
        assert await _body(pool, url) == (200, b"until close")
    await pool.aclose()
    assert server.connections == 2


async def test_a_keep_alive_connection_the_server_dropped_is_retried_once_on_a_new_one():
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], answers_per_connection=1)
    pool = UpstreamPool()
    async with server as url:
        for _ in range(3):
            assert await _body(pool, url) == (200, b"ok")
    await pool.aclose()
    assert server.connections == 3 and len(server.requests) == 3


async def test_a_connection_that_fails_without_an_answer_twice_is_an_error():
    server = ScriptedServer([b""], answers_per_connection=0)
    pool = UpstreamPool()
    async with server as url:
        with pytest.raises(RemoteProtocolError):
            await _body(pool, url)
    await pool.aclose()
    assert server.connections == 1, "a new connection that fails is not retried"


async def test_a_stream_cut_midway_raises_remote_protocol_error():
    cut = CHUNKED[:CHUNKED.index(b"7;ext")]
    pool = UpstreamPool()
    async with ScriptedServer([cut], close_after_each=True) as url:
        response = await pool.post(url, "/x", b"{}", read_timeout_s=None)
        got = []
        with pytest.raises(RemoteProtocolError):
            async for piece in response.aiter_raw():
                got.append(piece)
        await response.aclose()
    assert b"".join(got) == b"data: {\"a\":1}\n\n"
    await pool.aclose()


async def test_closing_a_response_early_closes_the_connection():
    server = ScriptedServer([CHUNKED[:CHUNKED.index(b"0\r\n\r\n")]])   # never ends
    pool = UpstreamPool()
    async with server as url:
        response = await pool.post(url, "/x", b"{}", read_timeout_s=None)
        async for _ in response.aiter_raw():
            break
        await response.aclose()
        await asyncio.wait_for(server.eof.wait(), 5)
    await pool.aclose()
    assert not any(pool._idle.values())


async def test_errors_are_named_like_httpx():
    pool = UpstreamPool(connect_timeout_s=1)
    with pytest.raises(ConnectError):
        await _body(pool, "http://127.0.0.1:1")
    server = ScriptedServer([], silent=True)
    async with server as url:
        with pytest.raises(ReadTimeout):
            await _body(pool, url, timeout=0.2)
    await pool.aclose()


async def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte():
    big = b"x" * (3 * 1024 * 1024)
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big
    pool = UpstreamPool()
    async with ScriptedServer([reply]) as url:
        response = await pool.post(url, "/x", b"{}", read_timeout_s=5)
        received, most_buffered = 0, 0
        async for piece in response.aiter_raw():
            received += len(piece)
            most_buffered = max(most_buffered, len(piece))
            await asyncio.sleep(0.001)
        await response.aclose()
    await pool.aclose()
    assert received == len(big)
    assert most_buffered < 1024 * 1024, "read-ahead must stay bounded while the reader is slow"
