"""The simulated Hugging Face Hub: which repos exist, and the files each one holds.

Every repo is generated from its id, so a download on Spark 1 and a second one on Spark 2 give
byte-identical files (as the real Hub would). The files have real formats: `config.json`, a
`model.safetensors.index.json` naming 2-3 shards, and shards with a valid safetensors header
(8-byte little-endian header length, JSON header padded with spaces to 8 bytes, tensor data).

Repos that fail on purpose (the real CLI's errors):
  - a name containing `doesnotexist`: 404 Repository Not Found;
  - a name containing `gated`: 401 unless HF_TOKEN is set;
  - a revision other than main, v1.0 or a 40-hex commit: 404 Revision Not Found.
Names containing `slow` take 30 s instead of `SPARKSIM_HF_SECONDS` (default 2), so a test can
cancel them, and names containing `steady` 10 s (long enough to watch, short enough to wait
for); names containing `tiny` have one `model.safetensors` and no index.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct
from dataclasses import dataclass

KNOWN_REVISIONS = ("main", "v1.0")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
SHARD_BYTES = 1_200_000  # small enough for tests, big enough for a few progress updates per shard


class HubError(Exception):
    """What the real CLI prints for an HTTP error, with its exit status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RepoFile:
    name: str
    content: bytes
    lfs: bool  # LFS files are stored under their sha256; others under their git blob sha1

    @property
    def blob_name(self) -> str:
        if self.lfs:
            return hashlib.sha256(self.content).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()


def download_seconds(repo_id: str) -> float:
    if "slow" in repo_id:
        return 30.0
    if "steady" in repo_id:
        return 10.0
    return float(os.environ.get("SPARKSIM_HF_SECONDS", "2"))


def resolve(repo_id: str, revision: str, token: str | None) -> str:
    """The commit a revision points at, or HubError as the real Hub answers."""
    api = f"https://huggingface.co/api/models/{repo_id}/revision/{revision}"
    request_id = hashlib.sha1(f"{repo_id}{revision}".encode()).hexdigest()[:24]
    if "doesnotexist" in repo_id:
        raise HubError(
            f"404 Client Error. (Request ID: Root=1-{request_id})\n\nRepository Not Found for url: {api}.\n"
            "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
            "If you are trying to access a private or gated repo, make sure you are authenticated. "
            "For more details, see https://huggingface.co/docs/huggingface_hub/authentication")
    if "gated" in repo_id and not token:
        raise HubError(
            f"401 Client Error. (Request ID: Root=1-{request_id})\n\nCannot access gated repo for url {api}.\n"
            f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
            "to access it. Please log in.")
    if _COMMIT_RE.fullmatch(revision):
        return revision
    if revision not in KNOWN_REVISIONS:
        raise HubError(
            f"404 Client Error. (Request ID: Root=1-{request_id})\n\nRevision Not Found for url: {api}.\n"
            f"Invalid rev id: {revision}")
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


def _safetensors(tensors: dict[str, tuple[str, list[int]]], rng: random.Random) -> bytes:
    """A valid safetensors file: header length, JSON header (space-padded to 8 bytes), data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = 2 * shape[0] * shape[1]  # F16/BF16
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + rng.randbytes(offset)


def files(repo_id: str, commit: str) -> list[RepoFile]:
    """The repo's files at `commit`, deterministic."""
    rng = random.Random(f"{repo_id}@{commit}")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
              "num_hidden_layers": 6, "torch_dtype": "bfloat16", "_name_or_path": repo_id}
    out = [RepoFile("config.json", json.dumps(config, indent=2).encode() + b"\n", False),
           RepoFile("generation_config.json", b'{\n  "max_new_tokens": 256\n}\n', False)]
    n_shards = 1 if "tiny" in repo_id else 2 + len(repo_id) % 2
    rows = SHARD_BYTES // (2 * 256 * 2)  # two tensors of rows x 256 per shard
    weight_map: dict[str, str] = {}
    total = 0
    for k in range(1, n_shards + 1):
        name = "model.safetensors" if n_shards == 1 else f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        tensors = {f"model.layers.{2 * k + i}.mlp.weight": ("BF16", [rows, 256]) for i in range(2)}
        content = _safetensors(tensors, rng)
        out.append(RepoFile(name, content, True))
        weight_map.update({t: name for t in tensors})
        total += 2 * rows * 256 * len(tensors)
    if n_shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        out.append(RepoFile("model.safetensors.index.json", json.dumps(index, indent=2).encode() + b"\n", False))
    return out
