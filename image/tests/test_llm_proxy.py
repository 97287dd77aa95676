"""The LLM gateway against a real upstream server on loopback, driven by the unmodified openai SDK."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from app.swap import State
from fake_upstream import FakeUpstream
from inthread_app import ChatGateway as InThreadApp


@pytest.fixture
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway(tmp_path):
    """Factory: start_gateway(**env) -> a started app; every one is stopped afterwards."""
    started = []

    def _start(**env):
        started.append(InThreadApp(tmp_path, **env).start())
        return started[-1]

    yield _start
    for app in started:
        app.stop()


@pytest.fixture
def gateway(start_gateway, upstream):
    app = start_gateway()
    app.deploy(upstream)
    return app


def client(gateway, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def test_openai_sdk_chat_non_streaming_and_streaming(gateway):
    c = client(gateway)
    reply = c.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.choices[0].message.content == "tok tok tok "
    pieces = [ch.choices[0].delta.content for ch in c.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)]
    assert "".join(p for p in pieces if p) == "t0 t1 t2 t3 "


def test_models_list_shows_what_is_up(gateway, upstream):
    ids = [m.id for m in client(gateway).models.list().data]
    assert ids == ["test-model"]


def test_default_routes_to_the_ready_chat_model(gateway, upstream):
    reply = client(gateway).chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}],
                                                    max_tokens=1)
    assert reply.model == "test-model"
    assert upstream.requests[-1]["model"] == "test-model", "the served name goes upstream, not `default`"


def test_unknown_model_is_an_openai_404(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    error = info.value.body
    assert "nope" in error["message"] and error["source"] == "spark-control"


def test_bad_requests_are_openai_400s_saying_who_refused(gateway):
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(model="test-model", messages=[])
    assert info.value.body["source"] == "upstream"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert r.json()["error"]["source"] == "spark-control"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"messages": []}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_chunks_are_relayed_as_they_arrive(gateway, upstream):
    upstream.chunk_delay_s = 0.1
    received = []
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "test-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, "stream": True}) as r:
        assert r.headers["x-accel-buffering"] == "no"
        for line in r.iter_lines():
            if line.startswith("data: {"):
                received.append(time.monotonic())
    lags = [got - sent for got, sent in zip(received, upstream.sent_at)]
    assert len(received) == 8
    assert max(lags) < 0.05, f"a chunk waited {max(lags) * 1000:.0f} ms in the gateway"


def test_a_10000_token_stream_is_relayed_chunk_by_chunk(gateway):
    count = 0
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=60, json={
            "model": "test-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10000,
            "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                count += 1
    assert count == 10000


def test_upstream_dying_mid_stream_ends_with_an_sse_error_event(gateway, upstream):
    upstream.break_after = 3
    events = []
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "test-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10,
            "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert len(events) == 4 and "error" in events[-1]
    assert events[-1]["error"]["source"] == "upstream"


def test_client_disconnect_cancels_the_upstream_request(gateway, upstream):
    upstream.chunk_delay_s = 0.05
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "test-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000,
            "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # the client goes away after the first chunk
    assert upstream.cancelled.wait(5), "the upstream kept generating for a client that left"


def test_requests_wait_while_the_model_loads_then_all_go_through(start_gateway, upstream):
    app = start_gateway()
    deployment = app.deploy(upstream, state=State.LOADING)
    results: list = []

    def ask():
        try:
            reply = client(app, timeout=30).chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": "x"}], max_tokens=2)
            results.append(reply.choices[0].message.content)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert results == [], "nothing may be answered (or refused) while the model loads"
    deployment.state = State.READY
    for t in threads:
        t.join(timeout=30)
    assert results == ["tok tok "] * 20


def test_api_keys_when_configured(start_gateway, upstream):
    app = start_gateway(PROXY_API_KEYS="k1, k2")
    app.deploy(upstream)
    with pytest.raises(openai.AuthenticationError):
        client(app, api_key="wrong").models.list()
    assert [m.id for m in client(app, api_key="k2").models.list().data] == ["test-model"]
    assert httpx.get(f"{app.url}/api/health", timeout=5).status_code == 200, "the control API is not keyed"


def test_oversized_body_is_413(start_gateway, upstream):
    app = start_gateway(PROXY_MAX_BODY_BYTES="2048")
    app.deploy(upstream)
    r = httpx.post(f"{app.url}/v1/chat/completions", timeout=10,
                   json={"model": "test-model", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413 and "PROXY_MAX_BODY_BYTES" in r.json()["error"]["message"]


def test_metrics_count_requests_and_streams(gateway):
    c = client(gateway)
    c.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    list(c.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}], max_tokens=5,
                                   stream=True))
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'spark_control_requests_total{endpoint="/v1/chat/completions",model="test-model",status="200"} 2.0' in text
    assert 'spark_control_stream_chunks_total{model="test-model"}' in text
    assert 'spark_control_tokens_total{kind="completion",model="test-model"} 2.0' in text
    assert "spark_control_time_to_first_token_seconds_bucket" in text
