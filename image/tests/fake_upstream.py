"""A small real OpenAI-compatible upstream for gateway tests: a real HTTP server on loopback
whose pacing and failures the test controls. Not a mock: the gateway talks to it over TCP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


class FakeUpstream:
    def __init__(self, served_name: str = "test-model") -> None:
        self.served_name = served_name
        self.chunk_delay_s = 0.0
        self.break_after: int | None = None     # drop the connection after this many chunks
        self.sent_at: list[float] = []          # when each chunk of the last stream was sent
        self.cancelled = threading.Event()      # set when a client went away mid-stream
        self.requests: list[dict] = []
        app = Starlette(routes=[
            Route("/health", lambda r: JSONResponse({})),
            Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._chat, methods=["POST"]),
        ])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "FakeUpstream":
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    async def _models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.served_name, "object": "model"}]})

    async def _chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        if body.get("model") != self.served_name:
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                           "type": "NotFoundError", "param": None, "code": 404}}, status_code=404)
        if "messages" in body and not body["messages"]:
            return JSONResponse({"error": {"message": "messages must not be empty", "type": "BadRequestError",
                                           "param": "messages", "code": 400}}, status_code=400)
        n = int(body.get("max_tokens") or 8)
        if not body.get("stream"):
            return JSONResponse({"id": "cmpl-1", "object": "chat.completion", "created": 1, "model": self.served_name,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": "tok " * n}}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}})
        return StreamingResponse(self._stream(n), media_type="text/event-stream")

    async def _stream(self, n: int):
        self.sent_at = []
        try:
            for i in range(n):
                if self.break_after is not None and i == self.break_after:
                    raise RuntimeError("upstream dies mid-stream")  # uvicorn drops the connection
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": self.served_name,
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                self.sent_at.append(time.monotonic())
                yield f"data: {json.dumps(chunk)}\n\n"
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
