"""A service's image pulled on its node as a detached job, followed, then the container started.

A NIM image is 10-40 GB: its first `docker pull` can take far longer than an HTTP request may
hang, and a pull inside a `docker run` over one SSH channel shows nothing until it ends. So
when the image is not on the node, ServiceManager.start (app/services.py) starts `docker pull`
as a remote job (app/remote_job.py: its own session, output in
~/.cache/spark-control/jobs/<id>/log on the node, survives the SSH channel), answers at once
with the service `pulling`, and this module's task reads the job's output every poll
(app/pull_progress.py: layers downloaded and extracted), then runs the container as a start of
a present image does. A failed pull ends `failed` with docker's own words and a hint; a stop
kills the job's process group (`cancelled`, nothing started); a stop while the container is
being started (`starting`) removes it once `docker run` returns. A job whose processes are gone
without an exit status (the node rebooted) ends `failed` after two polls that saw it so.

A NIM's `docker login nvcr.io` runs before the job starts, as its own short command
(nim.login_from_stdin_command: the key on stdin, in an unexported variable): the pull job,
which runs for minutes, holds no secret in its environment or files.

A pull survives an app restart: its job carries a meta.json (service, node, image), and the
restarted app (ServiceManager.adopt_found) follows it again, or reads how it ended
while the app was down, then starts the container as if it had never left. A pull whose
service is no longer in the catalog, wants another image now, or was started again meanwhile
is stopped and its job removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app import nim
from app.errors import SparkControlError
from app.pending_cancels import PendingCancels
from app.pull_progress import PullProgress
from app.remote_job import FollowHooks, FoundJob, RemoteJob, follow
from app.shellsafe import quote_args, validate_image, validate_service_name

log = logging.getLogger(__name__)

KIND = "spark-control-service-pull"
JOB_PREFIX = "svcpull"
_JOB_NAME = re.compile(JOB_PREFIX + r"[0-9a-f]{12}")


def present_command(image: str) -> str:
    """Exit 0 if `image` is on the node (docker prints its id), 1 if not."""
    return quote_args(["docker", "image", "inspect", "--format", "{{.Id}}", validate_image(image)])


def pull_command(image: str) -> str:
    """`docker pull <image>` (a NIM's `docker login nvcr.io` was done before: ServiceManager._start_pull)."""
    return quote_args(["docker", "pull", validate_image(image)])


def job_meta(service: str, node: str, image: str, started: float) -> str:
    """The pull job's meta.json: enough for a restarted app to know whose pull it is."""
    return json.dumps({"kind": KIND, "format": 1, "service": service, "node": node, "image": image,
                       "started": started}, separators=(",", ":"))


@dataclass
class FoundPull:
    """A pull job found on a node after a restart, its meta validated."""

    job: FoundJob
    service: str
    image: str
    started: float


def found_pulls(node: str, found: list[FoundJob]) -> tuple[list[FoundPull], list[str]]:
    """The pull jobs among `found` (jobs on `node`), and one line per job that looked like a pull
    but could not be read (left as is). What a node's file holds is validated as user input."""
    pulls, problems = [], []
    for job in found:
        if not _JOB_NAME.fullmatch(job.job_id):
            continue  # a download's job, or someone else's
        try:
            meta = json.loads(job.meta)
            if not isinstance(meta, dict) or meta.get("kind") != KIND:
                continue
            if meta.get("node") != node:
                raise SparkControlError(f"its node is {meta.get('node')!r}, not {node}")
            started = meta.get("started")
            ok_time = isinstance(started, (int, float)) and not isinstance(started, bool) and math.isfinite(started)
            pulls.append(FoundPull(job, validate_service_name(meta.get("service"), field="service"),
                                   validate_image(meta.get("image")), float(started) if ok_time else time.time()))
        except (ValueError, RecursionError, OverflowError, SparkControlError) as exc:
            detail = exc.message if isinstance(exc, SparkControlError) else type(exc).__name__
            problems.append(f"job {job.job_id} on {node}: its meta.json cannot be used ({detail}); left as is")
    return pulls, problems


@dataclass
class ImagePull:
    """One pull for one service: `pulling`, `starting` (pulled; `docker run` under way), then `done`
    (the container was started), `failed` or `cancelled`."""

    service: str
    node: str
    image: str
    job: RemoteJob
    state: str = "pulling"
    message: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    progress: PullProgress = field(default_factory=PullProgress)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    cancel_error: str | None = None          # why the last attempt to kill the job failed
    unreachable_since: float | None = None   # the node did not answer the polls since then
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("pulling", "starting")

    def finish(self, state: str, message: str) -> None:
        self.state, self.message, self.ended = state, message, time.time()
        log.info("services: pull of %s for %s on %s %s: %s", self.image, self.service, self.node, state, message)

    def to_dict(self) -> dict[str, Any]:
        elapsed = (self.ended or time.time()) - self.started
        return {"image": self.image, "node": self.node, "state": self.state, "started": self.started,
                "elapsed_s": round(elapsed, 1), **self.progress.to_dict(), "message": self.message}

    def describe(self) -> str:
        """What the services list shows in `detail` while it pulls."""
        p = self.progress.to_dict()
        layers = (f"{p['layers_done']}/{p['layers_total']} layers extracted, {p['layers_downloaded']} downloaded"
                  if p["layers_total"] else "reading the image manifest")
        if self.state == "starting":
            return self.message
        if self.unreachable_since is not None:
            return (f"{self.node} unreachable for {time.time() - self.unreachable_since:.0f} s; the pull goes on "
                    f"there ({layers} when last seen)")
        return f"pulling {self.image} on {self.node}: {layers} ({self.to_dict()['elapsed_s']:.0f} s)"


async def run(pull: ImagePull, *, then: Callable[[], Awaitable[None]], undo: Callable[[], Awaitable[None]],
              scrub: Callable[[str], str], poll_s: float, give_up_s: float, killed: bool = False,
              pending: PendingCancels | None = None) -> None:
    """Follow the pull to its end, then `then()` (start the container); `undo()` (remove it) when a
    stop came while `then()` ran. Every outcome is recorded on `pull`; its job's files are removed,
    except on app shutdown (the pull goes on there). `killed`: a pull found after a restart that
    the previous app had already killed (a stop it did not see through)."""
    try:
        status = await _follow(pull, scrub=scrub, poll_s=poll_s, give_up_s=give_up_s, killed=killed, pending=pending)
        if status is None or pull.cancel_requested.is_set():
            pull.finish("cancelled", f"pull of {pull.image} on {pull.node} cancelled; nothing was started")
        elif status != 0:
            pull.finish("failed", _failure(pull, status))
        else:
            pull.state, pull.message = "starting", f"{pull.image} pulled on {pull.node}; starting the container"
            await then()
            if pull.cancel_requested.is_set():
                # `docker run` cannot be interrupted half-way: the stop is honoured once it returned.
                await undo()
                pull.finish("cancelled", f"{pull.image} pulled on {pull.node}; the container started during the "
                                         "stop was removed")
            else:
                pull.finish("done", f"{pull.image} pulled on {pull.node} and started")
    except SparkControlError as exc:
        pull.finish("failed", scrub(exc.message))
    except Exception as exc:  # a bug must still end the pull visibly, not leave it "pulling"
        log.exception("services: pull of %s for %s failed unexpectedly", pull.image, pull.service)
        pull.finish("failed", scrub(f"internal error: {type(exc).__name__}: {exc}"))
    await pull.job.remove()


async def _follow(pull: ImagePull, *, scrub: Callable[[str], str], poll_s: float, give_up_s: float,
                  killed: bool, pending: PendingCancels | None) -> int | None:
    """The job's exit status once it ended, None when it was killed on a cancel."""
    def unreachable(down: bool) -> None:
        pull.unreachable_since = (pull.unreachable_since or time.time()) if down else None

    def kill_failed(message: str | None) -> None:  # the stop reports it (a 503); tried again meanwhile
        pull.cancel_error = message

    hooks = FollowHooks(output=lambda polled: pull.progress.feed(scrub(polled.text)),
                        unreachable=unreachable, kill_failed=kill_failed)
    return await follow(pull.job, what=f"pulling {pull.image}", cancel=pull.cancel_requested, poll_s=poll_s,
                        give_up_s=give_up_s, killed=killed, hooks=hooks, pending=pending)


def _failure(pull: ImagePull, status: int) -> str:
    detail = pull.progress.failure_detail() or "no output"
    hint = ""
    if status == 127:
        hint = " docker is not installed on the node (or not on the SSH user's PATH)."
    elif "nvcr.io" in pull.image and nim.refused(detail):
        hint = " " + nim.REFUSED_HINT
    elif any(s in detail for s in ("pull access denied", "manifest unknown", "not found", "does not exist")):
        hint = " Check the service's `image` in services.yaml or SERVICES_OVERRIDES (docs/SERVICES.md)."
    elif "no space left on device" in detail:
        hint = f" Free disk space on {pull.node} (GET /api/disk shows what uses it) and start it again."
    return f"{pull.node}: docker pull {pull.image} failed (exit {status}): {detail}.{hint}"
