"""Disk use per node and per model cache directory; deleting one model's cache.

Figures come from the node's own `df -P -B1` (the filesystems holding $HOME, the Hugging Face
cache and the NIM cache) and `du -sb` (apparent bytes) of every `models--*`/`datasets--*`
directory in `~/.cache/huggingface/hub` and of `~/.cache/nim`, in one SSH command per node,
so they are exactly what an operator sees on the node.

Deleting takes a cache directory NAME, never a path: `_SAFE_DIRNAME` is a whitelist of the
names the Hugging Face cache itself creates. It lives here, not in shellsafe.validate_path,
because the directory sits under `$HOME`, which only the node's shell can expand: the command
is `"$HOME"/.cache/huggingface/hub/<quoted name>`. What a running (or starting, or loading)
model uses, or a download in progress writes, is refused with 409.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from app.errors import Conflict, InvalidInput, NotFound, SparkControlError
from app.shellsafe import quote_arg
from app.ssh import NodePool
from app.swap import ACTIVE_STATES
from app.weights_verify import HUB_DIR, repo_dirname

# The cache's own names: models--<owner>--<name> (datasets-- likewise), parts as HF repo ids allow.
_SAFE_DIRNAME = re.compile(r"(models|datasets)--[A-Za-z0-9][A-Za-z0-9._-]{0,95}--[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_DIRNAME_ALLOWED = "a directory of the Hugging Face cache such as models--openai--gpt-oss-120b"

_USAGE_COMMAND = r"""hub="$HOME/.cache/huggingface/hub"; nim="$HOME/.cache/nim"
df_of() {
  [ -e "$2" ] && df -P -B1 "$2" 2>/dev/null | tail -n +2 | while IFS= read -r l; do printf 'df %s %s\n' "$1" "$l"; done
}
df_of home "$HOME"; df_of huggingface "$hub"; df_of nim "$nim"
[ -d "$hub" ] && find "$hub" -mindepth 1 -maxdepth 1 -type d \( -name 'models--*' -o -name 'datasets--*' \) \
  -exec du -sb {} + 2>/dev/null | sed 's/^/du /'
[ -d "$nim" ] && du -sb "$nim" 2>/dev/null | sed 's/^/nim /'
true"""


class DeleteCacheRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str
    dirname: str


def validate_dirname(value: object) -> str:
    if not isinstance(value, str) or not _SAFE_DIRNAME.fullmatch(value) or ".." in value \
            or value.endswith((".", "-")) or value.count("--") != 2:
        raise InvalidInput(f"Invalid dirname {str(value)[:80]!r}: not a cache directory name. "
                           f"Allowed: {_DIRNAME_ALLOWED} (GET /api/disk lists them).", field="dirname")
    return value


def parse_usage(text: str) -> dict[str, Any]:
    """The usage command's output -> filesystems (deduplicated by mount point) and cache sizes."""
    filesystems: dict[str, dict[str, Any]] = {}
    caches, nim = [], None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "df":
            label, _, row = rest.partition(" ")
            fields = row.split(None, 5)
            if len(fields) < 6 or not fields[1].isdigit():
                continue
            fs = filesystems.setdefault(fields[5], {
                "filesystem": fields[0], "mountpoint": fields[5], "size_bytes": int(fields[1]),
                "used_bytes": int(fields[2]), "available_bytes": int(fields[3]), "holds": []})
            fs["holds"].append(label)
        elif kind in ("du", "nim"):
            size, _, path = rest.partition("\t")
            if not size.isdigit():
                continue
            if kind == "nim":
                nim = {"path": "~/.cache/nim", "size_bytes": int(size)}
            else:
                dirname = path.rstrip("/").rsplit("/", 1)[-1]
                caches.append({"dirname": dirname, "repo_id": _repo_of(dirname), "size_bytes": int(size)})
    return {"filesystems": list(filesystems.values()), "caches": sorted(caches, key=lambda c: -c["size_bytes"]),
            "nim_cache": nim}


