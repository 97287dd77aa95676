"""Downloads under faults: the node's disk fills up mid-download, the node vanishes from the
network mid-download. Each ends in a clear state with the reason; nothing hangs."""

from __future__ import annotations

import pwd
import subprocess
import time
import uuid

import pytest

from conftest import RunningApp, sim_app, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    # A node unreachable for 15 s ends a download (600 s by default: long enough for a reboot).
    with sim_app(sim_cluster, tmp_path_factory.mktemp("download-faults"), JOB_UNREACHABLE_GIVE_UP_S="15") as running:
        yield running


def settled(app: RunningApp, download_id: str, timeout: float) -> dict:
    return wait_until(lambda: (d := app.get(f"/api/downloads/{download_id}").json())["state"]
                      in ("done", "failed", "cancelled") and d, timeout, message=f"download {download_id} settled")


def test_a_full_disk_fails_the_download_with_the_reason(app, sim_cluster):
    node = sim_cluster.node("spark1")
    hub = node.home / ".cache" / "huggingface" / "hub"
    # A 1 MB filesystem over the node's Hugging Face cache, inside the node's own mount namespace
    # (what its sshd and every session see): the first shard does not fit.
    owner = pwd.getpwnam(node.user)
    mount = ["nsenter", "-t", str(node.proc.pid), "-m", "mount", "-t", "tmpfs",
             "-o", f"size=1m,uid={owner.pw_uid},gid={owner.pw_gid},mode=755", "tmpfs", str(hub)]
    subprocess.run(mount, check=True)
    try:
        r = app.post("/api/downloads", json={"repo_id": f"sparksim/full-{uuid.uuid4().hex[:8]}", "node": "spark1"})
        assert r.status_code == 202, r.text
        failed = settled(app, r.json()["id"], 60)
        assert failed["state"] == "failed", failed
        assert "No space left on device" in failed["message"] and "spark1" in failed["message"], failed["message"]
    finally:
        subprocess.run(["nsenter", "-t", str(node.proc.pid), "-m", "umount", str(hub)], check=True)


def test_a_node_blackholed_mid_download_fails_it_and_nothing_hangs(app, sim_cluster):
    if sim_cluster.network != "netns":
        pytest.skip("blackholing needs the nodes in their own network namespaces")
    r = app.post("/api/downloads", json={"repo_id": f"sparksim/slow-{uuid.uuid4().hex[:8]}", "node": "spark1"})
    assert r.status_code == 202, r.text
    download_id = r.json()["id"]
    wait_until(lambda: app.get(f"/api/downloads/{download_id}").json()["state"] == "downloading", 30,
               message="downloading")
    node = sim_cluster.node("spark1")
    node.blackhole()
    started = time.monotonic()
    try:
        failed = settled(app, download_id, 90)
        took = time.monotonic() - started
        print(f"\nblackholed node: download marked {failed['state']} after {took:.0f} s: {failed['message']}")
        assert failed["state"] == "failed", failed
        assert failed["message"].startswith("lost contact with spark1 for 15 s while downloading sparksim/slow-"), failed
        assert app.get("/api/health").status_code == 200
    finally:
        node.restore_network()
    wait_until(lambda: app.get("/api/connectivity").json()["nodes"]["spark1"]["state"] == "up", 30,
               message="spark1 back")
