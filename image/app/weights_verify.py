"""Are a repo's weights complete on a node? Checked on the node, compared across nodes.

The Hugging Face cache keeps every file once under `blobs/` and makes each snapshot a
directory of relative symlinks into it. A check must therefore follow the links: a snapshot
whose links dangle looks complete to `ls`. For every shard that `model.safetensors.index.json`
names (or the single `model.safetensors`), the node reports:

  - present: the snapshot has the file and its link resolves;
  - complete: the safetensors header is readable (8-byte little-endian length, then JSON) and
    the file is exactly 8 + header length + the largest tensor end offset bytes long. A copy
    or download cut short fails this without reading the gigabytes of tensor data;
  - size: the resolved file's size, which must also equal the source node's.

The check runs as a small Python program fed to the node's `python3` on stdin (DGX OS ships
python3), with the repo's cache directory name and the revision as its only arguments,
both validated and quoted.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from app.errors import NodeError, SparkControlError
from app.shellsafe import quote_args, validate_hf_repo, validate_hf_revision
from app.ssh import NodePool

HUB_DIR = '"$HOME"/.cache/huggingface/hub'

_CHECK_PROGRAM = r'''
import json, os, struct, sys
hub, repo_dir, revision = sys.argv[1], sys.argv[2], sys.argv[3]
root = os.path.join(hub, repo_dir)
out = {"exists": os.path.isdir(root), "snapshot": None, "shards": [], "index": False, "incomplete": [],
       "problem": None}
def finish():
    print(json.dumps(out)); sys.exit(0)
if not out["exists"]:
    finish()
blobs = os.path.join(root, "blobs")
if os.path.isdir(blobs):
    out["incomplete"] = sorted([n, os.path.getsize(os.path.join(blobs, n))] for n in os.listdir(blobs)
                               if n.endswith(".incomplete"))
commit = revision if len(revision) == 40 and os.path.isdir(os.path.join(root, "snapshots", revision)) else None
if commit is None:
    try:
        with open(os.path.join(root, "refs", revision)) as f:  # refs/pr/3 is nested, as huggingface_hub writes it
            commit = f.read().strip()
    except OSError:
        out["problem"] = "no snapshot for revision " + revision + " (refs/" + revision + " is missing)"
        finish()
snap = os.path.join(root, "snapshots", commit)
out["snapshot"] = commit
if not os.path.isdir(snap):
    out["problem"] = "snapshots/" + commit + " is missing"
    finish()
names = []
index_path = os.path.join(snap, "model.safetensors.index.json")
if os.path.lexists(index_path):
    out["index"] = True
    try:
        with open(index_path) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        out["problem"] = "model.safetensors.index.json is unreadable: " + str(exc)[:200]
        finish()
elif os.path.lexists(os.path.join(snap, "model.safetensors")):
    names = ["model.safetensors"]
for name in names:
    path = os.path.join(snap, name)
    shard = {"name": name, "present": os.path.exists(path), "size": None, "expected_size": None, "problem": None}
    out["shards"].append(shard)
    if not shard["present"]:
        shard["problem"] = "dangling link into blobs/" if os.path.islink(path) else "missing"
        continue
    shard["size"] = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > min(shard["size"] - 8, 100 * 1024 * 1024):
                raise ValueError("header length %d does not fit in the file" % n)
            header = json.loads(f.read(n))
        end = max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"] or [0])
        shard["expected_size"] = 8 + n + end
        if shard["size"] != shard["expected_size"]:
            shard["problem"] = "truncated" if shard["size"] < shard["expected_size"] else "longer than its header says"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        shard["problem"] = "unreadable safetensors header: " + str(exc)[:200]
finish()
'''


def repo_dirname(repo_id: str) -> str:
    """`openai/gpt-oss-120b` -> `models--openai--gpt-oss-120b` (the cache's directory name)."""
    return "models--" + validate_hf_repo(repo_id).replace("/", "--")


@dataclass
class NodeWeights:
    node: str
    report: dict | None       # what the node said; None if it could not be asked
    error: str | None = None

    @property
    def complete(self) -> bool:
        r = self.report
        return bool(r and r["exists"] and not r["problem"] and r["shards"]
                    and all(s["problem"] is None for s in r["shards"]))

    def only(self, patterns: list[str]) -> "NodeWeights":
        """The same check limited to the shards a download's include patterns selected."""
        if not patterns or not self.report:
            return self
        shards = [s for s in self.report["shards"] if any(fnmatch.fnmatch(s["name"], p) for p in patterns)]
        return NodeWeights(self.node, {**self.report, "shards": shards}, self.error)

    def to_dict(self) -> dict:
        r = self.report or {}
        missing = None if self.error or r.get("exists") else "the repo is not in ~/.cache/huggingface/hub"
        no_weights = None
        if r.get("exists") and not r.get("problem") and not r.get("shards"):
            no_weights = "no safetensors shards to check (none in the snapshot, or none selected)"
        return {"node": self.node, "present": bool(r.get("exists")), "complete": self.complete,
                "snapshot": r.get("snapshot"), "shards": r.get("shards", []),
                "incomplete_blobs": [{"name": n, "size": s} for n, s in r.get("incomplete", [])],
                "problem": self.error or r.get("problem") or missing, "note": no_weights}


async def check_node(pool: NodePool, node: str, repo_id: str, revision: str = "main") -> NodeWeights:
    command = "python3 - " + HUB_DIR + " " + quote_args([repo_dirname(repo_id), validate_hf_revision(revision)])
    try:
        result = await pool.run(node, command, input=_CHECK_PROGRAM, timeout=120)
        return NodeWeights(node, json.loads(result.stdout))
    except (ValueError, KeyError) as exc:
        return NodeWeights(node, None, f"{node}: the weights check printed something unexpected: {exc}")
    except SparkControlError as exc:
        return NodeWeights(node, None, exc.message if isinstance(exc, NodeError) else f"{node}: {exc.message}")


def compare(source: NodeWeights, copies: list[NodeWeights]) -> list[str]:
    """Every problem, each naming the node and the shard: empty when all nodes hold the same
    complete weights."""
    problems = []
    for nw in [source, *copies]:
        info = nw.to_dict()
        if info["problem"]:
            problem = info["problem"]  # a node error already starts with the node's name
            problems.append(problem if problem.startswith(f"{nw.node}: ") else f"{nw.node}: {problem}")
        for shard in info["shards"]:
            if shard["problem"]:
                sizes = "" if shard["size"] is None else (
                    f" ({shard['size']:,} bytes, expected {shard['expected_size']:,})"
                    if shard["expected_size"] is not None else f" ({shard['size']:,} bytes)")
                problems.append(f"{nw.node}: shard {shard['name']} is {shard['problem']}{sizes}")
    if source.report:
        want = {s["name"]: s["size"] for s in source.report["shards"]}
        for nw in copies:
            have = {s["name"]: s["size"] for s in (nw.report or {}).get("shards", [])}
            for name, size in want.items():
                if name in have and have[name] is not None and size is not None and have[name] != size:
                    problems.append(f"{nw.node}: shard {name} is {have[name]:,} bytes, "
                                    f"{source.node} has {size:,}")
                elif nw.report and nw.report.get("exists") and name not in have:
                    problems.append(f"{nw.node}: shard {name} is not in the snapshot ({source.node} has it)")
    return problems
