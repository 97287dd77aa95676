"""The redaction gateway: OpenAI-compatible endpoints that pseudonymize on the way in and restore
on the way out, and the bare transformation for apps that only want that.

    POST /redact/v1/chat/completions, /redact/v1/completions   (streamed or not)
    POST /api/redact, /api/unredact, DELETE /api/redact/conversations/{id}
    POST /api/dashboard/redact, /api/dashboard/unredact   (the playground's: same handlers, no key)

Every text of a request (app/redaction/payload.py) is detected in one batch and replaced by the
conversation's placeholders before anything leaves; if detection or the map store fails the
request is refused (503/500, OpenAI-shaped), never forwarded raw. The answer is restored: whole,
or event by event as it streams (app/redaction/sse.py), holding back at most one placeholder.

Where redacted requests go: REDACTION_UPSTREAM_URL (an OpenAI base URL, e.g.
`https://api.example.com/v1`, with REDACTION_UPSTREAM_API_KEY as its bearer key, never logged
or returned) or, by default, spark-control's own /v1 gateway, called in process: the same
`llm_proxy.relay` (routing, waiting through a swap, replicas, metrics, errors) without a
loopback HTTP hop, a second serialization, or having to know which port uvicorn really bound
(BIND_PORT need not be it).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from app import llm_proxy
from app.errors import InvalidInput, NotFound, ServiceUnavailable, error_response
from app.openai_errors import openai_error_response, sse_error_event
from app.redaction.detect import ENTITIES
from app.redaction.payload import Slot, chat_slots, completion_slots, conversation_seed, restore_response
from app.redaction.placeholders import TagTable
from app.redaction.restore import restore
from app.redaction.service import RedactionFailed, RedactionService, open_service
from app.redaction.sse import SSERestorer

CONVERSATION_HEADER = "X-Redaction-Conversation"
ENTITIES_HEADER = "X-Redaction-Entities"
_CONVERSATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CONNECT_TIMEOUT_S = 5.0
_NON_STREAM_READ_TIMEOUT_S = 600.0


# -- request models (/api/redact, /api/unredact) --------------------------------------------------
class RedactRequest(BaseModel):
    text: str | None = Field(None, description="One text to redact (or `texts`).")
    texts: list[str] | None = Field(None, description="Several texts, redacted as one conversation.")
    conversation_id: str | None = Field(None, description="Reuse this conversation's placeholders; "
                                                          "derived from the first text when absent.")
    entities: list[str] | None = Field(None, description="Only these entity types (default: all configured).")


class UnredactRequest(BaseModel):
    text: str
    conversation_id: str


# -- helpers ---------------------------------------------------------------------------------------
def _service(request: Request) -> RedactionService:
    service = getattr(request.app.state, "redaction", None)
    if service is None:
        reason = getattr(request.app.state, "redaction_error", None) or "the redaction gateway is not started"
        raise ServiceUnavailable(f"Redaction is unavailable: {reason}.", code="redaction_unavailable")
    return service


def _conversation_id(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not _CONVERSATION_ID.fullmatch(value):
        raise InvalidInput(f"{field} must be 1-128 characters of letters, digits and . _ : - "
                           f"(got {len(value)} characters).", field=field)
    return value


def _entity_filter(entities: list[str] | None) -> frozenset[str] | None:
    if entities is None:
        return None
    wanted = frozenset(e.upper() for e in entities)
    unknown = sorted(wanted - frozenset(ENTITIES))
    if unknown:
        raise InvalidInput(f"unknown entity types {unknown}; known: {', '.join(sorted(ENTITIES))}.", field="entities")
    return wanted


def _caller(request: Request) -> str:
    """Who is asking, for deriving conversation ids: the API key when PROXY_API_KEYS is set (two
    clients with the same system prompt and opener then never share a map), else nobody."""
    given = request.headers.get("authorization", "")
    return given[7:].strip() + "\0" if request.app.state.proxy_api_keys and given.startswith("Bearer ") else ""


def _entities_header(counts) -> str:
    return ",".join(f"{entity}={count}" for entity, count in sorted(counts.items()))


# -- the OpenAI-compatible endpoints --------------------------------------------------------------
async def _gateway(request: Request, path: str, capability: str) -> Response:
    service = _service(request)
    refused = llm_proxy.check_api_key(request)   # before any CPU is spent on detection
    if refused is not None:
        return refused
    payload, _, error = await llm_proxy.read_json_body(request)
    if error is not None:
        return error
    try:
        slots: list[Slot] = chat_slots(payload) if capability == "chat" else completion_slots(payload)
        conversation = _conversation_id(request.headers.get(CONVERSATION_HEADER), CONVERSATION_HEADER)
    except InvalidInput as exc:
        return openai_error_response(400, exc.message, param=exc.field)
    if conversation is None:  # scoped by the caller's API key, when keys are in use
        conversation = service.store.derive_conversation_id(_caller(request) + conversation_seed(payload))
    try:
        result = await service.run(service.redact, [slot.text for slot in slots], conversation)
    except RedactionFailed as exc:
        return error_response(exc)
    for slot, text in zip(slots, result.texts):
        slot.set(text)
    table = result.table  # only the tags this request was issued
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {CONVERSATION_HEADER: conversation, ENTITIES_HEADER: _entities_header(result.counts)}
    settings = request.app.state.settings
    if settings.redaction_upstream_url:
        status, media_type, content = await _external(request, settings, path, body, payload.get("stream") is True)
    else:
        status, media_type, content = await _local(request, path, capability, body)
    if isinstance(content, bytes):
        return Response(_restore_body(content, table), status_code=status, media_type=media_type,
                        headers=headers)
    restorer = SSERestorer(table)
    return StreamingResponse(_restored_stream(content, restorer), status_code=status,
                             media_type="text/event-stream", headers={**_STREAM_HEADERS, **headers})


def _restore_body(content: bytes, table: TagTable) -> bytes:
    try:
        body = json.loads(content)
    except ValueError:
        return restore(content.decode("utf-8", "replace"), table).encode()
    return json.dumps(restore_response(body, table), ensure_ascii=False).encode()


async def _restored_stream(chunks: AsyncIterator[bytes], restorer: SSERestorer) -> AsyncIterator[bytes]:
    """Relay as it arrives, restored; closing this (a client gone) closes the upstream stream."""
    try:
        async for chunk in chunks:
            out = restorer.feed(chunk)
            if out:
                yield out
        tail = restorer.finish()
        if tail:
            yield tail
    finally:
        await chunks.aclose()


async def _local(request: Request, path: str, capability: str, body: bytes) -> tuple[int, str, Any]:
    """spark-control's own /v1 gateway, in process: relay() gets a request whose body is the redacted one."""
    response = await llm_proxy.relay(_with_body(request, body), path, capability)
    if isinstance(response, StreamingResponse):
        return response.status_code, "text/event-stream", response.body_iterator
    return response.status_code, response.media_type or "application/json", bytes(response.body)


