"""A model served by two replicas (one deployment per node): requests are spread over both, and a
replica that refuses connections is skipped without the client noticing. Real loopback servers."""

from __future__ import annotations

import httpx
import openai
import pytest

from fake_upstream import FakeUpstream
from inthread_app import ChatGateway


@pytest.fixture
def two_replicas(tmp_path):
    first, second = FakeUpstream().start(), FakeUpstream().start()
    gateway = ChatGateway(tmp_path).start()
    gateway.deploy(first, node="spark1")
    gateway.deploy(second, node="spark2")
    yield gateway, first, second
    gateway.stop()
    first.stop()
    second.stop()


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, stream: bool = False) -> str:
    reply = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=2, stream=stream)
    if stream:
        return "".join(chunk.choices[0].delta.content or "" for chunk in reply)
    return reply.choices[0].message.content


def retries_counted(gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spark_control_upstream_retries_total{"))


def test_requests_are_spread_over_both_replicas(two_replicas):
    gateway, first, second = two_replicas
    client = sdk(gateway)
    for _ in range(10):
        assert ask(client) == "tok tok "
    assert len(first.requests) == 5 and len(second.requests) == 5


def test_models_list_names_the_model_once_with_both_nodes(two_replicas):
    gateway, _, _ = two_replicas
    listed = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    entry = next(m for m in listed if m["id"] == "test-model")
    assert [m["id"] for m in listed].count("test-model") == 1
    assert entry["spark_control"]["nodes"] == ["spark1", "spark2"] and entry["spark_control"]["replicas"] == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_replica_that_refuses_connections_is_skipped(two_replicas, stream):
    gateway, first, second = two_replicas
    second.stop()  # its port now refuses connections: what a crashed vLLM looks like
    client = sdk(gateway)
    answers = [ask(client, stream) for _ in range(6)]
    assert answers == ["tok tok " if not stream else "t0 t1 "] * 6
    assert len(first.requests) == 6
    assert retries_counted(gateway) == 3  # every other request tried spark2 first


def test_every_replica_down_is_one_clear_502(two_replicas):
    gateway, first, second = two_replicas
    first.stop()
    second.stop()
    answer = httpx.post(f"{gateway.url}/v1/chat/completions",
                        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["source"] == "upstream" and "every replica tried" in error["message"]
    assert first.base_url in error["message"] and second.base_url in error["message"]
