"""Download a Hugging Face repo onto a node, copy it to the others over the fast link, verify.

    queued -> downloading -> copying -> verifying -> done
       \\           \\            \\          \\
        `-----------`------------`----------`--> failed (the reason) | cancelled

One transfer at a time (they share the node's disk and network); the others wait as
`queued`. The node's own tooling does the work: `hf download` on the chosen node
(remote_job.py runs it detached and reads its output), then rsync from that node to every
other one on their fabric addresses (download_copy.py), then the weights check on every
node (weights_verify.py), which names a missing or truncated shard and the node it is on.
HF_TOKEN goes to `hf` on stdin and is scrubbed from every message, event and log line.
Design notes and the API: docs/DOWNLOADS.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app import download_copy, weights_verify
from app.download_progress import Progress
from app.errors import Conflict, NotFound, RemoteCommandFailed, SparkControlError
from app.events import EventLog
from app.remote_job import RemoteJob
from app.shellsafe import quote_args, validate_hf_include, validate_hf_repo, validate_hf_revision
from app.ssh import NodePool

log = logging.getLogger(__name__)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KEEP_FINISHED = 50
_POLL_FAILURES_TOLERATED = 20  # consecutive failed polls (a node rebooting, a blip) before giving up
_KILL_WAIT_S = 15.0  # how long a killed transfer may take to end


class State(str, Enum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    COPYING = "copying"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = {State.DONE, State.FAILED, State.CANCELLED}


class DownloadRequest(BaseModel):
    """POST /api/downloads. Every text is checked by app/shellsafe.py before it reaches a node."""

    model_config = ConfigDict(extra="forbid")
    repo_id: str = Field(description="owner/name on the Hugging Face Hub")
    revision: str | None = Field(None, description="branch, tag or commit; default main")
    include: list[str] = Field(default_factory=list, max_length=32, description="file globs, e.g. *.safetensors")
    node: str | None = Field(None, description="where to download; default the first node")
    copy_to: list[str] | None = Field(None, description="nodes to copy to afterwards; default every other node")


class _Cancelled(Exception):
    pass


@dataclass
class Download:
    id: str
    repo_id: str
    revision: str | None
    include: list[str]
    node: str
    copy_to: list[str]
    state: State = State.QUEUED
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    message: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None
    verification: list[dict] = field(default_factory=list)
    partial_files: list[dict] = field(default_factory=list)
    events: EventLog = field(default_factory=lambda: EventLog(keep=300), repr=False)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "repo_id": self.repo_id, "revision": self.revision or "main",
                "include": self.include, "node": self.node, "copy_to": self.copy_to, "state": self.state.value,
                "created": self.created, "updated": self.updated, "message": self.message,
                "progress": self.progress, "snapshot": self.snapshot, "verification": self.verification,
                "partial_files": self.partial_files}


class DownloadManager:
    """Owns every download and its task. Lives in the app's lifespan (`app.state.downloads`)."""

    def __init__(self, pool: NodePool, *, hf_token: str | None, poll_interval_s: float = 0.5) -> None:
        self.pool = pool
        self._token = hf_token or None
        self.poll_interval_s = poll_interval_s
        self.downloads: dict[str, Download] = {}
        self._slot = asyncio.Semaphore(1)
        self._tasks: dict[str, asyncio.Task] = {}

    # ------------------------------------------------------------------ API

    def start(self, body: DownloadRequest) -> Download:
        repo_id = validate_hf_repo(body.repo_id, field="repo_id")
        revision = None if body.revision is None else validate_hf_revision(body.revision, field="revision")
        include = [validate_hf_include(p, field="include") for p in body.include]
        node = self.pool.get(body.node).name if body.node else next(iter(self.pool.nodes))
        others = [n for n in self.pool.nodes if n != node]
        copy_to = others if body.copy_to is None else list(dict.fromkeys(self.pool.get(n).name for n in body.copy_to))
        if node in copy_to:
            raise Conflict(f"copy_to names {node}, the node the repo is downloaded to; leave it out")
        for other in self.downloads.values():
            if other.repo_id == repo_id and other.state not in FINISHED:
                raise Conflict(f"{repo_id} is already being downloaded (download {other.id}, {other.state.value}); "
                               f"wait for it or cancel it: POST /api/downloads/{other.id}/cancel")
        d = Download(secrets.token_hex(6), repo_id, revision, include, node, copy_to)
        self.downloads[d.id] = d
        self._forget_old()
        self._publish_state(d, State.QUEUED, f"queued: {repo_id} to {node}"
                                             + (f", then copied to {', '.join(copy_to)}" if copy_to else ""))
        self._tasks[d.id] = asyncio.create_task(self._run(d))
        return d

    def get(self, download_id: str) -> Download:
        try:
            return self.downloads[download_id]
        except KeyError:
            raise NotFound(f"no download {download_id!r}; GET /api/downloads lists them", field="id") from None

    async def cancel(self, download_id: str) -> Download:
        d = self.get(download_id)
        if d.state in FINISHED:
            raise Conflict(f"download {d.id} has already ended ({d.state.value})")
        d.cancel_requested.set()
        task = self._tasks.get(d.id)
        if task and d.state == State.QUEUED:  # waiting for its turn: nothing runs on a node yet
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._publish_state(d, State.CANCELLED, "cancelled while queued")
        elif task:
            await asyncio.wait({task}, timeout=20)  # the remote process is killed and its end seen
        return d

    async def close(self) -> None:
        for d in self.downloads.values():
            if d.state not in FINISHED:
                d.cancel_requested.set()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the work

    async def _run(self, d: Download) -> None:
        try:
            async with self._slot:
                if d.cancel_requested.is_set():
                    raise _Cancelled()
                await self._download(d)
                for target in d.copy_to:
                    await self._copy(d, target)
                await self._verify(d)
            self._publish_state(d, State.DONE, f"{d.repo_id} is complete on {', '.join([d.node, *d.copy_to])}")
        except _Cancelled:
            d.partial_files = await self._partial_files(d)
            left = (f"; {len(d.partial_files)} partial file(s) left in the cache on {d.node} "
                    "(a new download resumes them; DELETE /api/disk/cache removes them)") if d.partial_files else ""
            self._publish_state(d, State.CANCELLED, f"cancelled while {d.state.value}{left}")
        except SparkControlError as exc:
            self._publish_state(d, State.FAILED, self._scrub(exc.message))
        except Exception as exc:  # a bug must still end the download visibly, not leave it "downloading"
            log.exception("download %s failed unexpectedly", d.id)
            self._publish_state(d, State.FAILED, self._scrub(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._tasks.pop(d.id, None)

    def _hf_command(self, d: Download) -> str:
        argv: list[str] = ["hf", "download", d.repo_id]
        if d.revision:
            argv += ["--revision", d.revision]
        for pattern in d.include:
            argv += ["--include", pattern]
        # The cache vLLM's containers mount ($HOME/.cache/huggingface), whatever HF_HOME says.
        return quote_args(argv) + " --cache-dir " + weights_verify.HUB_DIR

    async def _download(self, d: Download) -> None:
        self._publish_state(d, State.DOWNLOADING, f"downloading {d.repo_id} on {d.node}")
        progress, status = await self._run_job(d, d.node, f"{d.id}d", self._hf_command(d), secret=True, label=d.node)
        if status != 0:
            raise RemoteCommandFailed(self._tool_failure("hf download", d.node, status, progress), node=d.node,
                                      exit_status=status)
        d.snapshot = progress.snapshot_commit

    async def _copy(self, d: Download, target: str) -> None:
        self._publish_state(d, State.COPYING, f"copying {d.repo_id} from {d.node} to {target}")
        command = download_copy.rsync_command(d.repo_id, self.pool.get(target).config)
        progress, status = await self._run_job(d, d.node, f"{d.id}c{d.copy_to.index(target)}",
                                               command, secret=False, label=f"{d.node}->{target}")
        if status != 0:
            raise RemoteCommandFailed(self._tool_failure(f"the copy to {target}", d.node, status, progress),
                                      node=d.node, exit_status=status)

    async def _verify(self, d: Download) -> None:
        self._publish_state(d, State.VERIFYING, f"checking every shard on {', '.join([d.node, *d.copy_to])}")
        revision = d.snapshot or d.revision or "main"
        source, *copies = await asyncio.gather(
            *(weights_verify.check_node(self.pool, n, d.repo_id, revision) for n in [d.node, *d.copy_to]))
        source, *copies = (nw.only(d.include) for nw in (source, *copies))
        d.verification = [nw.to_dict() for nw in (source, *copies)]
        problems = weights_verify.compare(source, copies)
        if problems:
            raise SparkControlError(f"verification of {d.repo_id} failed: " + "; ".join(problems))

    async def _run_job(self, d: Download, node: str, job_id: str, command: str, *, secret: bool,
                       label: str) -> tuple[Progress, int]:
        """Start the job, relay its progress until it ends; kill it if the download is cancelled."""
        job = RemoteJob(self.pool, node, job_id)
        progress = Progress()
        try:
            await job.start(command, secret_env="HF_TOKEN" if secret else None, secret=self._token if secret else None)
            failures, killed_at, last_kill = 0, None, 0.0
            while True:
                try:
                    polled = await job.poll()
                    failures = 0
                except SparkControlError as exc:
                    failures += 1
                    if failures > _POLL_FAILURES_TOLERATED:
                        raise SparkControlError(f"lost contact with {node} during {d.state.value} ({exc.message}); "
                                                "the transfer may still be running there") from exc
                    polled = None
                if polled is not None:
                    progress.feed(self._scrub(polled.text))
                    if polled.exit_status == 0 and killed_at is None:
                        progress.complete()
                    if polled.text or polled.exit_status == 0:
                        d.progress = {"phase": d.state.value, "where": label, **progress.to_dict()}
                        d.updated = time.time()
                        d.events.publish("progress", **d.progress)
                    if polled.exit_status is not None:
                        if killed_at is not None:
                            raise _Cancelled()
                        return progress, polled.exit_status
                if d.cancel_requested.is_set():
                    now = time.monotonic()
                    if killed_at is None or now - last_kill > 2.0:  # again, in case the first came too early
                        await job.kill()
                        killed_at, last_kill = killed_at or now, now
                    elif now - killed_at > _KILL_WAIT_S:
                        raise _Cancelled()  # killed, but its end was never recorded: stop waiting
                    await asyncio.sleep(self.poll_interval_s / 2)
                    continue
                try:  # the next poll, or at once on cancel
                    await asyncio.wait_for(d.cancel_requested.wait(), self.poll_interval_s)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        finally:
            await job.remove()

    async def _partial_files(self, d: Download) -> list[dict]:
        check = await weights_verify.check_node(self.pool, d.node, d.repo_id, d.revision or "main")
        return check.to_dict()["incomplete_blobs"]

    def _tool_failure(self, what: str, node: str, status: int, progress: Progress) -> str:
        detail = progress.failure_detail() or "no output"
        hint = ""
        if status == 127:
            hint = (" The tool is not installed on the node: install the Hugging Face CLI "
                    "(pip install -U 'huggingface_hub[cli]') and rsync there.")
        elif "Host key verification failed" in detail or "Permission denied" in detail:
            hint = (" The nodes must trust each other for SSH: add the source node's key to the target's "
                    "authorized_keys and the target's host key to the source's known_hosts (docs/DOWNLOADS.md).")
        return f"{what} on {node} failed (exit status {status}): {detail}.{hint}"

    # ------------------------------------------------------------------ bookkeeping

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "[HF_TOKEN]") if self._token else text

    def _publish_state(self, d: Download, state: State, message: str) -> None:
        d.state, d.message, d.updated = state, message, time.time()
        log.info("download %s (%s): %s", d.id, d.repo_id, message)
        d.events.publish("state", state=state.value, message=message, download=d.to_dict())

    def _forget_old(self) -> None:
        finished = sorted((d for d in self.downloads.values() if d.state in FINISHED), key=lambda d: d.updated)
        for d in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            self.downloads.pop(d.id, None)


async def follow_events(d: Download, last_id: int | None, *, heartbeat_s: float = 15.0) -> AsyncIterator[str]:
    """SSE: every event so far (or after Last-Event-ID), then new ones; ends after the final state."""
    yield "retry: 1000\n\n"
    last = last_id or 0
    while True:
        pending = d.events.since(last)
        for event in pending:
            last = event["id"]
            yield f"id: {event['id']}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"
            if event["kind"] == "state" and event["state"] in {s.value for s in FINISHED}:
                return
        if not pending:
            await d.events.wait_for_change(heartbeat_s)
            if not d.events.since(last):
                yield ": keep-alive\n\n"


def _manager(request: Request) -> DownloadManager:
    return request.app.state.downloads


def build_router() -> APIRouter:
    router = APIRouter(tags=["downloads"])

    @router.post("/api/downloads", status_code=202,
                 summary="Download a Hugging Face repo onto a node, copy it to the other nodes, verify")
    async def start(request: Request, body: DownloadRequest) -> dict[str, Any]:
        return _manager(request).start(body).to_dict()

    @router.get("/api/downloads", summary="Every download with its state and progress")
    async def list_downloads(request: Request) -> dict[str, Any]:
        items = sorted(_manager(request).downloads.values(), key=lambda d: d.created, reverse=True)
        return {"downloads": [d.to_dict() for d in items]}

    @router.get("/api/downloads/{download_id}", summary="One download")
    async def get_download(request: Request, download_id: str) -> dict[str, Any]:
        return _manager(request).get(download_id).to_dict()

    @router.get("/api/downloads/{download_id}/events",
                summary="Server-sent events: progress (bytes, files, rate, ETA) and state changes until it ends")
    async def events(request: Request, download_id: str,
                     last_event_id: str | None = Header(None)) -> StreamingResponse:
        d = _manager(request).get(download_id)
        last = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        return StreamingResponse(follow_events(d, last), media_type="text/event-stream", headers=_SSE_HEADERS)

    @router.post("/api/downloads/{download_id}/cancel",
                 summary="Cancel a download: kills the transfer on the node; partial files are listed")
    async def cancel(request: Request, download_id: str) -> dict[str, Any]:
        return (await _manager(request).cancel(download_id)).to_dict()

    @router.delete("/api/downloads/{download_id}", summary="Cancel a download (same as POST .../cancel)")
    async def delete(request: Request, download_id: str) -> dict[str, Any]:
        return (await _manager(request).cancel(download_id)).to_dict()

    @router.get("/api/models/weights",
                summary="Are the weights on each node and complete (every shard checked): catalog models, or one repo")
    async def weights(request: Request, repo_id: str | None = None, revision: str | None = None) -> dict[str, Any]:
        pool: NodePool = request.app.state.pool
        nodes = list(pool.nodes)
        if repo_id is not None:
            repo = validate_hf_repo(repo_id, field="repo_id")
            rev = "main" if revision is None else validate_hf_revision(revision, field="revision")
            checks = await asyncio.gather(*(weights_verify.check_node(pool, n, repo, rev) for n in nodes))
            # Compare against a node that holds complete weights, so a bad copy is the one named.
            source = next((c for c in checks if c.complete), checks[0])
            problems = weights_verify.compare(source, [c for c in checks if c is not source])
            return {"repo_id": repo, "revision": rev, "nodes": {c.node: c.to_dict() for c in checks},
                    "problems": problems}
        entries = request.app.state.lifecycle.catalog.entries()
        checks = await asyncio.gather(*(weights_verify.check_node(pool, n, e.hf_repo, e.revision or "main")
                                        for e in entries for n in nodes))
        it = iter(checks)
        return {"models": [{"name": e.name, "hf_repo": e.hf_repo,
                            "nodes": {n: next(it).to_dict() for n in nodes}} for e in entries]}

    return router
