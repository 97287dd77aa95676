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
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app import routing
from app.errors import SparkControlError
from app.metrics import GatewayMetrics, RouteMetrics
from app.openai_errors import openai_error_response, sse_error_event
from app.swap import State
from app.upstream_http import UpstreamError, UpstreamPool, UpstreamResponse
from app.upstream_retry import first_that_connects, tried

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Per phase: a model server that does not accept a connection within seconds is down; one that
# thinks for minutes before its first token is just busy.
_CONNECT_TIMEOUT_S = 3.0
_NON_STREAM_READ_TIMEOUT_S = 600.0
# Idle upstream connections are dropped before vLLM's (uvicorn's) 5 s keep-alive timeout closes them.
_KEEPALIVE_EXPIRY_S = 4.0


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


PayloadCheck = Callable[[dict[str, Any]], "JSONResponse | None"]


async def relay(request: Request, path: str, capability: str, *, check_payload: PayloadCheck | None = None,
                allow_stream: bool = True) -> Response:
    """Every /v1 relay: key, body, the endpoint's own checks, route, forward."""
    refused = check_api_key(request)
    if refused is not None:
        return refused
    payload, body, error = await read_json_body(request)
    if error is None and check_payload is not None:
        error = check_payload(payload)
    if error is not None:
        return error
    state = request.app.state
    try:
        upstreams = await routing.resolve(state.lifecycle, payload["model"], capability=capability,
                                          wait_s=state.settings.proxy_wait_for_model_s)
    except SparkControlError as exc:
        state.metrics.errors.labels(payload["model"], path, "spark-control").inc()
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    served_name = upstreams[0].served_name  # the same on every replica of a model
    if payload["model"] != served_name:
        payload["model"] = served_name
        body = json.dumps(payload).encode()
    stream = allow_stream and payload.get("stream") is True
    return await _forward(state.upstream_pool, state.metrics, upstreams, path, body, stream)


async def _post_to_a_replica(pool: UpstreamPool, metrics: GatewayMetrics, upstreams: list[routing.Upstream],
                             path: str, body: bytes, stream: bool) -> tuple[routing.Upstream, UpstreamResponse]:
    """Post to the first replica that accepts the connection (app/upstream_retry.py)."""
    read_timeout_s = None if stream else _NON_STREAM_READ_TIMEOUT_S
    return await first_that_connects(
        upstreams, lambda upstream: pool.post(upstream.base_url, path, body, read_timeout_s=read_timeout_s),
        retries=metrics.retries, labels=lambda upstream: (upstream.model, upstream.base_url))


async def _forward(pool: UpstreamPool, metrics: GatewayMetrics, upstreams: list[routing.Upstream],
                   path: str, body: bytes, stream: bool) -> Response:
    """Relay one request through app.state.upstream_pool to one of the model's replicas."""
    upstream = upstreams[0]
    model = upstream.model
    route = metrics.route(model, path)
    started = time.perf_counter()
    route.in_flight.inc()
    try:
        upstream, response = await _post_to_a_replica(pool, metrics, upstreams, path, body, stream)
        if stream and response.status_code == 200:
            return StreamingResponse(_relay_stream(route, model, response, started),
                                     status_code=200, media_type="text/event-stream", headers=_STREAM_HEADERS)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
    except UpstreamError as exc:
        route.in_flight.dec()
        route.error("upstream").inc()
        route.requests("502").inc()
        where = tried([u.base_url for u in upstreams])
        return openai_error_response(502, f"The model server for `{model}` at {where} did not answer: "
                                          f"{type(exc).__name__}.", source="upstream", code="upstream_unreachable")
    except BaseException:
        route.in_flight.dec()
        raise
    route.in_flight.dec()
    return _finish_plain(route, response, content, started)


def _finish_plain(route: RouteMetrics, response: UpstreamResponse, content: bytes, started: float) -> Response:
    status = response.status_code
    route.requests(str(status)).inc()
    route.latency.observe(time.perf_counter() - started)
    if status >= 400:
        route.error("upstream").inc()
        content = _mark_upstream(content, status)
    else:
        _count_usage(route, content)
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


_JSON = json.JSONDecoder()


def _count_usage(route: RouteMetrics, content: bytes) -> None:
    """Tokens from the answer's `usage`, found from the end (where servers put it): no need to
    parse a long answer whole. Inside JSON strings quotes are escaped, so `"usage"` with bare
    quotes can only be a key."""
    at = content.rfind(b'"usage"')
    if at < 0:
        return
    try:
        usage, _ = _JSON.raw_decode(content[at + 7:].decode("utf-8").lstrip().removeprefix(":").lstrip())
    except (ValueError, UnicodeDecodeError):
        return
    if not isinstance(usage, dict):
        return
    for kind in ("prompt", "completion"):
        count = usage.get(f"{kind}_tokens")
        if isinstance(count, int):
            route.tokens(kind).inc(count)


async def _relay_stream(route: RouteMetrics, model: str, response: UpstreamResponse, started: float):
    first = True
    chunks = 0
    status = "200"
    try:
        async for chunk in response.aiter_raw():
            if first:
                route.ttft.observe(time.perf_counter() - started)
                first = False
            chunks += 1
            yield chunk
    except UpstreamError as exc:
        # The stream already started: report in-band, as one more event, then end.
        status = "502"
        route.error("upstream").inc()
        yield sse_error_event(f"The model server for `{model}` broke off the stream: {type(exc).__name__}.",
                              source="upstream")
    finally:
        await response.aclose()
        route.chunks.inc(chunks)
        route.in_flight.dec()
        route.requests(status).inc()
        route.latency.observe(time.perf_counter() - started)


def list_models(request: Request) -> dict[str, Any]:
    """One entry per name a client may use; a model with replicas lists every node serving it."""
    lifecycle = request.app.state.lifecycle
    entries: dict[str, dict[str, Any]] = {}
    for deployment in lifecycle.deployments.values():
        if deployment.state != State.READY:
            continue
        for name in routing.names_of(lifecycle, deployment):
            entry = entries.setdefault(name, {
                "id": name, "object": "model", "created": int(deployment.since), "owned_by": "spark-control",
                "root": deployment.model, "spark_control": {"nodes": [], "replicas": 0,
                                                            "capabilities": list(deployment.capabilities)}})
            entry["spark_control"]["nodes"] += [n for n in deployment.nodes if n not in entry["spark_control"]["nodes"]]
            entry["spark_control"]["replicas"] += 1
    return {"object": "list", "data": list(entries.values())}


@asynccontextmanager
async def _lifespan(app):
    """The gateway's own upstream connections (app/upstream_http.py), closed at shutdown."""
    app.state.upstream_pool = UpstreamPool(connect_timeout_s=_CONNECT_TIMEOUT_S,
                                           keepalive_expiry_s=_KEEPALIVE_EXPIRY_S)
    try:
        yield
    finally:
        await app.state.upstream_pool.aclose()


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"], lifespan=_lifespan)

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
