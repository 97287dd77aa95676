"""GET /api/status, /api/connectivity and /api/health: the real app, real sshd nodes, real failures."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import IMAGE_DIR, wait_until
from sparksim.node import GB10_MEMTOTAL_KB

pytestmark = pytest.mark.integration


def node_status(app, name: str) -> dict:
    return next(n for n in app.get("/api/status").json()["nodes"] if n["name"] == name)


def test_status_of_both_nodes(sim_cluster, start_app):
    app = start_app(sim_cluster.app_env())
    sim_cluster.ssh("spark2", "docker run -d --name status-probe --gpus all nvcr.io/nvidia/vllm:25.09-py3 sleep 60",
                    check=True)
    try:
        body = app.get("/api/status").json()
        assert [n["name"] for n in body["nodes"]] == ["spark1", "spark2"]
        for node in body["nodes"]:
            assert node["reachable"] is True, node["reason"]
            assert node["gpus"][0]["name"] == "NVIDIA GB10"
            assert node["gpus"][0]["temperature_c"] > 0 and node["gpus"][0]["memory_total_mib"] is None
            assert node["memory"]["total_bytes"] == GB10_MEMTOTAL_KB * 1024  # unified memory, from /proc/meminfo
            assert node["disks"] and node["disks"][0]["size_bytes"] > 0
            assert node["problems"] == []
        spark2 = body["nodes"][1]
        assert [c["name"] for c in spark2["containers"]] == ["status-probe"]
        assert spark2["containers"][0]["state"] == "running"
        assert [c["name"] for c in body["nodes"][0]["containers"]] == []
        assert spark2["gpu_processes"], "a --gpus container is a compute process"
    finally:
        sim_cluster.ssh("spark2", "docker rm -f status-probe")


def test_crashed_node_is_down_within_10s_and_recovers_without_restart(sim_cluster, start_app):
    app = start_app(sim_cluster.app_env())
    node2 = sim_cluster.node("spark2")
    wait_until(lambda: app.get("/api/connectivity").json()["nodes"].get("spark2", {}).get("state") == "up",
               10, message="spark2 up in the connectivity log")
    crashed_at = time.monotonic()
    node2.crash()
    try:
        down = wait_until(lambda: (s := node_status(app, "spark2")) and not s["reachable"] and s, 10,
                          message="spark2 shown down in /api/status")
        assert down["reason"], "a down node says why"
        assert node_status(app, "spark1")["reachable"] is True
        conn = wait_until(lambda: (c := app.get("/api/connectivity").json())["nodes"]["spark2"]["state"] == "down"
                          and c, 10, message="spark2 down in /api/connectivity")
        assert time.monotonic() - crashed_at < 10
        assert conn["nodes"]["spark1"]["state"] == "up"
        assert conn["transitions"][0]["node"] == "spark2" and conn["transitions"][0]["state"] == "down"
        assert conn["transitions"][0]["reason"]
    finally:
        node2.revive()
    wait_until(lambda: node_status(app, "spark2")["reachable"], 15, message="spark2 back up without an app restart")
    conn = wait_until(lambda: (c := app.get("/api/connectivity").json())["nodes"]["spark2"]["state"] == "up" and c,
                      10, message="spark2 up again in /api/connectivity")
    assert conn["nodes"]["spark2"]["failures"] >= 1 and conn["nodes"]["spark2"]["uptime_ratio"] < 1.0


def test_missing_data_directories_neither_crash_nor_500(sim_cluster, start_app, tmp_path):
    conn_log = tmp_path / "no" / "such" / "dir" / "connectivity.json"
    app = start_app({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(conn_log),
                     "REDACTION_MAP_DB": str(tmp_path / "also" / "missing" / "maps.db")})
    assert app.get("/api/status").status_code == 200
    assert app.get("/api/connectivity").status_code == 200
    wait_until(conn_log.exists, 10, message="the connectivity log written into the created directory")
    assert set(json.loads(conn_log.read_text())["nodes"]) == {"spark1", "spark2"}
    assert (tmp_path / "also" / "missing").is_dir()


def test_unwritable_connectivity_log_still_answers(sim_cluster, start_app, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = start_app({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(blocker / "connectivity.json")})
    r = wait_until(lambda: "cannot write" in ((r := app.get("/api/connectivity")).json()["log_problem"] or "")
                   and r, 10, message="log_problem reported")
    assert r.status_code == 200 and "cannot write" in r.json()["log_problem"]
    assert app.get("/api/status").status_code == 200


def test_health_and_check_now(sim_cluster, start_app):
    app = start_app(sim_cluster.app_env())
    health = app.get("/api/health").json()
    assert health["status"] == "ok" and health["nodes"] == ["spark1", "spark2"]
    summary = app.post("/api/connectivity/check").json()
    assert summary["nodes"]["spark1"]["state"] == "up" and summary["nodes"]["spark1"]["latency_ms"] > 0


def test_status_stream_sends_server_sent_events(sim_cluster, start_app):
    import httpx

    app = start_app(sim_cluster.app_env())
    with httpx.stream("GET", f"{app.url}/api/status/stream", timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
    assert {n["name"] for n in events[-1]["nodes"]} == {"spark1", "spark2"}
    assert events[-1]["connectivity"]["nodes"]["spark1"]["state"] == "up"


def test_no_nodes_configured_shows_this_machine(start_app):
    app = start_app({})
    nodes = app.get("/api/status").json()["nodes"]
    assert len(nodes) == 1 and nodes[0]["host"] == "local" and nodes[0]["reachable"] is True
    assert nodes[0]["memory"]["total_bytes"] > 0
    # This machine has no GPU tools: said plainly instead of failing the whole status.
    assert any("nvidia-smi" in p["message"] for p in nodes[0]["problems"])


@pytest.mark.parametrize("env, named", [
    ({"BIND_PORT": "abc"}, "BIND_PORT"),
    ({"SPARK1_HOST": "10.0.0.1", "SPARK1_PORT": "twenty-two"}, "SPARK1_PORT"),
])
def test_bad_configuration_stops_startup_with_one_clear_line(env, named, tmp_path):
    import os

    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SSH_"))}, **env,
                "CONNECTIVITY_LOG": str(tmp_path / "c.json")}
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "app.server:app", "--port", "0"], cwd=IMAGE_DIR,
                          env=full_env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert named in proc.stderr and "configuration error" in proc.stderr
    assert "Traceback" not in proc.stderr
