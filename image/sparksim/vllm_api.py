"""The OpenAI-compatible HTTP side of the simulated vLLM (sparksim/vllm_server.py): vLLM's routes,
response shapes, error bodies and access log lines, on the standard library's HTTP server
(HTTP/1.1 keep-alive, chunked server-sent events for streams)."""

from __future__ import annotations

import json
import os
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import gpu_memory
from .vllm_metrics import RequestTimer

# ---- the HTTP side ----------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def version_string(self) -> str:
        return "uvicorn"

    def log_message(self, format: str, *args) -> None:  # our own access log instead
        pass

    def do_GET(self) -> None:
        self.server.app.dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.app.dispatch(self, "POST")

    def do_PUT(self) -> None:
        self.server.app.dispatch(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.app.dispatch(self, "DELETE")

    def do_HEAD(self) -> None:
        self.server.app.dispatch(self, "HEAD")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: "VllmServer"


class Response:
    """Helpers bound to one request."""

    def __init__(self, handler: Handler, app: "VllmServer"):
        self.h, self.app = handler, app
        self.status = 0

    def _access(self, status: int) -> None:
        self.status = status
        if self.app.log.access:
            host, port = self.h.client_address[:2]
            phrase = HTTPStatus(status).phrase
            self.app.log.raw("APIServer", f'INFO:     {host}:{port} - "{self.h.command} {self.h.path} '
                                          f'HTTP/1.1" {status} {phrase}')

    def send(self, status: int, body: bytes = b"", content_type: str | None = "application/json",
             headers: dict | None = None) -> None:
        self.h.send_response(status)
        if content_type and (body or status != 200):
            self.h.send_header("content-type", content_type)
        self.h.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            self.h.send_header(key, value)
        self.h.end_headers()
        if body and self.h.command != "HEAD":
            self.h.wfile.write(body)
        self._access(status)

    def json(self, status: int, obj) -> None:
        self.send(status, json.dumps(obj, separators=(",", ":")).encode())

    def error(self, status: int, message: str, err_type: str | None = None, param: str | None = None) -> None:
        err_type = err_type or {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError",
                                500: "InternalServerError"}.get(status, HTTPStatus(status).phrase.replace(" ", ""))
        self.json(status, {"error": {"message": message, "type": err_type, "param": param, "code": status}})

    def start_stream(self) -> None:
        self.h.send_response(200)
        self.h.send_header("content-type", "text/event-stream; charset=utf-8")
        self.h.send_header("transfer-encoding", "chunked")
        self.h.end_headers()
        self._access(200)

    def event(self, obj) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        self.chunk(f"data: {data}\n\n".encode())

    def chunk(self, data: bytes) -> None:
        self.h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.h.wfile.flush()

    def end_stream(self) -> None:
        self.h.wfile.write(b"0\r\n\r\n")
        self.h.wfile.flush()


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, err_type: str | None = None):
        super().__init__(message)
        self.status, self.err_type = status, err_type


