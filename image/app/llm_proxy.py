"""The OpenAI-compatible LLM gateway: /v1/chat/completions, /v1/completions, /v1/models.

Apps point here once; `app/routing.py` finds what really serves the model they name. The body
is relayed as bytes (parsed only to read `model` and `stream`, rewritten only when an alias
must become the served name). Streams are relayed chunk by chunk as they arrive, with no
overall read timeout; a client that goes away closes the upstream request, which makes vLLM
abort the generation. Errors are OpenAI-shaped and say who failed (`source`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app import routing
from app.errors import SparkControlError
from app.metrics import GatewayMetrics
from app.openai_errors import openai_error_response, sse_error_event
from app.swap import State

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Per phase: a model server that does not accept a connection within seconds is down; one that
# thinks for minutes before its first token is just busy.
_CONNECT_TIMEOUT_S = 3.0
_NON_STREAM_READ_TIMEOUT_S = 600.0


def check_api_key(request: Request) -> JSONResponse | None:
    """With PROXY_API_KEYS set, the /v1 endpoints need `Authorization: Bearer <key>`."""
    keys = request.app.state.proxy_api_keys
    if not keys:
        return None
    given = request.headers.get("authorization", "")
    if given.startswith("Bearer ") and given[7:].strip() in keys:
        return None
    return openai_error_response(401, "Missing or wrong API key: send `Authorization: Bearer <key>` with one of "
                                      "the keys in PROXY_API_KEYS.", code="invalid_api_key")


async def read_json_body(request: Request) -> tuple[dict[str, Any] | None, bytes, JSONResponse | None]:
    limit = request.app.state.settings.proxy_max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None, b"", openai_error_response(413, f"Request body of {int(declared)} bytes exceeds the "
                                                     f"{limit}-byte limit (PROXY_MAX_BODY_BYTES).")
    body = await request.body()
    if len(body) > limit:
        return None, b"", openai_error_response(413, f"Request body exceeds the {limit}-byte limit.")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return None, body, openai_error_response(400, f"The request body is not valid JSON: {exc}.")
    if not isinstance(payload, dict):
        return None, body, openai_error_response(400, "The request body must be a JSON object.")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return None, body, openai_error_response(400, "`model` is required: a model name from GET /v1/models, "
                                                      "or `default`.", param="model")
    return payload, body, None


async def relay(request: Request, path: str, capability: str) -> Response:
    refused = check_api_key(request)
    if refused is not None:
        return refused
    payload, body, error = await read_json_body(request)
    if error is not None:
        return error
    state = request.app.state
    try:
        upstream = await routing.resolve(state.lifecycle, payload["model"], capability=capability,
                                         wait_s=state.settings.proxy_wait_for_model_s)
    except SparkControlError as exc:
        state.metrics.errors.labels(payload["model"], path, "spark-control").inc()
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    if payload["model"] != upstream.served_name:
        payload["model"] = upstream.served_name
        body = json.dumps(payload).encode()
    stream = payload.get("stream") is True
    return await _forward(state.http, state.metrics, upstream, path, body, stream)


async def _forward(http: httpx.AsyncClient, metrics: GatewayMetrics, upstream: routing.Upstream, path: str,
                   body: bytes, stream: bool) -> Response:
    model = upstream.model
    started = time.perf_counter()
    timeout = httpx.Timeout(connect=_CONNECT_TIMEOUT_S, read=None if stream else _NON_STREAM_READ_TIMEOUT_S,
                            write=30.0, pool=30.0)
    request = http.build_request("POST", f"{upstream.base_url}{path}", content=body, timeout=timeout,
                                 headers={"content-type": "application/json"})
    metrics.in_flight.labels(model).inc()
    try:
        response = await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        metrics.in_flight.labels(model).dec()
        metrics.errors.labels(model, path, "upstream").inc()
        metrics.requests.labels(model, path, "502").inc()
        return openai_error_response(502, f"The model server for `{model}` at {upstream.base_url} did not answer: "
                                          f"{type(exc).__name__}.", source="upstream", code="upstream_unreachable")
    if not stream or response.status_code != 200:
        try:
            content = await response.aread()
        finally:
            await response.aclose()
            metrics.in_flight.labels(model).dec()
        return _finish_plain(metrics, model, path, response, content, started)
    return StreamingResponse(_relay_stream(metrics, model, path, response, started),
                             status_code=200, media_type="text/event-stream", headers=_STREAM_HEADERS)


def _finish_plain(metrics: GatewayMetrics, model: str, path: str, response: httpx.Response, content: bytes,
                  started: float) -> Response:
    status = response.status_code
    metrics.requests.labels(model, path, str(status)).inc()
    metrics.latency.labels(model, path).observe(time.perf_counter() - started)
    if status >= 400:
        metrics.errors.labels(model, path, "upstream").inc()
        content = _mark_upstream(content, status)
    else:
        _count_usage(metrics, model, content)
    return Response(content, status_code=status,
                    media_type=response.headers.get("content-type", "application/json"))


def _mark_upstream(content: bytes, status: int) -> bytes:
    """An upstream error keeps its words and gains `source: upstream` (and the OpenAI shape if it had none)."""
    try:
        body = json.loads(content)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body["error"].setdefault("source", "upstream")
            return json.dumps(body).encode()
        message = body.get("message") or body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        message = None
    text = message or content.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    return json.dumps({"error": {"message": str(text), "type": "upstream_error", "param": None,
                                 "code": status, "source": "upstream"}}).encode()


def _count_usage(metrics: GatewayMetrics, model: str, content: bytes) -> None:
    try:
        usage = json.loads(content).get("usage") or {}
    except (ValueError, AttributeError):
        return
    for kind in ("prompt_tokens", "completion_tokens"):
        if isinstance(usage.get(kind), int):
            metrics.tokens.labels(model, kind.removesuffix("_tokens")).inc(usage[kind])


async def _relay_stream(metrics: GatewayMetrics, model: str, path: str, response: httpx.Response, started: float):
    first = True
    chunks = 0
    status = "200"
    try:
        async for chunk in response.aiter_raw():
            if first:
                metrics.ttft.labels(model, path).observe(time.perf_counter() - started)
                first = False
            chunks += 1
            yield chunk
    except httpx.HTTPError as exc:
        # The stream already started: report in-band, as one more event, then end.
        status = "502"
        metrics.errors.labels(model, path, "upstream").inc()
        yield sse_error_event(f"The model server for `{model}` broke off the stream: {type(exc).__name__}.",
                              source="upstream")
    finally:
        await response.aclose()
        metrics.chunks.labels(model).inc(chunks)
        metrics.in_flight.labels(model).dec()
        metrics.requests.labels(model, path, status).inc()
        metrics.latency.labels(model, path).observe(time.perf_counter() - started)


def list_models(request: Request) -> dict[str, Any]:
    lifecycle = request.app.state.lifecycle
    data = []
    for deployment in lifecycle.deployments.values():
        if deployment.state != State.READY:
            continue
        for name in routing.names_of(lifecycle, deployment):
            data.append({"id": name, "object": "model", "created": int(deployment.since), "owned_by": "spark-control",
                         "root": deployment.model, "spark_control": {"nodes": list(deployment.nodes),
                                                                     "capabilities": list(deployment.capabilities)}})
    return {"object": "list", "data": data}


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"])

    @router.post("/v1/chat/completions", summary="OpenAI chat completions, routed to the node serving the model")
    async def chat_completions(request: Request) -> Response:
        return await relay(request, "/v1/chat/completions", "chat")

    @router.post("/v1/completions", summary="OpenAI text completions, routed to the node serving the model")
    async def completions(request: Request) -> Response:
        return await relay(request, "/v1/completions", "completions")

    @router.get("/v1/models", summary="The models really up now, with their aliases")
    async def models(request: Request) -> Response:
        return check_api_key(request) or JSONResponse(list_models(request))

    return router
