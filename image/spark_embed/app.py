"""spark_embed's HTTP API (OpenAI-compatible): `POST /v1/embeddings`, `GET /v1/models`,
`GET /health`, `GET /stats`.

`uvicorn spark_embed.app:app` builds the app from the environment on first access (module
`__getattr__`), so importing this module loads nothing; the model is loaded in the lifespan,
before the port accepts connections, and a configuration mistake ends the process with one
readable line and exit status 2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from spark_embed import __version__
from spark_embed.config import ConfigError, EmbedConfig
from spark_embed.validation import ApiError, parse_body

log = logging.getLogger("spark_embed")

# Above this many floats, the JSON answer is rendered off the event loop (about 1 ms per 10,000).
_RENDER_OFF_LOOP_FLOATS = 50_000


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def create_app(config: EmbedConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from spark_embed.batching import MicroBatcher
        from spark_embed.encoder import Encoder

        encoder = await asyncio.to_thread(Encoder, config.model_path, config.device, config.encode_batch_size)
        app.state.encoder = encoder
        app.state.batcher = MicroBatcher(encoder.encode, max_items=config.max_batch_items,
                                         wait_s=config.batch_wait_ms / 1000)
        app.state.batcher.start()
        app.state.ready = True
        log.info("serving %s as %r", config.model_path, config.model_name)
        try:
            yield
        finally:
            app.state.ready = False
            await app.state.batcher.close()

    app = FastAPI(title="spark_embed", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible embeddings for spark-control (sentence-transformers).")
    app.state.config = config
    app.state.ready = False
    app.state.created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await _read_body(request, config.max_body_bytes)
        req = parse_body(body, max_items=config.max_items, max_chars=config.max_chars)
        if req.model is not None and req.model != config.model_name:
            raise ApiError(404, f"The model `{req.model}` does not exist. This server serves "
                                f"`{config.model_name}`.", param="model", code="model_not_found")
        encoder = request.app.state.encoder
        if req.dimensions is not None and req.dimensions > encoder.dimensions:
            raise ApiError(400, f"`dimensions` is {req.dimensions}, but `{config.model_name}` has "
                                f"{encoder.dimensions}; ask for {encoder.dimensions} or fewer.", param="dimensions")
        texts = req.texts if req.texts is not None else _decode(encoder, req.token_ids)
        encoded = await request.app.state.batcher.submit(texts)
        vectors = encoded.vectors
        if req.dimensions is not None and req.dimensions < encoder.dimensions:
            vectors = _truncate(vectors, req.dimensions)
        args = (config.model_name, vectors, encoded.tokens, req.encoding_format)
        big = vectors.size > _RENDER_OFF_LOOP_FLOATS
        content = await asyncio.to_thread(_render, *args) if big else _render(*args)
        return Response(content, media_type="application/json")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        encoder = request.app.state.encoder
        return {"object": "list", "data": [{
            "id": config.model_name, "object": "model", "created": request.app.state.created,
            "owned_by": "spark-embed", "root": str(config.model_path),
            "max_model_len": encoder.max_seq_length, "dimensions": encoder.dimensions}]}

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": config.model_name})

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        """Counters of the batcher: `encode_calls` below `requests` means requests were grouped."""
        batcher = request.app.state.batcher
        encoder = request.app.state.encoder
        return {**batcher.stats.to_dict(), "queued": batcher.queued, "model": config.model_name,
                "device": encoder.device, "dimensions": encoder.dimensions,
                "max_batch_items": config.max_batch_items, "batch_wait_ms": config.batch_wait_ms}

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body has {int(declared)} bytes; at most {limit} are accepted "
                            "(EMBED_MAX_BODY_BYTES).", code="body_too_large")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, f"The request body exceeds {limit} bytes (EMBED_MAX_BODY_BYTES).", code="body_too_large")
    return body


def _decode(encoder, token_ids: list[list[int]]) -> list[str]:
    """Token ids of the model's own vocabulary -> texts (embedded as such)."""
    texts = []
    for i, ids in enumerate(token_ids):
        try:
            text = encoder.decode(ids)
        except ValueError as exc:
            raise ApiError(400, f"`input[{i}]`: {exc}.", param="input", code="invalid_token_id") from None
        if not text.strip():
            raise ApiError(400, f"`input[{i}]` decodes to no text (only special tokens?).", param="input",
                           code="empty_input")
        texts.append(text)
    return texts


def _truncate(vectors, dimensions: int):
    """The first `dimensions` components, renormalised to unit length (Matryoshka-style)."""
    import numpy as np

    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return (head / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _render(model_name: str, vectors, tokens: list[int], encoding_format: str) -> bytes:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        little = vectors.astype("<f4", copy=False)
        embeddings = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        embeddings = vectors.tolist()
    total = sum(tokens)
    return json.dumps({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model_name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }, separators=(",", ":")).encode()


def _app_from_environment() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return create_app(EmbedConfig.from_env())
    except ConfigError as exc:
        print(f"spark_embed: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_app: FastAPI | None = None


def __getattr__(name: str):
    # `uvicorn spark_embed.app:app` looks up `app` here; it is built on that first access only.
    global _app
    if name == "app":
        if _app is None:
            _app = _app_from_environment()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
