"""A small OpenAI-shaped model server for load and fault tests, run as its own process:

    python raw_upstream.py PORT SERVED_NAME TOKENS PACE_S

Streams `TOKENS` chat chunks `PACE_S` apart (or answers them at once when not streamed), on
asyncio streams with no framework, so that in a load test the gateway, not this server, is what
is measured. Prints "ready" once listening.
"""

from __future__ import annotations

import asyncio
import json
import sys


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: str, tokens: int,
                 pace_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if head.startswith(b"GET /v1/models") or head.startswith(b"GET /health"):
                payload = json.dumps({"object": "list", "data": [{"id": served, "object": "model"}]}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                continue
            words = [f"w{i} " for i in range(tokens)]
            if not body.get("stream"):
                payload = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": served,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "".join(words)}}],
                                      "usage": {"prompt_tokens": 3, "completion_tokens": tokens,
                                                "total_tokens": 3 + tokens}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                continue
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for word in words:
                await asyncio.sleep(pace_s)
                event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": served,
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                writer.write(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
                await writer.drain()
            writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, served: str, tokens: int, pace_s: float) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(r, w, served, tokens, pace_s), "127.0.0.1", port,
                                        backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