def _with_body(request: Request, body: bytes) -> Request:
    """The same request (headers, the API key, the app) carrying `body`: relay() reads it from here."""
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-length"] + \
        [(b"content-length", str(len(body)).encode())]
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return Request(scope, receive)


async def _external(request: Request, settings, path: str, body: bytes, stream: bool) -> tuple[int, str, Any]:
    """An external OpenAI-compatible server, with the app's httpx client and its own key."""
    url = settings.redaction_upstream_url.rstrip("/") + path.removeprefix("/v1")
    headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
    if settings.redaction_upstream_api_key:
        headers["authorization"] = f"Bearer {settings.redaction_upstream_api_key}"
    client: httpx.AsyncClient = request.app.state.http
    timeout = httpx.Timeout(None if stream else _NON_STREAM_READ_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
    try:
        response = await client.send(client.build_request("POST", url, content=body, headers=headers,
                                                          timeout=timeout), stream=True)
    except httpx.HTTPError as exc:
        where = urlsplit(url).hostname  # never the URL itself: it may carry user:key@
        return 502, "application/json", _upstream_error(f"The redaction upstream at {where} "
                                                         f"did not answer: {type(exc).__name__}.")
    media_type = response.headers.get("content-type", "application/json")
    if stream and response.status_code == 200 and media_type.startswith("text/event-stream"):
        return 200, "text/event-stream", _httpx_chunks(response)
    try:
        content = await response.aread()
    except httpx.HTTPError as exc:
        return 502, "application/json", _upstream_error(f"The redaction upstream broke off its answer: "
                                                         f"{type(exc).__name__}.")
    finally:
        await response.aclose()
    if response.status_code >= 400:
        content = llm_proxy._mark_upstream(content, response.status_code)
    return response.status_code, media_type, content


async def _httpx_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():  # decoded: an upstream may gzip its stream
            yield chunk
    except httpx.HTTPError as exc:
        yield sse_error_event(f"The redaction upstream broke off the stream: {type(exc).__name__}.", source="upstream")
    finally:
        await response.aclose()


def _upstream_error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "upstream_error", "param": None,
                                 "code": "upstream_unreachable", "source": "upstream"}}).encode()


# -- the bare transformation ----------------------------------------------------------------------
# The dashboard's twins need no key, and anything a browser sends curl can send too: they only
# ever reach conversations of their own, never an app's. Every id they are given is read in their
# namespace ("ticket-7" there is "dashboard-ticket-7"), and the ids they issue carry it.
DASHBOARD_PREFIX = "dashboard-"


def _in_dashboard_namespace(value: str | None) -> str | None:
    if value is None or value.startswith(DASHBOARD_PREFIX):
        return value
    return DASHBOARD_PREFIX + value


