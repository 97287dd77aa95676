"""Finding a download's jobs again after an app restart: what a job says about itself, and reading it back.

A download runs on its node as detached jobs (remote_job.py): `<download id>d` for `hf download`,
then `<download id>c<i>` for the copy to its i-th target. Each job's directory holds, written by
the app when it starts the job, `meta.json`: the download it belongs to (id, repo, revision,
include patterns, node, copy targets, creation time, snapshot once known), which step it is and
the cache directory it fills. The job directories of a download stay on the node until the
download's outcome is recorded (done, failed, cancelled), so after a restart the app can tell
which step was running and carry on from there.

Everything read back came from a node's files: it is validated again (app/shellsafe.py) before
any of it reaches a command, and a job that does not parse as one of ours is left alone.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from app.errors import SparkControlError
from app.remote_job import FoundJob
from app.shellsafe import validate_hf_include, validate_hf_repo, validate_hf_revision
from app.weights_verify import repo_dirname

KIND = "spark-control-download"
_FORMAT = 1
_JOB_NAME = re.compile(r"(?P<id>[0-9a-f]{12})(?:d|c(?P<copy>\d{1,3}))")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def job_id(download_id: str, copy_index: int | None = None) -> str:
    """`<id>d` for the download step, `<id>c<i>` for the copy to copy_to[i]."""
    return f"{download_id}d" if copy_index is None else f"{download_id}c{copy_index}"


def job_meta(*, download_id: str, repo_id: str, revision: str | None, include: list[str], node: str,
             copy_to: list[str], created: float, snapshot: str | None, copy_index: int | None) -> str:
    """One JSON line for the job's meta.json. No secret goes in: it is on the start command's line."""
    return json.dumps({
        "kind": KIND, "format": _FORMAT, "download_id": download_id,
        "step": "download" if copy_index is None else "copy",
        "copy_target": None if copy_index is None else copy_to[copy_index],
        "repo_id": repo_id, "revision": revision, "include": include, "node": node, "copy_to": copy_to,
        "target_dir": f"~/.cache/huggingface/hub/{repo_dirname(repo_id)}", "created": created,
        "snapshot": snapshot}, separators=(",", ":"))


@dataclass
class Adoptable:
    """A download found on its node, to be registered again and carried on."""

    fields: dict[str, Any]  # the Download's: id, repo_id, revision, include, node, copy_to, created, snapshot
    job_ids: list[str]      # every job of it on the node, removed once its outcome is recorded
    current: FoundJob       # its latest step's job
    copy_index: int | None  # None: the latest step is the download itself

    @property
    def id(self) -> str:
        return self.fields["id"]

    @property
    def step_name(self) -> str:
        return "hf download" if self.copy_index is None else f"the copy to {self.fields['copy_to'][self.copy_index]}"


def _meta(found: FoundJob) -> dict[str, Any] | None:
    try:
        meta = json.loads(found.meta)
    except (ValueError, RecursionError):  # RecursionError: a deeply nested array, valid JSON to the end
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == KIND else None


def _timestamp(value: Any) -> float:
    """The creation time, or 0 when it is no usable time (a huge integer would overflow float(),
    NaN or infinity would break the JSON of every listing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        created = float(value)
    except OverflowError:
        return 0.0
    return created if math.isfinite(created) else 0.0


def _validated(meta: dict[str, Any], node: str, nodes: set[str]) -> dict[str, Any]:
    """The meta's fields, each checked as if a user had sent it; SparkControlError otherwise."""
    revision, include, copy_to = meta.get("revision"), meta.get("include"), meta.get("copy_to")
    if meta.get("node") != node:
        raise SparkControlError(f"its node is {meta.get('node')!r}, not {node}")
    if not isinstance(include, list) or not isinstance(copy_to, list):
        raise SparkControlError("include and copy_to must be lists")
    unknown = [n for n in copy_to if n not in nodes or n == node]
    if unknown:
        raise SparkControlError(f"it copies to {unknown}, not other configured nodes")
    created, snapshot = meta.get("created"), meta.get("snapshot")
    return {
        "repo_id": validate_hf_repo(meta.get("repo_id"), field="repo_id"),
        "revision": None if revision is None else validate_hf_revision(revision, field="revision"),
        "include": [validate_hf_include(p, field="include") for p in include],
        "copy_to": list(copy_to),
        "created": _timestamp(created),
        "snapshot": snapshot if isinstance(snapshot, str) and _COMMIT.fullmatch(snapshot) else None,
    }


def adoptable(node: str, found: list[FoundJob], nodes: set[str], known: set[str]) -> tuple[list[Adoptable], list[str]]:
    """The downloads among `found` (jobs on `node`) that are not in `known`, and one line per job
    that looked like ours but could not be read (left on the node, named in the log)."""
    groups: dict[str, list[tuple[int, FoundJob, dict[str, Any]]]] = {}
    problems: list[str] = []
    for job in found:
        name, meta = _JOB_NAME.fullmatch(job.job_id), _meta(job)
        if name is None or meta is None:
            continue  # not a download job of this app: someone else's, left alone
        download_id = name["id"]
        if meta.get("download_id") != download_id or download_id in known:
            continue
        step = 0 if name["copy"] is None else int(name["copy"]) + 1  # download, then copies in order
        groups.setdefault(download_id, []).append((step, job, meta))
    result = []
    for download_id, steps in groups.items():
        steps.sort(key=lambda s: s[0])
        step, current, meta = steps[-1]
        try:
            fields = _validated(meta, node, nodes)
            if step > len(fields["copy_to"]):
                raise SparkControlError(f"job {current.job_id} is a copy beyond its {len(fields['copy_to'])} target(s)")
        except Exception as exc:  # whatever a node's file holds, one bad job must not stop the others
            detail = exc.message if isinstance(exc, SparkControlError) else f"{type(exc).__name__}: {exc}"[:200]
            problems.append(f"job {current.job_id} on {node}: its meta.json cannot be used ({detail}); left as is")
            continue
        result.append(Adoptable({"id": download_id, "node": node, **fields}, job_ids=[j.job_id for _, j, _ in steps],
                                current=current, copy_index=None if step == 0 else step - 1))
    return result, problems
