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
The jobs outlive the app: stopping it detaches from them, and at the next start each node's
jobs are found again as the node becomes reachable and the downloads carried on from the step
they were at (download_reattach.py).
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

from app import download_copy, download_reattach, remote_job, weights_verify
from app.download_progress import Progress
from app.errors import Conflict, NotFound, RemoteCommandFailed, SparkControlError
from app.events import EventLog
from app.pending_cancels import PendingCancels
from app.remote_job import Poll, RemoteJob
from app.shellsafe import quote_args, validate_hf_include, validate_hf_repo, validate_hf_revision
from app.ssh import NodePool

log = logging.getLogger(__name__)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KEEP_FINISHED = 50


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
    jobs: list[str] = field(default_factory=list, repr=False)  # its job ids on `node`, kept until it ends
    cancel_error: str | None = field(default=None, repr=False)  # why the cancel has not reached the node yet

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "repo_id": self.repo_id, "revision": self.revision or "main",
                "include": self.include, "node": self.node, "copy_to": self.copy_to, "state": self.state.value,
                "created": self.created, "updated": self.updated, "message": self.message,
                "progress": self.progress, "snapshot": self.snapshot, "verification": self.verification,
                "partial_files": self.partial_files}


class DownloadManager:
    """Owns every download and its task. Lives in the app's lifespan (`app.state.downloads`)."""

    def __init__(self, pool: NodePool, *, hf_token: str | None, poll_interval_s: float = 0.5,
                 unreachable_give_up_s: float = remote_job.UNREACHABLE_GIVE_UP_S,
                 pending: PendingCancels | None = None) -> None:
        self.pool = pool
        self.pending = pending or PendingCancels(None)
        self.unreachable_give_up_s = unreachable_give_up_s
        self._token = hf_token or None
        self.poll_interval_s = poll_interval_s
        self.downloads: dict[str, Download] = {}
        self._slot = asyncio.Semaphore(1)
        self._tasks: dict[str, asyncio.Task] = {}
        self._unremoved: dict[str, set[str]] = {}  # node -> job ids whose removal failed, asked again
        self._remover: asyncio.Task | None = None

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
            await self._remove_jobs(d)  # an adopted one waits here with its finished steps' jobs
        elif task:  # the remote process is killed and its end seen, or the node cannot be told (yet)
            deadline = time.monotonic() + 20
            while not task.done() and d.cancel_error is None and time.monotonic() < deadline:
                await asyncio.wait({task}, timeout=0.25)
        return d

    async def close(self) -> None:
        """Stop following: the transfers go on on their nodes, their jobs are left there and found
        again at the next start (a download still queued had nothing on a node and is forgotten)."""
        tasks = [*self._tasks.values(), *([self._remover] if self._remover else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ after a restart

    def adopt_found(self, node: str, found: list[remote_job.FoundJob]) -> None:
        """Register the downloads whose jobs the last run left on `node` (remote_job.adopt_jobs_left_on)."""
        adoptable, problems = download_reattach.adoptable(node, found, set(self.pool.nodes), set(self.downloads))
        for problem in problems:
            log.warning("download job not resumed: %s", problem)
        for a in adoptable:
            try:
                self._adopt(a)
            except Exception:  # one download that cannot be registered must not stop the others
                log.exception("download %s on %s not resumed", a.id, node)
        self._forget_old()

    def _adopt(self, a: download_reattach.Adoptable) -> None:
        d = Download(**a.fields, jobs=list(a.job_ids))
        # A download of the same repo started here before this node was searched: two transfers into
        # one cache would race, and the newer one is what the user asked for last.
        newer = next((o for o in self.downloads.values() if o.repo_id == d.repo_id and o.state not in FINISHED), None)
        self.downloads[d.id] = d
        if newer is not None:
            self._publish_state(d, State.CANCELLED, f"superseded by download {newer.id} started after the restart")
            self._tasks[d.id] = asyncio.create_task(self._retire(d, a))
            return
        # Listed in the state it is in on the node from the start, never as "queued".
        if a.copy_index is None:
            state, doing = State.DOWNLOADING, f"downloading {d.repo_id} on {d.node}"
        else:
            state, doing = State.COPYING, f"copying {d.repo_id} from {d.node} to {d.copy_to[a.copy_index]}"
        seen = ("found running on the node after spark-control restarted" if a.current.exit_status is None
                else "it ended while spark-control was not running")
        if any((d.node, job_id) in self.pending for job_id in a.job_ids):  # cancelled before the restart
            d.cancel_requested.set()
            seen = "cancelled before spark-control restarted: stopping it there now"
        self._publish_state(d, state, f"{doing} ({seen})")
        self._tasks[d.id] = asyncio.create_task(self._run(d, resume=a))

    async def _retire(self, d: Download, a: download_reattach.Adoptable) -> None:
        """A superseded download: its step is stopped if it still runs, its jobs removed."""
        try:
            if a.current.running and a.current.exit_status is None:
                try:
                    await RemoteJob(self.pool, d.node, a.current.job_id).kill()
                except SparkControlError as exc:
                    log.warning("download %s: could not stop %s on %s: %s", d.id, a.step_name, d.node, exc.message)
            await self._remove_jobs(d)
        finally:
            self._tasks.pop(d.id, None)

    async def _resume(self, d: Download, a: download_reattach.Adoptable) -> int:
        """Follow the step the download was at (it runs on the node whatever the slot says);
        returns the index in copy_to of the next copy to make."""
        job = RemoteJob(self.pool, d.node, a.current.job_id)
        where = d.node if a.copy_index is None else f"{d.node}->{d.copy_to[a.copy_index]}"
        if a.current.vanished and d.cancel_requested.is_set():
            self.pending.discard(d.node, a.current.job_id)
            raise _Cancelled()  # cancelled before the restart, and gone with the node's reboot: as asked
        if a.current.vanished:
            raise SparkControlError(
                f"{a.step_name} on {d.node} stopped without recording how it ended (was the node restarted?); "
                f"start the download again: hf resumes what is already in the cache")
        progress, status = await self._follow_job(d, job, label=where, killed=a.current.killed)
        self._check_exit(a.step_name, d.node, status, progress)
        if a.copy_index is None:
            d.snapshot = progress.snapshot_commit
            return 0
        return a.copy_index + 1

    # ------------------------------------------------------------------ the work

    async def _run(self, d: Download, resume: download_reattach.Adoptable | None = None) -> None:
        try:
            try:
                next_copy = await self._resume(d, resume) if resume else 0
                if resume and self._slot.locked():  # its step is done; the next waits for its turn
                    self._publish_state(d, State.QUEUED, self._waiting_message(d, next_copy))
                async with self._slot:
                    if d.cancel_requested.is_set():
                        raise _Cancelled()
                    if resume is None:
                        await self._download(d)
                    for target in d.copy_to[next_copy:]:
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
            # Its outcome is recorded: its jobs can go. Not on app shutdown (CancelledError skips
            # this): they stay on the node, to be found again at the next start.
            await self._remove_jobs(d)
        finally:
            self._tasks.pop(d.id, None)

    def _waiting_message(self, d: Download, next_copy: int) -> str:
        if next_copy < len(d.copy_to):
            return f"waiting for its turn to copy {d.repo_id} from {d.node} to {d.copy_to[next_copy]}"
        return f"waiting for its turn to check {d.repo_id} on {', '.join([d.node, *d.copy_to])}"

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
        job = await self._start_job(d, None, self._hf_command(d), secret=True)
        progress, status = await self._follow_job(d, job, label=d.node)
        self._check_exit("hf download", d.node, status, progress)
        d.snapshot = progress.snapshot_commit

    async def _copy(self, d: Download, target: str) -> None:
        self._publish_state(d, State.COPYING, f"copying {d.repo_id} from {d.node} to {target}")
        command = download_copy.rsync_command(d.repo_id, self.pool.get(target).config)
        job = await self._start_job(d, d.copy_to.index(target), command, secret=False)
        progress, status = await self._follow_job(d, job, label=f"{d.node}->{target}")
        self._check_exit(f"the copy to {target}", d.node, status, progress)

    def _check_exit(self, what: str, node: str, status: int, progress: Progress) -> None:
        if status != 0:
            raise RemoteCommandFailed(self._tool_failure(what, node, status, progress), node=node, exit_status=status)

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

    async def _start_job(self, d: Download, copy_index: int | None, command: str, *, secret: bool) -> RemoteJob:
        """Start one step on the download's node, with the meta.json that lets a restarted app find it."""
        job = RemoteJob(self.pool, d.node, download_reattach.job_id(d.id, copy_index))
        meta = download_reattach.job_meta(download_id=d.id, repo_id=d.repo_id, revision=d.revision,
                                          include=d.include, node=d.node, copy_to=d.copy_to, created=d.created,
                                          snapshot=d.snapshot, copy_index=copy_index)
        d.jobs.append(job.job_id)
        await job.start(command, secret_env="HF_TOKEN" if secret else None, secret=self._token if secret else None,
                        meta=meta)
        return job

    async def _follow_job(self, d: Download, job: RemoteJob, *, label: str,
                          killed: bool = False) -> tuple[Progress, int]:
        """Relay the job's progress until it ends; kill it if the download is cancelled. `killed`:
        found after a restart already killed (a cancel the previous app did not see through)."""
        progress = Progress()

        def output(polled: Poll) -> None:
            progress.feed(self._scrub(polled.text))
            if polled.exit_status == 0 and not killed and not d.cancel_requested.is_set():
                progress.complete()  # (not for a job a cancel had killed: it ends cancelled)
            if polled.text or polled.exit_status == 0:
                d.progress = {"phase": d.state.value, "where": label, **progress.to_dict()}
                d.updated = time.time()
                d.events.publish("progress", **d.progress)

        what = f"{d.state.value} {d.repo_id}" + (f" to {label.split('->', 1)[1]}" if "->" in label else "")
        told = False

        def kill_failed(message: str | None) -> None:  # a cancel the node could not be told yet: say so, once
            nonlocal told
            d.cancel_error = message
            if message and not told:
                told = True
                self._publish_state(d, d.state, f"cancelling: {job.node} does not answer ({message}); {what} is "
                                                "stopped there as soon as it does")

        status = await remote_job.follow(job, what=what, cancel=d.cancel_requested, poll_s=self.poll_interval_s,
                                         killed=killed, give_up_s=self.unreachable_give_up_s, pending=self.pending,
                                         hooks=remote_job.FollowHooks(output=output, kill_failed=kill_failed))
        if status is None or d.cancel_requested.is_set():  # cancelled, even if it ended well meanwhile
            raise _Cancelled()
        return progress, status

    async def _remove_jobs(self, d: Download) -> None:
        failed = [job_id for job_id in d.jobs if not await RemoteJob(self.pool, d.node, job_id).remove()]
        for job_id in d.jobs:
            if job_id in failed and d.state == State.CANCELLED:
                # Kept by a node that is down: were the app to stop first, the next start would find
                # these jobs and carry the cancelled download on. Written down like an unsent kill.
                self.pending.add(d.node, job_id)
            elif job_id not in failed:
                self.pending.discard(d.node, job_id)
        d.jobs.clear()
        if failed:
            log.info("download %s: %s kept its job dirs %s; asking again in the background", d.id, d.node, failed)
            self._unremoved.setdefault(d.node, set()).update(failed)
            if self._remover is None or self._remover.done():
                self._remover = asyncio.create_task(self._remove_later())

    async def _remove_later(self) -> None:
        """Jobs a node kept when asked to remove them (down at that moment), asked again less and less
        often until they are gone or the app stops: left there, they would bring their download back
        at the next start."""
        for delay in remote_job.ask_again_delays():
            if not self._unremoved:
                return
            await asyncio.sleep(delay)
            for node, job_ids in list(self._unremoved.items()):
                for job_id in sorted(job_ids):
                    if await RemoteJob(self.pool, node, job_id).remove():
                        job_ids.discard(job_id)
                        self.pending.discard(node, job_id)
                if not job_ids:
                    del self._unremoved[node]

    async def _partial_files(self, d: Download) -> list[dict]:
        check = await weights_verify.check_node(self.pool, d.node, d.repo_id, d.revision or "main")
        return check.to_dict()["incomplete_blobs"]

    def _tool_failure(self, what: str, node: str, status: int, progress: Progress) -> str:
        detail = progress.failure_detail() or "no output"
        hint = ""
        if status == 127:
            hint = (" The tool is not installed on the node: install the Hugging Face CLI "
                    "(pip install -U 'huggingface_hub[cli]') and rsync there.")
        elif what.startswith("the copy") and any(s in detail for s in ("Host key verification failed",
                                                                       "Permission denied")):
            # Only a copy logs in to another node: on `hf download` "Permission denied" is a file's mode.
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