def _repo_of(dirname: str) -> str | None:
    parts = dirname.split("--")
    return "/".join(parts[1:]) if len(parts) == 3 else None


def users_of_caches(request: Request) -> dict[tuple[str, str], list[str]]:
    """(node, dirname) -> what uses it: active models (from the lifecycle) and unfinished downloads."""
    users: dict[tuple[str, str], list[str]] = {}
    lifecycle = request.app.state.lifecycle
    for deployment in lifecycle.deployments.values():
        if deployment.state not in ACTIVE_STATES:
            continue
        try:
            dirname = repo_dirname(lifecycle.catalog.get(deployment.model).hf_repo)
        except SparkControlError:
            continue  # a model no longer in the catalog: its containers name no cache we can tell
        for node in deployment.nodes:
            users.setdefault((node, dirname), []).append(f"model {deployment.model} ({deployment.state.value})")
    downloads = getattr(request.app.state, "downloads", None)
    for d in (downloads.downloads.values() if downloads else ()):
        if d.state.value not in ("done", "failed", "cancelled"):
            for node in (d.node, *d.copy_to):
                users.setdefault((node, repo_dirname(d.repo_id)), []).append(f"download {d.id} ({d.state.value})")
    return users


async def node_usage(pool: NodePool, node: str) -> dict[str, Any]:
    try:
        result = await pool.run(node, _USAGE_COMMAND, timeout=120)
    except SparkControlError as exc:
        return {"node": node, "error": exc.message, "filesystems": [], "caches": [], "nim_cache": None}
    return {"node": node, "error": None, **parse_usage(result.stdout)}


async def delete_cache(pool: NodePool, node: str, dirname: str) -> int:
    """Remove the directory (and its lock dir); returns the bytes it held. NotFound if absent."""
    quoted = quote_arg(validate_dirname(dirname))
    command = (f"d={HUB_DIR}/{quoted}; [ -d \"$d\" ] || exit 3; s=$(du -sb -- \"$d\" | cut -f1); "
               f"rm -rf -- \"$d\" {HUB_DIR}/.locks/{quoted} && echo \"$s\"")
    result = await pool.run(node, command, timeout=600, check=False)
    if result.exit_status == 3:
        raise NotFound(f"{node} has no {dirname} in ~/.cache/huggingface/hub (GET /api/disk lists what it has)",
                       field="dirname")
    if result.exit_status != 0:
        raise SparkControlError(f"{node}: deleting {dirname} failed: {result.stderr.strip()[-300:]}")
    text = result.stdout.strip()
    return int(text) if text.isdigit() else 0


def build_router() -> APIRouter:
    router = APIRouter(tags=["disk"])

    @router.get("/api/disk", summary="Disk use per node: filesystems (df) and every model cache directory (du)")
    async def disk(request: Request) -> dict[str, Any]:
        pool: NodePool = request.app.state.pool
        nodes = await asyncio.gather(*(node_usage(pool, n) for n in pool.nodes))
        users = users_of_caches(request)
        for entry in nodes:
            for cache in entry["caches"]:
                cache["in_use_by"] = users.get((entry["node"], cache["dirname"]), [])
        return {"nodes": nodes}

    @router.delete("/api/disk/cache", summary="Delete one model's cache directory on a node (refused while in use)")
    async def delete(request: Request, body: DeleteCacheRequest) -> dict[str, Any]:
        pool: NodePool = request.app.state.pool
        node = pool.get(body.node).name
        dirname = validate_dirname(body.dirname)
        in_use = users_of_caches(request).get((node, dirname))
        if in_use:
            raise Conflict(f"{dirname} on {node} is in use by {', '.join(in_use)}; stop the model "
                           "(POST /api/models/<name>/stop) or wait for the download, then delete it")
        freed = await delete_cache(pool, node, dirname)
        return {"node": node, "dirname": dirname, "deleted": True, "freed_bytes": freed}

    return router