async def _redact(request: Request, body: RedactRequest, prefix: str = "") -> Response:
    service = _service(request)
    if (body.text is None) == (body.texts is None):
        raise InvalidInput("send exactly one of `text` (a string) or `texts` (a list of strings).", field="text")
    texts = [body.text] if body.text is not None else body.texts
    entities = _entity_filter(body.entities)
    conversation = _conversation_id(body.conversation_id, "conversation_id") or prefix + \
        service.store.derive_conversation_id(_caller(request) + "redact\0" + (texts[0] if texts else ""))
    try:
        result = await service.run(service.redact, texts, conversation, entities)
    except RedactionFailed as exc:
        return error_response(exc)
    answer: dict[str, Any] = {"conversation_id": conversation, "entities": dict(sorted(result.counts.items()))}
    if body.text is not None:
        answer["text"] = result.texts[0]
    else:
        answer["texts"] = result.texts
    return JSONResponse(answer, headers={CONVERSATION_HEADER: conversation})


async def _unredact(request: Request, body: UnredactRequest, prefix: str = "") -> Response:
    service = _service(request)
    conversation = _conversation_id(body.conversation_id, "conversation_id")
    # Another namespace's conversation reads as absent: its existence is not confirmed either.
    table = await service.run(service.store.table, conversation) if conversation.startswith(prefix) else None
    if table is None:
        raise NotFound(f"no redaction conversation {conversation!r}: it was never used, was deleted, or expired "
                       "(REDACTION_TTL_S after its last use).", field="conversation_id")
    return JSONResponse({"text": restore(body.text, table), "conversation_id": conversation},
                        headers={CONVERSATION_HEADER: conversation})


async def _delete(request: Request, conversation_id: str) -> Response:
    service = _service(request)
    conversation = _conversation_id(conversation_id, "conversation_id")
    deleted = await service.run(service.store.delete_conversation, conversation)
    if deleted is None:
        raise NotFound(f"no redaction conversation {conversation!r} (never used, already deleted, or expired).",
                       field="conversation_id")
    return JSONResponse({"conversation_id": conversation, "deleted_values": deleted})


@asynccontextmanager
async def _lifespan(app):
    """The map store opens here (a missing directory is created; a failure is reported, not fatal)."""
    app.state.redaction, app.state.redaction_error = open_service(app.state.settings)
    try:
        yield
    finally:
        if app.state.redaction is not None:
            app.state.redaction.close()


def build_router() -> APIRouter:
    router = APIRouter(tags=["redaction"], lifespan=_lifespan)

    @router.post("/redact/v1/chat/completions",
                 summary="OpenAI chat completions with personal data replaced by placeholders and restored in the answer")
    async def chat_completions(request: Request) -> Response:
        return await _gateway(request, "/v1/chat/completions", "chat")

    @router.post("/redact/v1/completions",
                 summary="OpenAI text completions with personal data replaced by placeholders and restored")
    async def completions(request: Request) -> Response:
        return await _gateway(request, "/v1/completions", "completions")

    @router.post("/api/redact", summary="Replace the personal data in texts by a conversation's placeholders")
    async def redact(request: Request, body: RedactRequest) -> Response:
        return llm_proxy.check_api_key(request) or await _redact(request, body)

    @router.post("/api/unredact", summary="Restore a conversation's placeholders in a text")
    async def unredact(request: Request, body: UnredactRequest) -> Response:
        return llm_proxy.check_api_key(request) or await _unredact(request, body)

    # The dashboard's Redaction playground: the same handlers without the key check, so the page
    # works with PROXY_API_KEYS set and holds no key. Not under the CSRF-exempt prefixes
    # (/api/redact, /api/unredact), so browsers on other origins are refused; and since a client
    # that is not a browser can call them too, they reach only the playground's own conversations.
    @router.post("/api/dashboard/redact", summary="The Redaction playground's POST /api/redact: no API key, "
                                                  "its own conversations only")
    async def dashboard_redact(request: Request, body: RedactRequest) -> Response:
        body.conversation_id = _in_dashboard_namespace(body.conversation_id)
        return await _redact(request, body, DASHBOARD_PREFIX)

    @router.post("/api/dashboard/unredact", summary="The Redaction playground's POST /api/unredact: no API key, "
                                                    "its own conversations only")
    async def dashboard_unredact(request: Request, body: UnredactRequest) -> Response:
        body.conversation_id = _in_dashboard_namespace(body.conversation_id)
        return await _unredact(request, body, DASHBOARD_PREFIX)

    @router.delete("/api/redact/conversations/{conversation_id}",
                   summary="Forget a redaction conversation and its placeholders now")
    async def delete_conversation(request: Request, conversation_id: str) -> Response:
        return llm_proxy.check_api_key(request) or await _delete(request, conversation_id)

    return router
