"""The embeddings gateway (`POST /v1/embeddings`), driven by the unmodified openai SDK.

The real app runs under uvicorn in a thread so a test can tell its lifecycle what is deployed.
Refusals at the boundary need no upstream; the rest talk to the real spark_embed (real MiniLM,
under the sim venv's Python: see test_spark_embed.py) over loopback.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from app.server import create_app
from app.settings import Settings
from app.swap import Deployment, State
from conftest import free_port
from inthread_app import InThreadApp

MODEL = "all-minilm-l6-v2"


class EmbeddingsGateway(InThreadApp):
    """The real spark-control app under uvicorn in a thread, for embedding models."""

    def deploy(self, endpoint: str, *, name: str = MODEL, served_name: str = MODEL,
               state: State = State.READY) -> Deployment:
        return self.add_deployment(endpoint, name=name, served_name=served_name, capabilities=("embeddings",),
                                   state=state)

    def post(self, body=None, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/embeddings", json=body, timeout=60, **kw)


@pytest.fixture
def gateway(tmp_path):
    app = EmbeddingsGateway(tmp_path, PROXY_MAX_BODY_BYTES="2000000", PROXY_WAIT_FOR_MODEL_S="0.5").start()
    yield app
    app.stop()


def sdk(gateway: EmbeddingsGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert {"message", "type", "param", "code", "source"} <= set(error)
    return error


# ---------------------------------------------------------------- refused by spark-control


def test_create_app_serves_embeddings(tmp_path):
    app = create_app(Settings.from_env(environ={"CONNECTIVITY_LOG": str(tmp_path / "c.json")}))
    assert "post" in app.openapi()["paths"].get("/v1/embeddings", {}), \
        "server.create_app must include embeddings_proxy.build_router()"


def test_unknown_model_is_an_openai_404(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gateway).embeddings.create(model="no-such-embedder", input=["hello"])
    error = info.value.body
    assert "no-such-embedder" in error["message"] and error["param"] == "model"
    assert error["source"] == "spark-control"


def test_empty_input_is_an_openai_400(gateway):
    gateway.deploy("http://127.0.0.1:9")  # never reached: refused at the boundary
    for empty in ([], "", ["fine", ""], [[]]):
        with pytest.raises(openai.BadRequestError) as info:
            sdk(gateway).embeddings.create(model=MODEL, input=empty)
        assert info.value.body["param"] == "input" and info.value.body["code"] == "empty_input", empty
        assert "empty" in info.value.body["message"] and info.value.body["source"] == "spark-control"


@pytest.mark.parametrize("body, param, words", [
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", '"float" or "base64"'),
    ({"input": "x", "encoding_format": None, "dimensions": 0}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": -4}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": "64"}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": 1.5}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": True}, "dimensions", ">= 1"),
    ({}, "input", "`input` is required"),
    ({"input": {"a": 1}}, "input", "not dict"),
    ({"input": ["a", 2]}, "input", "mixes kinds"),
    ({"input": [1, -2]}, "input", "whole numbers >= 0"),
])
def test_bad_fields_are_openai_400s_naming_the_field(gateway, body, param, words):
    error = error_of(gateway.post({"model": MODEL, **body}), 400)
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error" and error["source"] == "spark-control"


def test_limits_on_items_length_and_body(gateway):
    too_many = error_of(gateway.post({"model": MODEL, "input": ["a"] * 2049}), 400)
    assert too_many["code"] == "too_many_inputs" and "at most 2048" in too_many["message"]
    too_long = error_of(gateway.post({"model": MODEL, "input": ["ok", "x" * 262_145]}), 400)
    assert too_long["code"] == "input_too_long" and "`input[1]` has 262145 characters" in too_long["message"]
    too_big = error_of(gateway.post({"model": MODEL, "input": ["x" * 200_000] * 11}), 413)
    assert "PROXY_MAX_BODY_BYTES" in too_big["message"]
    not_json = error_of(httpx.post(f"{gateway.url}/v1/embeddings", content=b"{", timeout=10), 400)
    assert "not valid JSON" in not_json["message"]
    ids = gateway.post({"model": "nope", "input": list(range(3000))})
    assert ids.status_code == 404, "3000 token ids are one input, not 3000"
    no_model = error_of(gateway.post({"input": "x"}), 400)
    assert no_model["param"] == "model"


def test_an_upstream_that_does_not_answer_is_a_502_naming_it(gateway):
    closed = f"http://127.0.0.1:{free_port()}"
    gateway.deploy(closed)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gateway).embeddings.create(model=MODEL, input="hi")
    assert info.value.status_code == 502
    assert closed in info.value.body["message"] and info.value.body["source"] == "upstream"


def test_a_model_still_loading_is_waited_for_then_a_503(gateway):
    gateway.deploy("http://127.0.0.1:9", state=State.LOADING)
    error = error_of(gateway.post({"model": MODEL, "input": "x"}), 503)
    assert "still loading" in error["message"]


# ---------------------------------------------------------------- through to the real spark_embed


@pytest.fixture(scope="module")
def spark_embed(tmp_path_factory):
    from test_spark_embed import SparkEmbedServer

    server = SparkEmbedServer(tmp_path_factory.mktemp("spark_embed") / "spark_embed.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def wired(gateway, spark_embed):
    gateway.deploy(spark_embed.url)
    return gateway


@pytest.mark.integration
def test_openai_sdk_base64_default_and_float_give_the_same_vectors(wired):
    client = sdk(wired)
    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew 4%."]
    default = client.embeddings.create(model=MODEL, input=texts)        # the SDK asks for base64
    floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [len(d.embedding) for d in default.data] == [384] * 3 and [d.index for d in default.data] == [0, 1, 2]
    assert default.model == MODEL and default.usage.prompt_tokens == floats.usage.prompt_tokens > 0
    raw = httpx.post(f"{wired.url}/v1/embeddings", json={"model": MODEL, "input": "x", "encoding_format": "base64"},
                     timeout=60).json()
    assert isinstance(raw["data"][0]["embedding"], str), "base64 is relayed as the upstream sent it"


@pytest.mark.integration
def test_dimensions_and_token_input_go_through(wired):
    client = sdk(wired)
    short = client.embeddings.create(model=MODEL, input="hello world", dimensions=32)
    assert len(short.data[0].embedding) == 32
    assert abs(sum(x * x for x in short.data[0].embedding) - 1) < 1e-4
    by_ids = client.embeddings.create(model=MODEL, input=[[7592, 2088]], encoding_format="float")
    by_text = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(by_ids.data[0].embedding, by_text.data[0].embedding)) < 1e-5


@pytest.mark.integration
def test_an_alias_becomes_the_served_name_upstream(gateway, spark_embed):
    gateway.deploy(spark_embed.url, name="minilm-catalog-name", served_name=MODEL)
    answer = sdk(gateway).embeddings.create(model="minilm-catalog-name", input="hi")
    assert len(answer.data[0].embedding) == 384, "spark_embed answers only to its served name"


@pytest.mark.integration
def test_upstream_refusals_keep_their_status_and_say_upstream(wired):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(wired).embeddings.create(model=MODEL, input="hi", dimensions=4096)
    assert info.value.body["source"] == "upstream" and info.value.body["param"] == "dimensions"
    assert "384" in info.value.body["message"]