class OpenAIApi:
    """The request handlers, mixed into VllmServer (which provides args, info, engine, metrics,
    ready, log, version, created and max_model_len)."""

    # -- requests --

    def dispatch(self, handler: Handler, method: str) -> None:
        response = Response(handler, self)
        path = handler.path.split("?", 1)[0]
        try:
            body = self._read_body(handler)
            route = ROUTES.get(path)
            if route is None:
                response.json(404, {"detail": "Not Found"})
                return
            if method not in route[0] and not (method == "HEAD" and "GET" in route[0]):
                response.json(405, {"detail": "Method Not Allowed"})
                return
            if path in ("/health", "/ping"):
                response.send(200 if self.ready.is_set() else 503, content_type=None)
                return
            if not self.ready.is_set():
                response.error(503, "The model is still loading.")
                return
            key = self.args.api_key or os.environ.get("VLLM_API_KEY")
            if key and path.startswith("/v1") and handler.headers.get("authorization") != f"Bearer {key}":
                response.json(401, {"error": "Unauthorized"})
                return
            getattr(self, route[1])(response, body)
        except BadRequest as exc:
            response.error(exc.status, str(exc), exc.err_type)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a handler bug must answer 500, not hang the client
            try:
                response.error(500, f"{type(exc).__name__}: {exc}")
            except OSError:
                handler.close_connection = True

    def _read_body(self, handler: Handler) -> dict | None:
        length = handler.headers.get("content-length")
        raw = b""
        if length:
            raw = handler.rfile.read(int(length))
        elif handler.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    break
                raw += handler.rfile.read(size)
                handler.rfile.readline()
        if handler.command != "POST":
            return None
        if handler.headers.get("content-type", "").startswith("multipart/form-data"):  # audio uploads
            return {"multipart": raw, "content_type": handler.headers["content-type"]}
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"JSON decode error: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("Input should be a valid dictionary")
        return body

    def _check_model(self, body: dict) -> str:
        names = self.args.served_model_name
        model = body.get("model")
        if model in (None, ""):
            return names[0]
        if model not in names:
            raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError")
        return model

    def h_version(self, r: Response, _body) -> None:
        r.json(200, {"version": self.version})

    def h_load(self, r: Response, _body) -> None:
        m = self.metrics
        r.json(200, {"server_load": m.running + m.waiting})

    def h_models(self, r: Response, _body) -> None:
        data = []
        for name in self.args.served_model_name:
            data.append({"id": name, "object": "model", "created": self.created, "owned_by": "vllm",
                         "root": self.args.model, "parent": None, "max_model_len": self.max_model_len,
                         "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                         "created": self.created, "allow_create_engine": False,
                                         "allow_sampling": True, "allow_logprobs": True,
                                         "allow_search_indices": False, "allow_view": True,
                                         "allow_fine_tuning": False, "organization": "*", "group": None,
                                         "is_blocking": False}]})
        r.json(200, {"object": "list", "data": data})

    def h_metrics(self, r: Response, _body) -> None:
        r.send(200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")

    def h_tokenize(self, r: Response, body: dict) -> None:
        self._check_model(body)
        if "messages" in body:
            tokens = self.engine.chat_prompt_tokens(body["messages"], body.get("add_generation_prompt", True))
        else:
            tokens = self.engine.tokenize(str(body.get("prompt", "")), add_bos=body.get("add_special_tokens", True))
        r.json(200, {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens,
                     "token_strs": None})

    def h_detokenize(self, r: Response, body: dict) -> None:
        self._check_model(body)
        r.json(200, {"prompt": self.engine.detokenize([int(t) for t in body.get("tokens", [])])})

    def _sampling(self, body: dict, prompt_len: int, chat: bool) -> dict:
        max_tokens = body.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = body.get("max_tokens", None if chat else 16)
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}.")
        if prompt_len >= self.max_model_len:
            raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                             f"request has {prompt_len} input tokens. Please reduce the length of the input messages.")
        if max_tokens is not None and prompt_len + max_tokens > self.max_model_len:
            raise BadRequest(f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                             f"maximum context length is {self.max_model_len} tokens and your request has "
                             f"{prompt_len} input tokens ({max_tokens} > {self.max_model_len} - {prompt_len}).")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        temperature = body.get("temperature")
        return {"max_tokens": max_tokens, "temperature": 1.0 if temperature is None else float(temperature),
                "top_p": float(body.get("top_p") if body.get("top_p") is not None else 1.0),
                "top_k": int(body.get("top_k") if body.get("top_k") is not None else -1),
                "min_p": float(body.get("min_p") or 0.0), "seed": body.get("seed"), "stop": list(stop),
                "repetition_penalty": float(body.get("repetition_penalty") or 1.0),
                "frequency_penalty": float(body.get("frequency_penalty") or 0.0),
                "presence_penalty": float(body.get("presence_penalty") or 0.0),
                "ignore_eos": bool(body.get("ignore_eos", False))}

    def _run(self, prompt_tokens: list[int], params: dict, on_text) -> "object":
        """Generate under the model lock, reporting metrics; on_text(piece) is called per piece."""
        from .vllm_engine import EngineError, Result

        result = Result()
        timer = RequestTimer(self.metrics, params["max_tokens"])
        reason = "abort"
        try:
            with self.engine.lock:
                timer.start(len(prompt_tokens))
                gpu_memory.set_gpu_util(96)
                try:
                    done = 0
                    for piece in self.engine.generate(prompt_tokens, result, **params):
                        timer.token(result.completion_tokens - done)
                        done = result.completion_tokens
                        on_text(piece)
                    if result.completion_tokens > done:
                        timer.token(result.completion_tokens - done)
                    reason = result.finish_reason or "stop"
                finally:
                    gpu_memory.set_gpu_util(0 if self.metrics.waiting == 0 else 96)
        except EngineError as exc:
            raise BadRequest(str(exc)) from None
        finally:
            timer.finish(reason)
        return result

    def _usage(self, prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
                "prompt_tokens_details": None}

    def h_chat(self, r: Response, body: dict) -> None:
        model = self._check_model(body)
        if self.info.task != "generate":
            raise BadRequest("The model does not support Chat Completions API")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]")
        prompt = self.engine.chat_prompt_tokens(messages, body.get("add_generation_prompt", True))
        params = self._sampling(body, len(prompt), chat=True)
        n = int(body.get("n") or 1)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            options = body.get("stream_options") or {}
            r.start_stream()

            def chunk(choices, usage=None):
                obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": choices}
                if usage is not None:
                    obj["usage"] = usage
                r.event(obj)

            total_prompt = total_completion = 0
            for index in range(n):
                chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None}])
                result = self._run(prompt, params, lambda text, i=index: chunk(
                    [{"index": i, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]))
                chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": result.finish_reason,
                        "stop_reason": result.stop_reason}])
                total_prompt, total_completion = result.prompt_tokens, total_completion + result.completion_tokens
            if options.get("include_usage") or self.args.enable_force_include_usage:
                chunk([], self._usage(total_prompt, total_completion))
            r.event("[DONE]")
            r.end_stream()
            return
        choices, completion_total, prompt_count = [], 0, len(prompt)
        for index in range(n):
            pieces: list[str] = []
            result = self._run(prompt, params, pieces.append)
            completion_total += result.completion_tokens
            choices.append({"index": index, "message": {"role": "assistant", "content": "".join(pieces),
                                                        "refusal": None, "annotations": None, "audio": None,
                                                        "function_call": None, "tool_calls": [],
                                                        "reasoning_content": None},
                            "logprobs": None, "finish_reason": result.finish_reason,
                            "stop_reason": result.stop_reason})
        r.json(200, {"id": rid, "object": "chat.completion", "created": created, "model": model,
                     "choices": choices, "service_tier": None, "system_fingerprint": None,
                     "usage": self._usage(prompt_count, completion_total), "prompt_logprobs": None,
                     "kv_transfer_params": None})

    def _completion_prompts(self, body: dict) -> list[list[int]]:
        prompt = body.get("prompt")
        if prompt is None:
            raise BadRequest("[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]")
        if isinstance(prompt, str):
            return [self.engine.tokenize(prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            return [prompt]
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return [self.engine.tokenize(p) for p in prompt]
        if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            return [[int(t) for t in p] for p in prompt]
        raise BadRequest("Either prompt or prompt_embeds must be provided and non-empty.")

    def h_completions(self, r: Response, body: dict) -> None:
        model = self._check_model(body)
        if self.info.task != "generate":
            raise BadRequest("The model does not support Completions API")
        prompts = self._completion_prompts(body)
        params_list = [self._sampling(body, len(p), chat=False) for p in prompts]
        n = int(body.get("n") or 1)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        echo = bool(body.get("echo"))
        jobs = [(i * n + k, p, params) for i, (p, params) in enumerate(zip(prompts, params_list)) for k in range(n)]
        if body.get("stream"):
            options = body.get("stream_options") or {}
            r.start_stream()

            def chunk(choices, usage=None):
                obj = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
                if usage is not None:
                    obj["usage"] = usage
                r.event(obj)

            prompt_total = completion_total = 0
            for index, tokens, params in jobs:
                if echo:
                    chunk([{"index": index, "text": self.engine.detokenize(tokens), "logprobs": None,
                            "finish_reason": None, "stop_reason": None}])
                result = self._run(tokens, params, lambda text, i=index: chunk(
                    [{"index": i, "text": text, "logprobs": None, "finish_reason": None, "stop_reason": None}]))
                chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": result.finish_reason,
                        "stop_reason": result.stop_reason}])
                prompt_total += result.prompt_tokens
                completion_total += result.completion_tokens
            if options.get("include_usage") or self.args.enable_force_include_usage:
                chunk([], self._usage(prompt_total, completion_total))
            r.event("[DONE]")
            r.end_stream()
            return
        choices, prompt_total, completion_total = [], 0, 0
        for index, tokens, params in jobs:
            pieces: list[str] = [self.engine.detokenize(tokens)] if echo else []
            result = self._run(tokens, params, pieces.append)
            prompt_total += result.prompt_tokens
            completion_total += result.completion_tokens
            choices.append({"index": index, "text": "".join(pieces), "logprobs": None,
                            "finish_reason": result.finish_reason, "stop_reason": result.stop_reason,
                            "prompt_logprobs": None})
        r.json(200, {"id": rid, "object": "text_completion", "created": created, "model": model,
                     "choices": choices, "service_tier": None, "system_fingerprint": None,
                     "usage": self._usage(prompt_total, completion_total), "kv_transfer_params": None})

    def h_embeddings(self, r: Response, body: dict) -> None:
        model = self._check_model(body)
        if self.info.task != "embed":
            raise BadRequest("The model does not support Embeddings API")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("input must be a string or a list of strings")
        timer = RequestTimer(self.metrics, None)
        with self.engine.lock:
            timer.start(0)
            vectors, tokens = self.engine.embed(texts)
        with self.metrics.lock:
            self.metrics.prompt_tokens += tokens
        timer.finish("stop")
        r.json(200, {"id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                     "model": model, "data": [{"index": i, "object": "embedding", "embedding": v}
                                              for i, v in enumerate(vectors)],
                     "usage": self._usage(tokens, 0)})

    def h_transcriptions(self, r: Response, body) -> None:
        if self.info.task != "transcription":
            raise BadRequest("The model does not support Transcriptions API")
        from .vllm_audio import handle  # faster-whisper, loaded on the first request

        handle(self, r, body)


ROUTES = {
    "/health": (("GET",), None), "/ping": (("GET", "POST"), None),
    "/version": (("GET",), "h_version"), "/load": (("GET",), "h_load"),
    "/v1/models": (("GET",), "h_models"), "/metrics": (("GET",), "h_metrics"),
    "/tokenize": (("POST",), "h_tokenize"), "/detokenize": (("POST",), "h_detokenize"),
    "/v1/chat/completions": (("POST",), "h_chat"), "/v1/completions": (("POST",), "h_completions"),
    "/v1/embeddings": (("POST",), "h_embeddings"),
    "/v1/audio/transcriptions": (("POST",), "h_transcriptions"),
}
ROUTE_LIST = [(path, ", ".join(methods)) for path, (methods, _) in ROUTES.items()]
