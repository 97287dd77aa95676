"""sparksim's `hf` on the simulated Sparks, run over SSH like the product runs it: a real Hugging
Face cache layout with real-format files, tqdm-shaped progress, the Hub's errors, cancel; and the
node-to-node SSH that the copy needs."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid

import pytest

from app.download_progress import Progress

pytestmark = pytest.mark.integration

HUB = "$HOME/.cache/huggingface/hub"


def hf(sim_cluster, node: str, args: str, env: str = "SPARKSIM_HF_SECONDS=0.5"):
    return sim_cluster.ssh(node, f"{env} hf download {args} --cache-dir {HUB}")


def repo_dir(repo: str) -> str:
    return f"{HUB}/models--{repo.replace('/', '--')}"


def test_download_writes_a_real_hf_cache(sim_cluster):
    repo = f"sparksim/layout-{uuid.uuid4().hex[:8]}"
    result = hf(sim_cluster, "spark1", repo)
    assert result.returncode == 0, result.stderr
    # The bytes of stderr, \r included (subprocess's text mode would turn \r into \n).
    raw = sim_cluster.ssh("spark1", f"SPARKSIM_HF_SECONDS=0.5 hf download {repo}-raw --cache-dir {HUB} 2>&1 >/dev/null"
                                    " | base64 -w0", check=True).stdout
    snapshot = result.stdout.strip().splitlines()[-1]
    commit = snapshot.rsplit("/", 1)[-1]
    assert snapshot.endswith(f"models--{repo.replace('/', '--')}/snapshots/{commit}") and len(commit) == 40
    assert sim_cluster.ssh("spark1", f"cat {repo_dir(repo)}/refs/main").stdout == commit

    listing = sim_cluster.ssh("spark1", f"cd {snapshot} && for f in *; do printf '%s %s\\n' \"$f\" \"$(readlink \"$f\")\"; done",
                              check=True).stdout.splitlines()
    links = dict(line.split(" ", 1) for line in listing)
    assert all(target.startswith("../../blobs/") for target in links.values())
    index = json.loads(sim_cluster.ssh("spark1", f"cat {snapshot}/model.safetensors.index.json", check=True).stdout)
    shards = sorted(set(index["weight_map"].values()))
    assert 2 <= len(shards) <= 3 and set(shards) <= set(links)
    for shard in shards:
        data = bytes.fromhex(sim_cluster.ssh("spark1", f"od -An -v -tx1 {snapshot}/{shard} | tr -d ' \\n'",
                                             check=True).stdout)
        # An LFS blob is named by the sha256 of its content; the file is valid safetensors.
        assert links[shard] == f"../../blobs/{hashlib.sha256(data).hexdigest()}"
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        tensors = [t for k, t in header.items() if k != "__metadata__"]
        assert len(data) == 8 + n + max(t["data_offsets"][1] for t in tensors)
        assert all(t["dtype"] == "BF16" and len(t["shape"]) == 2 for t in tensors)

    # The progress is what app/download_progress.py reads: tqdm redraws on stderr.
    stderr = base64.b64decode(raw).decode()
    assert stderr.count("\r") > stderr.count("\n") > 5  # redraws, and a newline per closed bar
    # tqdm's Unicode blocks, as real hf draws them: 3 bytes each, so a log read in byte-counted
    # pieces can be cut inside one (test_download_restart.py reads such a cut over SSH).
    assert "|██████████|" in stderr and "#" not in stderr
    progress = Progress()
    progress.feed(stderr)
    assert progress.files_done == progress.files_total == len(links)
    assert progress.bytes_done == progress.bytes_total > 2_000_000

    again = hf(sim_cluster, "spark1", repo)  # the cache has it all: nothing is downloaded again
    assert again.returncode == 0 and ".safetensors:" not in again.stderr and f"Fetching {len(links)} files" in again.stderr


def test_include_revision_and_hub_errors(sim_cluster):
    repo = f"sparksim/inc-{uuid.uuid4().hex[:8]}"
    result = hf(sim_cluster, "spark2", f"{repo} --revision v1.0 --include '*.json' --include 'model-00001-*'")
    assert result.returncode == 0, result.stderr
    snapshot = result.stdout.strip().splitlines()[-1]
    files = sim_cluster.ssh("spark2", f"ls {snapshot}").stdout.split()
    assert files == ["config.json", "generation_config.json", "model-00001-of-00003.safetensors",
                     "model.safetensors.index.json"]  # the repo id's length gives it 3 shards
    assert sim_cluster.ssh("spark2", f"cat {repo_dir(repo)}/refs/v1.0").stdout == snapshot.rsplit("/", 1)[-1]

    missing = hf(sim_cluster, "spark2", "sparksim/doesnotexist")
    assert missing.returncode == 1 and "404 Client Error" in missing.stderr and "Repository Not Found" in missing.stderr
    gated = hf(sim_cluster, "spark2", "sparksim/gated-model")
    assert gated.returncode == 1 and "401 Client Error" in gated.stderr and "gated repo" in gated.stderr
    with_token = hf(sim_cluster, "spark2", "sparksim/gated-model", env="SPARKSIM_HF_SECONDS=0.2 HF_TOKEN=hf_x")
    assert with_token.returncode == 0, with_token.stderr
    bad_rev = hf(sim_cluster, "spark2", f"{repo} --revision nosuchbranch")
    assert bad_rev.returncode == 1 and "Revision Not Found" in bad_rev.stderr
    usage = hf(sim_cluster, "spark2", f"{repo} --no-such-flag")
    assert usage.returncode == 2 and "Error:" in usage.stderr


def test_sigterm_stops_the_download_and_leaves_the_incomplete_blob(sim_cluster):
    repo = f"sparksim/slow-{uuid.uuid4().hex[:8]}"
    result = sim_cluster.ssh("spark1", f"hf download {repo} --cache-dir {HUB} 2>/dev/null & p=$!; sleep 3; "
                                       f"kill -TERM $p; wait $p; echo \"exit=$?\"; ls {repo_dir(repo)}/blobs")
    assert "exit=143" in result.stdout
    assert any(name.endswith(".incomplete") for name in result.stdout.split())


def test_nodes_reach_each_other_over_ssh_with_verified_host_keys(sim_cluster):
    spark2 = sim_cluster.node("spark2")
    result = sim_cluster.ssh("spark1", f"ssh -p {spark2.port} -o BatchMode=yes -o StrictHostKeyChecking=yes "
                                       f"{spark2.user}@{spark2.address} 'echo $USER; command -v rsync'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [spark2.user, "/usr/bin/rsync"]
