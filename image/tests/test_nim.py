"""A NIM on a simulated Spark: launched with NGC_API_KEY (docker login nvcr.io recorded on the node, the
key in no API answer, log or command line), ready at /v1/health/ready, answering a chat completion
with sense (deep health), stopped. The sim's NIM runs SmolLM2 through llama.cpp (sparksim/nim_runner.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import free_port, sim_app, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.engines]

KEY = "nvapi-SiMuLaTeD-0123456789-secret"
NIM = "llama-3.1-8b-nim"


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("nim")
    overrides = data / "services.yaml"
    overrides.write_text(f"services:\n  {NIM}: {{port: {free_port()}, start_timeout_s: 120}}\n")
    with sim_app(sim_cluster, data, SERVICES_OVERRIDES=str(overrides), NGC_API_KEY=KEY) as running:
        yield running


def clean(sim_cluster) -> None:
    """No container and no registry login on any node (other modules' tests may have logged in)."""
    for node in sim_cluster.nodes:
        sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f; rm -f ${SPARKSIM_STATE:-~/.sparksim}/logins.json")


@pytest.fixture(autouse=True)
def no_containers(sim_cluster):
    clean(sim_cluster)
    yield
    clean(sim_cluster)


def nim_state(app) -> dict:
    [entry] = [n for n in app.get("/api/nim").json()["nims"] if n["name"] == NIM]
    return entry


def test_a_nim_launches_with_the_key_logs_in_answers_with_sense_and_stops(app, sim_cluster):
    answers = []
    listed = app.get("/api/nim")
    answers.append(listed.text)
    assert listed.json()["ngc_api_key_set"] is True and nim_state(app)["state"] == "stopped"

    launched = app.post(f"/api/nim/{NIM}/launch", json={"node": "spark2"})
    answers.append(launched.text)
    assert launched.status_code == 202, launched.text
    assert launched.json()["running_on"] == "spark2" and launched.json()["health_path"] == "/v1/health/ready"

    # The image is pulled first (`pulling`, after `docker login nvcr.io`, done before the pull job starts), then run.
    assert launched.json()["state"] in ("pulling", "starting", "running"), launched.text
    ready = wait_until(lambda: (s := nim_state(app))["state"] == "running" and s, 120, interval=1,
                       message="the NIM ready at /v1/health/ready")
    logins = sim_cluster.ssh("spark2", "cat ${SPARKSIM_STATE:-~/.sparksim}/logins.json").stdout
    assert json.loads(logins) == {"nvcr.io": {"username": "$oauthtoken"}}
    assert sim_cluster.ssh("spark1", "cat ${SPARKSIM_STATE:-~/.sparksim}/logins.json 2>/dev/null").stdout == ""
    answers.append(json.dumps(ready))
    assert httpx.get(f"{ready['url']}/v1/health/ready", timeout=5).status_code == 200

    deep = app.post("/api/health/deep/run", timeout=120)
    answers.append(deep.text)
    [check] = [c for c in deep.json()["checks"] if c["name"] == NIM]
    assert check["ok"] and check["check"] == "chat" and "paris" in check["detail"].lower(), check
    assert check["latency_ms"] > 0

    logs = app.get(f"/api/services/{NIM}/logs")
    answers.append(logs.text)
    assert "NIM (sparksim) starting meta/llama-3.1-8b-instruct" in logs.text
    answers += [app.get("/api/services").text, app.get("/api/health/services").text]
    # The key went only to the node's stdin: never in an answer, the app's log, or a command line.
    ps = sim_cluster.ssh("spark2", "ps -eo args").stdout
    assert not [text for text in [*answers, app.log(), ps] if KEY in text]

    stopped = app.post(f"/api/nim/{NIM}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text


def test_a_nim_without_a_key_is_refused_with_how_to_fix_it(start_app, sim_cluster):
    keyless = start_app({**sim_cluster.app_env(), "DEEP_HEALTH_INTERVAL_S": "0"})
    response = keyless.post(f"/api/nim/{NIM}/launch")
    assert response.status_code == 503  # the server's setup, not the caller's request
    assert "NGC_API_KEY is not set" in response.json()["error"]["message"]
    assert sim_cluster.ssh("spark1", "docker ps -aq").stdout == ""
