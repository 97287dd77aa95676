"""Downloads on the simulated Sparks: `hf download` on spark1 with live progress, rsync to spark2
over SSH between the nodes, every shard verified on both; failures, cancel, hostile input, and
HF_TOKEN kept out of command lines, responses and logs. The app runs as a user starts it."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from conftest import RunningApp, sim_app, wait_until

pytestmark = pytest.mark.integration

TOKEN = "hf_sparkTestTokenDoNotLeak" + uuid.uuid4().hex[:12]
HUB = "$HOME/.cache/huggingface/hub"


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    with sim_app(sim_cluster, tmp_path_factory.mktemp("downloads"), HF_TOKEN=TOKEN) as running:
        yield running


def unique_repo(name: str) -> str:
    return f"sparksim/{name}-{uuid.uuid4().hex[:8]}"


def events_until_end(app: RunningApp, download_id: str, timeout: float = 60) -> list[dict]:
    """Every SSE event of a download, read live until the stream ends with its final state."""
    events = []
    with httpx.stream("GET", f"{app.url}/api/downloads/{download_id}/events", timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def wait_for(app: RunningApp, download_id: str, states: set[str], timeout: float = 60) -> dict:
    return wait_until(lambda: (d := app.get(f"/api/downloads/{download_id}").json())["state"] in states and d,
                      timeout, message=f"download {download_id} in {states}")


def test_download_to_spark1_copied_to_spark2_and_verified(app, sim_cluster):
    repo = unique_repo("model")
    r = app.post("/api/downloads", json={"repo_id": repo})
    assert r.status_code == 202, r.text
    download = r.json()
    assert download["state"] == "queued" and download["node"] == "spark1" and download["copy_to"] == ["spark2"]

    events = events_until_end(app, download["id"])
    states = [e["state"] for e in events if e["kind"] == "state"]
    assert states == ["queued", "downloading", "copying", "verifying", "done"], [e.get("message") for e in events]
    downloading = [e for e in events if e["kind"] == "progress" and e["phase"] == "downloading"]
    byte_counts = [e["bytes_done"] for e in downloading]
    assert len(set(byte_counts)) >= 4, f"progress was not live: {byte_counts}"
    assert byte_counts == sorted(byte_counts) and byte_counts[0] < byte_counts[-1]
    last = downloading[-1]
    assert last["files_done"] == last["files_total"] == 6
    assert 3_500_000 < last["bytes_total"] < 3_700_000  # three 1.2 MB shards, as tqdm rounds them
    assert any(e["rate_bytes_per_s"] and e["eta_s"] is not None for e in downloading)
    copying = [e for e in events if e["kind"] == "progress" and e["phase"] == "copying"]
    assert copying and copying[-1]["where"] == "spark1->spark2"
    assert copying[-1]["bytes_done"] == copying[-1]["bytes_total"] > 3_500_000  # rsync counts exact bytes

    done = app.get(f"/api/downloads/{download['id']}").json()
    assert done["state"] == "done", done["message"]
    by_node = {v["node"]: v for v in done["verification"]}
    assert set(by_node) == {"spark1", "spark2"}
    for v in by_node.values():
        assert v["complete"] and len(v["shards"]) == 3 and v["snapshot"] == done["snapshot"]
    assert by_node["spark1"]["shards"] == by_node["spark2"]["shards"]

    # On spark2 the cache is a real HF cache: relative links into blobs/, and each LFS blob's name
    # is the sha256 of what the link resolves to (so the bytes arrived, not just the links).
    snap = f"{HUB}/models--{repo.replace('/', '--')}/snapshots/{done['snapshot']}"
    shard = "model-00002-of-00003.safetensors"
    link = sim_cluster.ssh("spark2", f'readlink "{snap}/{shard}"', check=True).stdout.strip()
    assert link.startswith("../../blobs/")
    digest = sim_cluster.ssh("spark2", f'sha256sum "{snap}/{shard}"', check=True).stdout.split()[0]
    assert link == f"../../blobs/{digest}"
    # The catalog-independent weights check agrees.
    check = app.get("/api/models/weights", params={"repo_id": repo}).json()
    assert check["problems"] == [] and all(n["complete"] for n in check["nodes"].values())


def test_truncated_shard_on_spark2_is_detected_and_named(app, sim_cluster):
    repo = unique_repo("trunc")
    download = app.post("/api/downloads", json={"repo_id": repo}).json()
    done = wait_for(app, download["id"], {"done", "failed"})
    assert done["state"] == "done", done["message"]
    shard = "model-00002-of-00003.safetensors"
    path = f"{HUB}/models--{repo.replace('/', '--')}/snapshots/{done['snapshot']}/{shard}"
    sim_cluster.ssh("spark2", f'truncate -s 700000 "$(readlink -f "{path}")"', check=True)

    check = app.get("/api/models/weights", params={"repo_id": repo}).json()
    assert check["nodes"]["spark1"]["complete"] is True
    assert check["nodes"]["spark2"]["complete"] is False
    problems = " ".join(check["problems"])
    assert f"spark2: shard {shard} is truncated (700,000 bytes" in problems
    assert "spark1" not in problems.replace("spark1 has", "")


def test_cancel_kills_the_download_on_the_node_and_lists_partial_files(app, sim_cluster):
    repo = unique_repo("slow")  # the simulated Hub takes 30 s for it
    download = app.post("/api/downloads", json={"repo_id": repo, "copy_to": []}).json()
    wait_until(lambda: (app.get(f"/api/downloads/{download['id']}").json()["progress"] or {}).get("bytes_done"),
               30, message="bytes arriving")
    user = sim_cluster.node("spark1").user
    assert sim_cluster.ssh("spark1", f"pgrep -u {user} -f '[s]parksim.hf_cli download {repo}'").stdout.strip()
    # The token reached hf through its environment, never through a command line anyone can read.
    assert TOKEN not in sim_cluster.ssh("spark1", "ps -eo args").stdout

    r = app.post(f"/api/downloads/{download['id']}/cancel")
    assert r.status_code == 200, r.text
    cancelled = wait_for(app, download["id"], {"cancelled", "failed", "done"})
    assert cancelled["state"] == "cancelled", cancelled["message"]
    assert cancelled["partial_files"] and cancelled["partial_files"][0]["name"].endswith(".incomplete"), (cancelled, app.log()[-3000:])
    assert "partial file" in cancelled["message"]
    wait_until(lambda: not sim_cluster.ssh("spark1", f"pgrep -u {user} -f '[s]parksim.hf_cli download {repo}'").stdout.strip(),
               5, message="hf process gone")
    assert app.post(f"/api/downloads/{download['id']}/cancel").status_code == 409


def test_one_transfer_at_a_time_and_a_queued_one_cancels_at_once(app):
    running = app.post("/api/downloads", json={"repo_id": unique_repo("slow"), "copy_to": []}).json()
    queued = app.post("/api/downloads", json={"repo_id": unique_repo("model"), "copy_to": []}).json()
    wait_for(app, running["id"], {"downloading"}, timeout=10)
    assert app.get(f"/api/downloads/{queued['id']}").json()["state"] == "queued"
    again = app.post("/api/downloads", json={"repo_id": running["repo_id"]})
    assert again.status_code == 409 and running["id"] in again.json()["error"]["message"]

    cancelled = app.post(f"/api/downloads/{queued['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["message"] == "cancelled while queued"
    assert app.post(f"/api/downloads/{running['id']}/cancel").json()["state"] == "cancelled"


@pytest.mark.parametrize("body", [
    {"repo_id": "org/x;touch /tmp/spark-control-canary"},
    {"repo_id": "$(touch /tmp/spark-control-canary)/x"},
    {"repo_id": "--help/x"},
    {"repo_id": "org/x", "revision": "main; touch /tmp/spark-control-canary"},
    {"repo_id": "org/x", "revision": "../../etc"},
    {"repo_id": "org/x", "include": ["*.json", "x`touch /tmp/spark-control-canary`"]},
    {"repo_id": "org/x", "include": ["--force-download"]},
    {"repo_id": "org/x", "include": ["../../../.ssh/*"]},
])
def test_hostile_values_are_refused_before_any_node_sees_them(app, sim_cluster, body):
    before = app.get("/api/downloads").json()["downloads"]
    r = app.post("/api/downloads", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "InvalidInput" and error["param"] in ("repo_id", "revision", "include")
    assert app.get("/api/downloads").json()["downloads"] == before
    for node in ("spark1", "spark2"):
        assert sim_cluster.ssh(node, "ls /tmp/spark-control-canary 2>/dev/null").stdout == ""


def test_unknown_node_and_cross_origin_are_refused(app):
    assert app.post("/api/downloads", json={"repo_id": "org/x", "node": "spark9"}).status_code == 404
    r = app.post("/api/downloads", json={"repo_id": "org/x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_missing_repo_fails_with_the_hubs_404(app):
    download = app.post("/api/downloads", json={"repo_id": "sparksim/doesnotexist"}).json()
    failed = wait_for(app, download["id"], {"failed", "done"})
    assert failed["state"] == "failed"
    assert "hf download on spark1 failed (exit status 1)" in failed["message"]
    assert "404" in failed["message"] and "Repository Not Found" in failed["message"]


def test_gated_repo_downloads_with_the_token_and_fails_without(app, sim_cluster, start_app):
    repo = unique_repo("gated")
    download = app.post("/api/downloads", json={"repo_id": repo, "copy_to": []}).json()
    assert wait_for(app, download["id"], {"failed", "done"})["state"] == "done"

    tokenless = start_app(sim_cluster.app_env())
    download = tokenless.post("/api/downloads", json={"repo_id": unique_repo("gated"), "copy_to": []}).json()
    failed = wait_for(tokenless, download["id"], {"failed", "done"})
    assert failed["state"] == "failed" and "401" in failed["message"] and "gated repo" in failed["message"]


def test_include_patterns_choose_the_files(app, sim_cluster):
    repo = unique_repo("configs")
    download = app.post("/api/downloads", json={"repo_id": repo, "include": ["*.json"], "copy_to": []}).json()
    done = wait_for(app, download["id"], {"failed", "done"})
    assert done["state"] == "done", done["message"]
    assert done["verification"][0]["shards"] == [] and "none selected" in done["verification"][0]["note"]
    listed = sim_cluster.ssh("spark1", f"ls {HUB}/models--{repo.replace('/', '--')}/snapshots/*/").stdout.split()
    assert sorted(listed) == ["config.json", "generation_config.json", "model.safetensors.index.json"]


def test_catalog_shows_per_node_whether_weights_are_complete(app):
    repo = "nvidia/NVIDIA-Nemotron-Nano-9B-v2"  # a catalog model's hf_repo
    download = app.post("/api/downloads", json={"repo_id": repo}).json()
    assert wait_for(app, download["id"], {"failed", "done"})["state"] == "done"
    models = {m["hf_repo"]: m for m in app.get("/api/models/weights").json()["models"]}
    assert {n: v["complete"] for n, v in models[repo]["nodes"].items()} == {"spark1": True, "spark2": True}
    absent = models["google/gemma-3-27b-it"]["nodes"]["spark2"]
    assert absent["present"] is False and absent["complete"] is False and "not in" in absent["problem"]
    assert app.get("/api/models/weights", params={"repo_id": "a/b;id"}).status_code == 400


def test_the_token_never_appears_in_responses_or_logs(app):
    # Runs after the others in this module: every download above had HF_TOKEN set.
    listing = app.get("/api/downloads").text
    assert "sparksim/" in listing and TOKEN not in listing
    for d in app.get("/api/downloads").json()["downloads"]:
        assert TOKEN not in app.get(f"/api/downloads/{d['id']}").text
    assert TOKEN not in app.get("/openapi.json").text
    log = app.log()
    assert "download" in log and TOKEN not in log
