"""Quick and deep health on the simulated Sparks: services that answer /health 200 but talk nonsense
(tests/fixtures/nonsense_service.py, run on spark1 as service containers) pass the quick check and
are reported unhealthy by deep health, each with what was wrong; memory headroom per node from the
status probes; the schedule runs deep health by itself."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from app.services import ServiceManager
from app.services_catalog import load_services_catalog
from app.settings import Settings
from app.ssh import NodePool
from conftest import RunningApp, free_port, wait_until

pytestmark = pytest.mark.integration

NONSENSE = base64.b64encode((Path(__file__).parent / "fixtures" / "nonsense_service.py").read_bytes()).decode()
RUN_NONSENSE = f'["python3", "-c", "import base64; exec(base64.b64decode(\'{NONSENSE}\'))"]'


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("health")
    overrides = data / "services.yaml"
    common = "image: python:3.11-slim, node: spark1, start_timeout_s: 30, args: " + RUN_NONSENSE
    overrides.write_text(
        "services:\n"
        f"  nonsense-embed: {{kind: embeddings, expected_dimension: 384, port: {free_port()}, {common}}}\n"
        f"  nonsense-chat: {{kind: nim, health_path: /health, port: {free_port()}, {common}}}\n"
        f"  nonsense-whisper: {{kind: transcription, port: {free_port()}, {common}}}\n")
    running = RunningApp({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(data / "c.json"),
                          "CONNECTIVITY_INTERVAL_S": "1", "SSH_KEEPALIVE_INTERVAL_S": "1",
                          "SERVICES_OVERRIDES": str(overrides), "NGC_API_KEY": "nvapi-health-test",
                          "DEEP_HEALTH_INTERVAL_S": "2", "DEEP_HEALTH_MIN_AVAILABLE_GB": "100000"},
                         data / "app.log")
    running.services_overrides = str(overrides)
    try:
        yield running.wait_ready()
    finally:
        running.stop()
        for node in sim_cluster.nodes:
            sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f")


@pytest.fixture(scope="module")
def nonsense_running(app):
    for name in ("nonsense-embed", "nonsense-chat", "nonsense-whisper"):
        response = app.post(f"/api/services/{name}/start")
        assert response.status_code == 202, response.text
    wait_until(lambda: all(s["state"] == "running" for s in app.get("/api/services").json()["services"]
                           if s["name"].startswith("nonsense")), 30, message="the nonsense services running")


def test_quick_health_sees_open_ports_and_green_health(app, nonsense_running):
    quick = app.get("/api/health/services").json()
    targets = {t["name"]: t for t in quick["targets"]}
    assert set(targets) == {"nonsense-embed", "nonsense-chat", "nonsense-whisper"}
    for target in targets.values():
        assert target["ok"] and target["port_open"] and target["health"]["status_code"] == 200
        assert target["health"]["latency_ms"] > 0 and target["node"] == "spark1"


def test_endpoints_finds_the_running_healthy_services_of_a_kind(app, sim_cluster, nonsense_running):
    """What the audio gateway calls: app.state.services.endpoints(kind), here in the test's own process."""
    settings = Settings.from_env(environ={**sim_cluster.app_env(), "SERVICES_OVERRIDES": app.services_overrides})

    async def endpoints():
        pool = NodePool(settings)
        async with httpx.AsyncClient() as http:
            manager = ServiceManager(pool, load_services_catalog(settings), http, settings)
            try:
                return await manager.endpoints("transcription"), await manager.endpoints("diarization")
            finally:
                await pool.close()

    transcription, diarization = asyncio.run(endpoints())
    [found] = transcription
    port = next(s["port"] for s in app.get("/api/services").json()["services"] if s["name"] == "nonsense-whisper")
    assert (found.name, found.kind, found.node, found.model) == (
        "nonsense-whisper", "transcription", "spark1", "nonsense-whisper")
    assert found.base_url == f"http://{sim_cluster.node('spark1').address}:{port}"
    assert diarization == []  # the bundled diarizer is not running


def test_deep_health_reports_a_service_that_talks_nonsense_as_unhealthy(app, nonsense_running):
    deep = app.post("/api/health/deep/run").json()
    assert deep["status"] == "unhealthy" and deep["ok"] is False
    checks = {c["name"]: c for c in deep["checks"]}
    assert not checks["nonsense-embed"]["ok"] and checks["nonsense-embed"]["check"] == "embeddings"
    assert "dimension 7, expected 384" in checks["nonsense-embed"]["detail"]
    assert not checks["nonsense-chat"]["ok"] and "'Banana.'" in checks["nonsense-chat"]["detail"]
    assert not checks["nonsense-whisper"]["ok"] and "no text" in checks["nonsense-whisper"]["detail"]
    assert all(c["latency_ms"] is not None for c in checks.values())
    assert any(line.startswith("service nonsense-chat: answer without sense") for line in deep["unhealthy"])
    assert app.get("/api/health/deep").json()["checked_at"] >= deep["checked_at"]  # the cached result


def test_memory_headroom_per_node_warns_under_the_threshold(app):
    wait_until(lambda: len(app.get("/api/status", params={"cached": "true"}).json()["nodes"]) == 2, 15,
               message="both nodes probed")
    deep = app.get("/api/health/deep", params={"refresh": "true"}).json()
    status = {n["name"]: n for n in app.get("/api/status", params={"cached": "true"}).json()["nodes"]}
    memory = {m["node"]: m for m in deep["memory"]}
    assert set(memory) == {"spark1", "spark2"}
    for node, entry in memory.items():
        assert entry["status"] == "warning" and "under 100000 GB" in entry["detail"]
        assert entry["available_gb"] == pytest.approx(status[node]["memory"]["available_bytes"] / 1e9, rel=0.2)


def test_the_schedule_runs_deep_health_by_itself(app):
    first = app.get("/api/health/deep").json()["checked_at"]
    wait_until(lambda: app.get("/api/health/deep").json()["checked_at"] > first, 20,
               message="a scheduled deep health round (DEEP_HEALTH_INTERVAL_S=2)")


@pytest.mark.engines  # the model answers through llama.cpp in the sim venv
def test_deep_health_reports_a_ready_model_that_answers_with_sense_as_healthy(app):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark2"}).status_code == 202
    try:
        wait_until(lambda: next(m for m in app.get("/api/models").json()["models"]
                                if m["name"] == "qwen3-4b")["state"] == "ready", 90, interval=0.5,
                   message="qwen3-4b ready")
        deep = app.post("/api/health/deep/run").json()
        [check] = [c for c in deep["checks"] if c["name"] == "qwen3-4b"]
        assert check["type"] == "model" and check["check"] == "chat" and check["node"] == "spark2"
        assert check["ok"] and "paris" in check["detail"].lower() and check["latency_ms"] > 0, check
        quick = {t["name"]: t for t in app.get("/api/health/services").json()["targets"]}
        assert quick["qwen3-4b"]["ok"] and quick["qwen3-4b"]["type"] == "model"
    finally:
        app.post("/api/models/qwen3-4b/stop")
        wait_until(lambda: next(m for m in app.get("/api/models").json()["models"]
                                if m["name"] == "qwen3-4b")["state"] == "stopped", 60, message="qwen3-4b stopped")
