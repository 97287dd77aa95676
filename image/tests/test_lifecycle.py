"""Launch, stop and swap against two simulated Sparks: real sshd, sparksim's docker, a vLLM-like
server whose tokens come from llama.cpp. The app runs under uvicorn exactly as a user starts it."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from conftest import RunningApp, launching_app_fixtures, wait_until

pytestmark = pytest.mark.integration

CANARY = "/tmp/spark-control-canary"


# The app for the whole module; every test ends with every node up, no model deployed, no container.
app, clean_nodes = launching_app_fixtures("lifecycle", stop_within_s=90, poll_s=0.5)


def model_state(app, name: str) -> dict:
    entry = next(m for m in app.get("/api/models").json()["models"] if m["name"] == name)
    return entry["deployment"] or {"state": "stopped"}


def wait_for_state(app, name: str, state: str, timeout: float = 90) -> dict:
    def reached():
        d = model_state(app, name)
        if d["state"] == "failed" and state != "failed":
            pytest.fail(f"{name} failed: {d['detail']}\n{app.log()[-3000:]}")
        return d if d["state"] == state else None

    return wait_until(reached, timeout, interval=0.3, message=f"{name} {state}")


def chat(endpoint: str, model: str) -> str:
    r = httpx.post(f"{endpoint}/v1/chat/completions", timeout=60, json={
        "model": model, "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def test_launch_on_spark2_answers_then_stops(app, sim_cluster):
    r = app.post("/api/models/gpt-oss-20b/launch", json={"placement": "spark2"})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "starting" and r.json()["nodes"] == ["spark2"]
    ready = wait_for_state(app, "gpt-oss-20b", "ready")
    assert ready["endpoint"].startswith(f"http://{sim_cluster.node('spark2').address}:")
    assert "paris" in chat(ready["endpoint"], "gpt-oss-20b").lower()
    gateway = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
    assert "gpt-oss-20b" in [m.id for m in gateway.models.list().data]
    reply = gateway.chat.completions.create(model="gpt-oss-20b", max_tokens=12, temperature=0, messages=[
        {"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "paris" in reply.choices[0].message.content.lower()
    assert "spark-control-gpt-oss-20b" in sim_cluster.ssh("spark2", "docker ps --format '{{.Names}}'").stdout
    assert sim_cluster.ssh("spark1", "docker ps -q").stdout.strip() == "", "spark1 untouched"

    logs = app.get("/api/models/gpt-oss-20b/logs", params={"tail": 50}).text
    assert "vllm" in logs.lower()

    assert app.post("/api/models/gpt-oss-20b/stop").status_code == 202
    wait_until(lambda: model_state(app, "gpt-oss-20b")["state"] == "stopped", 30, message="stopped")
    assert sim_cluster.ssh("spark2", "docker ps -aq").stdout.strip() == ""


def test_two_node_launch_becomes_ready(app, sim_cluster):
    r = app.post("/api/models/qwen3-235b-a22b/launch", json={"placement": "both"})
    assert r.status_code == 202, r.text
    ready = wait_for_state(app, "qwen3-235b-a22b", "ready", timeout=120)
    assert ready["nodes"] == ["spark1", "spark2"]
    assert ready["containers"] == {"spark1": "spark-control-qwen3-235b-a22b",
                                   "spark2": "spark-control-qwen3-235b-a22b-worker"}
    assert chat(ready["endpoint"], "qwen3-235b-a22b")


def test_swap_events_end_in_ready(app):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    events: list[dict] = []

    def follow():
        with httpx.stream("GET", f"{app.url}/api/swap/events", timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["model"] == "gemma-3-27b-it" and events[-1]["state"] in ("ready", "failed"):
                        return

    answers: list = []

    def ask_incoming_model():
        gateway = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0, timeout=120)
        try:
            reply = gateway.chat.completions.create(model="gemma-3-27b-it", max_tokens=3,
                                                    messages=[{"role": "user", "content": "Say hi"}])
            answers.append(reply.choices[0].message.content)
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            answers.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    r = app.post("/api/swap", json={"model": "gemma-3-27b-it", "placement": "spark1"})
    assert r.status_code == 202, r.text
    clients = [threading.Thread(target=ask_incoming_model) for _ in range(20)]
    for t in clients:
        t.start()
    reader.join(timeout=120)
    for t in clients:
        t.join(timeout=60)
    failures = [a for a in answers if not isinstance(a, str)]
    assert len(answers) == 20 and not failures, f"during the swap: {failures[:3]}"
    states = [(e["model"], e["state"]) for e in events]
    assert ("qwen3-4b", "stopping") in states and ("qwen3-4b", "stopped") in states
    assert states[-1] == ("gemma-3-27b-it", "ready"), states
    assert states.index(("qwen3-4b", "stopped")) < states.index(("gemma-3-27b-it", "loading"))
    assert model_state(app, "qwen3-4b")["state"] == "stopped"


def test_a_second_model_runs_beside_the_first_when_it_fits(app, sim_cluster):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    r = app.post("/api/models/bge-m3/launch", json={"placement": "spark1"})  # an embedder on its own port
    assert r.status_code == 202, r.text
    wait_for_state(app, "bge-m3", "ready")
    assert model_state(app, "qwen3-4b")["state"] == "ready"
    # Not enough memory left beside them for the 120B: refused with the figures, nothing started.
    r = app.post("/api/models/gpt-oss-120b/launch", json={"placement": "spark1"})
    assert r.status_code == 400 and "spark1" in r.json()["error"]["message"], r.text


def test_second_operation_on_a_busy_node_is_409(app):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    r = app.post("/api/swap", json={"model": "gpt-oss-20b", "placement": "spark1"})
    assert r.status_code == 409
    assert "spark1 is busy launching qwen3-4b" in r.json()["error"]["message"]
    wait_for_state(app, "qwen3-4b", "ready")


def test_refusals_before_any_ssh_call(app, sim_cluster):
    # With both nodes down, a refusal that needed SSH would say "unreachable": these must not.
    for node in sim_cluster.nodes:
        node.crash()
    try:
        r = app.post("/api/models/gpt-oss-20b/launch",
                     json={"placement": "spark1", "overrides": {"extra_args": ["--max-model-length", "4096"]}})
        assert r.status_code == 400
        assert "--max-model-length" in r.json()["error"]["message"] and "--max-model-len" in r.json()["error"]["message"]
        r = app.post("/api/models/gpt-oss-120b/launch",
                     json={"placement": "spark1", "overrides": {"gpu_memory_utilization": 0.3}})
        assert r.status_code == 400
        assert "memory" in r.json()["error"]["message"].lower()
    finally:
        for node in sim_cluster.nodes:
            node.revive()


def test_stop_while_loading_aborts_the_load(app, sim_cluster):
    assert app.post("/api/models/gpt-oss-120b/launch", json={"placement": "spark1"}).status_code == 202
    wait_until(lambda: model_state(app, "gpt-oss-120b")["state"] == "loading", 30, interval=0.1, message="loading")
    assert app.post("/api/models/gpt-oss-120b/stop").status_code == 202
    wait_until(lambda: model_state(app, "gpt-oss-120b")["state"] == "stopped", 30, message="stopped")
    assert sim_cluster.ssh("spark1", "docker ps -aq").stdout.strip() == ""


def test_dry_run_shows_the_exact_commands(app):
    body = app.get("/api/models/qwen3-235b-a22b/command", params={"placement": "both"}).json()
    commands = {c["node"]: c["command"] for c in body["commands"]}
    assert commands["spark1"].startswith("docker run -d --name spark-control-qwen3-235b-a22b ")
    assert "--node-rank 1" in commands["spark2"] and "--headless" in commands["spark2"]
    assert body["preflight"]["ok"] is True, body["preflight"]


@pytest.mark.parametrize("request_path, body", [
    ("/api/models/gpt-oss-20b/launch", {"placement": f"spark1;touch {CANARY}"}),
    (f"/api/models/gpt-oss-20b$(touch {CANARY})/launch", {}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2", "overrides": {"extra_args": [f"$(touch {CANARY})"]}}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2", "overrides": {"env": {"X": f"`touch {CANARY}`"}}}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2", "overrides": {"env": {f"A;touch {CANARY}": "1"}}}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2", "overrides": {"image": f"x;touch {CANARY}"}}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2", "overrides": {"port": f"8000;touch {CANARY}"}}),
    ("/api/models/gpt-oss-20b/launch", {"placement": "spark2",
                                        "overrides": {"gpu_memory_utilization": f"0.5; touch {CANARY}"}}),
    ("/api/swap", {"model": f"gpt-oss-20b\ntouch {CANARY}", "placement": "spark2"}),
])
def test_hostile_values_never_execute_on_a_node(app, sim_cluster, request_path, body):
    r = app.post(request_path, json=body)
    if r.status_code == 202:  # accepted as a literal argument: let it run its course
        wait_until(lambda: model_state(app, "gpt-oss-20b")["state"] in ("ready", "failed"), 90, message="settled")
    else:
        assert r.status_code in (400, 404, 422), r.text
        assert r.json()["error"]["message"]
    for node in sim_cluster.nodes:
        assert sim_cluster.ssh(node.name, f"test -e {CANARY} && echo FOUND || echo clean").stdout.strip() == "clean"


def test_node_dying_while_loading_fails_with_reason(app, sim_cluster):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    assert app.post("/api/models/gpt-oss-20b/launch", json={"placement": "spark2"}).status_code == 202
    wait_until(lambda: model_state(app, "gpt-oss-20b")["state"] == "loading", 30, interval=0.1, message="loading")
    sim_cluster.node("spark2").crash()
    failed = wait_until(lambda: (d := model_state(app, "gpt-oss-20b"))["state"] == "failed" and d, 20,
                        message="launch failed after its node died")
    assert "spark2" in failed["detail"]
    assert model_state(app, "qwen3-4b")["state"] == "ready", "the other node's model is untouched"
    assert "spark-control-qwen3-4b" in sim_cluster.ssh("spark1", "docker ps --format '{{.Names}}'").stdout


def test_a_leftover_exited_container_does_not_block_a_launch(app, sim_cluster):
    # What a crash leaves behind: an exited container with the model's name.
    sim_cluster.ssh("spark1", "docker run --name spark-control-qwen3-4b nvcr.io/nvidia/vllm:25.09-py3 true", check=True)
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")


def test_state_survives_an_app_restart(app, sim_cluster, tmp_path):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark2"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    second = RunningApp({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(tmp_path / "c.json"),
                         "LAUNCH_POLL_INTERVAL_S": "0.3"}, tmp_path / "second.log").wait_ready()
    try:
        ready = wait_until(lambda: (d := model_state(second, "qwen3-4b"))["state"] == "ready" and d, 30,
                           message="a fresh app finds the running model on the node")
        assert ready["nodes"] == ["spark2"] and ready["containers"] == {"spark2": "spark-control-qwen3-4b"}
    finally:
        second.stop()


def replicas(app, name: str) -> dict[str, dict]:
    entry = next(m for m in app.get("/api/models").json()["models"] if m["name"] == name)
    return {"+".join(d["nodes"]): d for d in entry["replicas"]}


def test_a_replica_on_the_other_node_shares_the_load_and_stops_alone(app, sim_cluster, tmp_path):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    again = app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"})
    assert again.status_code == 409 and "placement: spark2" in again.json()["error"]["message"]
    second = app.post("/api/models/qwen3-4b/launch", json={"placement": "spark2"})
    assert second.status_code == 202, second.text
    assert second.json()["deployment_id"] == "qwen3-4b@spark2"
    wait_until(lambda: {d["state"] for d in replicas(app, "qwen3-4b").values()} == {"ready"}, 90,
               message="both replicas ready")
    listed = next(m for m in httpx.get(f"{app.url}/v1/models").json()["data"] if m["id"] == "qwen3-4b")
    assert listed["spark_control"]["nodes"] == ["spark1", "spark2"]
    gateway = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)
    for _ in range(4):
        reply = gateway.chat.completions.create(model="qwen3-4b", max_tokens=12, temperature=0, messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one word."}])
        assert "paris" in reply.choices[0].message.content.lower()
    served = {node: sim_cluster.ssh(node, "docker logs spark-control-qwen3-4b 2>&1 | grep -c 'POST /v1/chat'").stdout
              for node in ("spark1", "spark2")}
    assert all(int(count.strip() or 0) >= 1 for count in served.values()), served

    # A fresh app finds both replicas on the nodes.
    restarted = RunningApp({**sim_cluster.app_env(), "CONNECTIVITY_LOG": str(tmp_path / "c.json"),
                            "LAUNCH_POLL_INTERVAL_S": "0.3"}, tmp_path / "restarted.log").wait_ready()
    try:
        wait_until(lambda: {n: d["state"] for n, d in replicas(restarted, "qwen3-4b").items()}
                   == {"spark1": "ready", "spark2": "ready"}, 30, message="a fresh app finds both replicas")
    finally:
        restarted.stop()

    stopped = app.post("/api/models/qwen3-4b/stop", params={"node": "spark2"})
    assert stopped.status_code == 202 and stopped.json()["stopping"] == ["qwen3-4b@spark2"]
    wait_until(lambda: list(replicas(app, "qwen3-4b")) == ["spark1"], 30, message="only spark1 left")
    assert sim_cluster.ssh("spark2", "docker ps -aq").stdout.strip() == ""
    assert model_state(app, "qwen3-4b")["state"] == "ready"
    reply = gateway.chat.completions.create(model="qwen3-4b", max_tokens=4, messages=[
        {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


def test_a_swap_interrupted_by_its_node_dying_ends_failed_with_the_reason(app, sim_cluster):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    wait_for_state(app, "qwen3-4b", "ready")
    assert app.post("/api/swap", json={"model": "gemma-3-27b-it", "placement": "spark1"}).status_code == 202
    wait_until(lambda: model_state(app, "gemma-3-27b-it")["state"] == "loading", 60, interval=0.1,
               message="the incoming model loading")
    sim_cluster.node("spark1").crash()
    failed = wait_until(lambda: (d := model_state(app, "gemma-3-27b-it"))["state"] == "failed" and d, 20,
                        message="the swap failed after its node died")
    assert "spark1" in failed["detail"]
    assert model_state(app, "qwen3-4b")["state"] == "stopped", "the outgoing model had already gone"
    assert app.get("/api/models").json()["busy"] == {}, "no node is left claimed by the broken swap"
    sim_cluster.node("spark1").revive()
    revived_at = time.time()
    # Once a probe after the revival answers (SSH backs off up to 8 s), the node takes a new launch.
    wait_until(lambda: (n := app.get("/api/connectivity").json()["nodes"]["spark1"])["state"] == "up"
               and n["last_check"] > revived_at, 20, message="spark1 answering again")
    relaunch = app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"})
    assert relaunch.status_code == 202, relaunch.text
    wait_for_state(app, "qwen3-4b", "ready")


def test_a_node_blackholed_while_loading_fails_the_launch_and_nothing_hangs(app, sim_cluster):
    if sim_cluster.network != "netns":
        pytest.skip("blackholing needs the nodes in their own network namespaces")
    assert app.post("/api/models/gpt-oss-20b/launch", json={"placement": "spark2"}).status_code == 202
    wait_until(lambda: model_state(app, "gpt-oss-20b")["state"] == "loading", 30, interval=0.1, message="loading")
    node = sim_cluster.node("spark2")
    node.blackhole()
    try:
        failed = wait_until(lambda: (d := model_state(app, "gpt-oss-20b"))["state"] == "failed" and d, 30,
                            message="launch failed after its node vanished")
        assert "spark2" in failed["detail"]
        assert app.get("/api/models").json()["busy"] == {}
    finally:
        node.restore_network()
    wait_until(lambda: app.get("/api/connectivity").json()["nodes"]["spark2"]["state"] == "up", 30,
               message="spark2 back")
