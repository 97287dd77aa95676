"""GET /api/disk and DELETE /api/disk/cache against the simulated Sparks: the figures are the ones
`du`/`df` give on the node, a running model's cache cannot be deleted, another one can."""

from __future__ import annotations

import uuid

import httpx
import pytest

from conftest import launching_app_fixtures

pytestmark = pytest.mark.integration

HUB = "$HOME/.cache/huggingface/hub"

# The app for the whole module; every test ends with no model deployed and no container.
app, clean_nodes = launching_app_fixtures("disk", stop_within_s=60, poll_s=0.5)


def hf_download(sim_cluster, node: str, repo: str) -> str:
    """Put a repo in the node's cache with the node's own `hf`, as an operator would."""
    sim_cluster.ssh(node, f"SPARKSIM_HF_SECONDS=0.2 hf download {repo} --cache-dir {HUB}", check=True)
    return "models--" + repo.replace("/", "--")


def delete_cache(app, node: str, dirname: str, **kw) -> httpx.Response:
    return httpx.request("DELETE", f"{app.url}/api/disk/cache", json={"node": node, "dirname": dirname},
                         timeout=30, **kw)


def node_entry(app, node: str) -> dict:
    return next(n for n in app.get("/api/disk").json()["nodes"] if n["node"] == node)


def test_figures_match_du_and_df_on_the_node(app, sim_cluster):
    dirname = hf_download(sim_cluster, "spark2", f"sparksim/disk-{uuid.uuid4().hex[:8]}")
    entry = node_entry(app, "spark2")
    assert entry["error"] is None
    cache = next(c for c in entry["caches"] if c["dirname"] == dirname)
    du = sim_cluster.ssh("spark2", f"du -sb {HUB}/{dirname}", check=True).stdout.split()[0]
    assert cache["size_bytes"] == int(du) > 2_000_000  # two or three 1.2 MB shards
    assert cache["repo_id"] == dirname.removeprefix("models--").replace("--", "/") and cache["in_use_by"] == []

    df = sim_cluster.ssh("spark2", f"df -P -B1 {HUB} | tail -1", check=True).stdout.split()
    fs = next(f for f in entry["filesystems"] if "huggingface" in f["holds"])
    assert fs["mountpoint"] == df[5] and fs["filesystem"] == df[0]
    assert fs["size_bytes"] == int(df[1])
    # Used/available move with whatever else writes to this machine's disk meanwhile: close, not equal.
    assert abs(fs["used_bytes"] - int(df[2])) < 200_000_000
    assert abs(fs["available_bytes"] - int(df[3])) < 200_000_000


def test_running_models_cache_is_refused_another_is_deleted(app, sim_cluster, _engines_built):
    # gpt-oss-20b's weights on both nodes; the model then runs on spark1 only.
    dirname = hf_download(sim_cluster, "spark1", "openai/gpt-oss-20b")
    hf_download(sim_cluster, "spark2", "openai/gpt-oss-20b")
    r = app.post("/api/models/gpt-oss-20b/launch", json={"placement": "spark1"})
    assert r.status_code == 202, r.text

    refused = delete_cache(app, "spark1", dirname)
    assert refused.status_code == 409, refused.text
    assert "gpt-oss-20b" in refused.json()["error"]["message"]
    assert sim_cluster.ssh("spark1", f"test -d {HUB}/{dirname}").returncode == 0, "still there"
    in_use = next(c for c in node_entry(app, "spark1")["caches"] if c["dirname"] == dirname)["in_use_by"]
    assert in_use and "gpt-oss-20b" in in_use[0]

    size = int(sim_cluster.ssh("spark2", f"du -sb {HUB}/{dirname}", check=True).stdout.split()[0])
    deleted = delete_cache(app, "spark2", dirname)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"node": "spark2", "dirname": dirname, "deleted": True, "freed_bytes": size}
    assert sim_cluster.ssh("spark2", f"test -e {HUB}/{dirname}").returncode == 1
    assert dirname not in [c["dirname"] for c in node_entry(app, "spark2")["caches"]]
    assert delete_cache(app, "spark2", dirname).status_code == 404


@pytest.mark.parametrize("dirname", ["..", "models--a--b/../../..", "models--a--b;id", "$(id)", "models--a",
                                     "models--a--b--c", "-rf", "models--a--b ", "/etc", "models--..--x"])
def test_unsafe_dirnames_are_refused(app, dirname):
    r = delete_cache(app, "spark1", dirname)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "dirname"


def test_delete_needs_the_dashboards_origin(app):
    r = delete_cache(app, "spark1", "models--a--b", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
