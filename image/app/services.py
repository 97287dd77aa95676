"""Side services (spark_embed, Whisper, a diarizer, NIMs, a user's own): start, stop, restart, logs, status.

The truth is on the nodes: every service container carries `spark-control.service*` labels
(app/service_containers.py), so the state shown is what `docker ps` says now plus whether the
service's health path answers:

    pulling   its image is being pulled onto the node (`pull` has the progress); no container yet
              (`detail` says so when the node stopped answering: the pull goes on there)
    running   the container runs and `health_path` answers 200
    starting  the container runs, not healthy yet, within `start_timeout_s` of its start, or its
              image was just pulled and `docker run` is under way
    failed    it exited non-zero, or runs but is still not healthy after `start_timeout_s`,
              or its image could not be pulled (`pull.message` says why)
    stopped   no container (or it exited with 0)

A start whose image is already on the node runs the container at once; otherwise it answers
`pulling` and the pull runs on the node as a job (app/service_pull.py), the container started
after it. The pulls are the one thing kept in the app (until the next start or stop); a restarted
app finds the ones still on the nodes (adopt_found).

`app.state.services.endpoints(kind)` is what the audio gateway (and deep health) use to find
running, healthy services of a kind. It is asked on every audio request, so its answers are
cached briefly: `docker ps` for _SCAN_TTL_S, each health answer for _HEALTH_TTL_S (one probe
per service per window, shared by the requests that arrive meanwhile). A start or stop drops
both; a gateway that could not connect to a service drops its health answer (connect_failed),
so the next request probes it again instead of trusting the cache.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app import nim, remote_job, service_containers as sc, service_pull, shellsafe
from app.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable, SparkControlError
from app.launch import endpoint_url
from app.model_containers import logs_command, remove_if_stopped_command, stop_command
from app.pending_cancels import PendingCancels
from app.remote_job import RemoteJob
from app.service_schema import ServiceEntry
from app.services_catalog import ServicesCatalog
from app.ssh import NodePool

log = logging.getLogger(__name__)

_SCAN_TTL_S = 2.0        # endpoints() is called per gateway request: one `docker ps` per node per TTL
_HEALTH_TIMEOUT_S = 3.0
# A service that went down is offered to the gateways for at most this long (less when a request
# to it is refused first); a burst of requests costs one health probe per service per window.
_HEALTH_TTL_S = 3.0
_STOP_TIMEOUT_S = 10
_PULL_POLL_S = 1.0
_PULL_CANCEL_WAIT_S = 30.0  # a stop waits this long for a cancelled pull to end
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class ServiceEndpoint:
    """A running, healthy service, for the gateways: POST to base_url + the OpenAI path."""

    name: str
    kind: str
    node: str
    base_url: str  # http://<node host>:<port>
    model: str     # the `model` to send (served_model_name, else the service name)


@dataclass(frozen=True)
class Health:
    ok: bool
    status_code: int | None
    latency_ms: float | None
    detail: str


async def probe_health(http: httpx.AsyncClient, url: str, timeout: float = _HEALTH_TIMEOUT_S) -> Health:
    """GET url: ok on 200, with the round trip in ms."""
    started = time.monotonic()
    try:
        response = await http.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Health(False, None, None, f"no answer from {url}: {type(exc).__name__}")
    latency = round((time.monotonic() - started) * 1000, 2)
    detail = "healthy" if response.status_code == 200 else f"{url} answered {response.status_code}"
    return Health(response.status_code == 200, response.status_code, latency, detail)


def _usable(answer: asyncio.Future) -> bool:
    """A probe still running or answered; not one cancelled (shutdown) or broken (asked again)."""
    return not answer.done() or (not answer.cancelled() and answer.exception() is None)


class ServiceManager:
    """Owns the services catalog's containers on the nodes. Lives in the app's lifespan."""

    def __init__(self, pool: NodePool, catalog: ServicesCatalog, http: httpx.AsyncClient, settings,
                 *, pull_poll_s: float = _PULL_POLL_S, pending: PendingCancels | None = None) -> None:
        self.pool = pool
        self.pending = pending or PendingCancels(None)
        self.catalog = catalog
        self.http = http
        self.settings = settings
        self.pull_poll_s = pull_poll_s
        self._pulls: dict[str, service_pull.ImagePull] = {}  # by service: the latest pull not yet forgotten
        self._scan: tuple[float, list[sc.ServiceContainer]] | None = None
        self._scan_generation = 0  # one more at each _forget_scans
        # (base_url, health path) -> (when the probe started, its answer: a task while it runs)
        self._health: dict[tuple[str, str], tuple[float, asyncio.Future[Health]]] = {}
        self._busy: set[str] = set()
        # Services started or stopped since this app started: a pull the last run left for one of
        # them, found later (its node was down), is not carried on against the user's newer word.
        self._touched: set[str] = set()

    # ------------------------------------------------------------------ reading the nodes

    async def containers(self, *, fresh: bool = False) -> list[sc.ServiceContainer]:
        """Every service container on every reachable node (a node that does not answer is skipped)."""
        if not fresh and self._scan and time.monotonic() - self._scan[0] < _SCAN_TTL_S:
            return self._scan[1]

        async def on(node: str) -> list[sc.ServiceContainer]:
            try:
                result = await self.pool.run(node, sc.list_command(), timeout=10, check=False)
            except SparkControlError as exc:
                log.info("services: %s did not answer docker ps: %s", node, exc.message)
                return []
            return sc.parse_list(node, result.stdout)

        # A start or stop that ends while `docker ps` runs makes the list stale at once (a container
        # `docker run` has just started would read "Created": failed); read the nodes again then,
        # and never keep a stale list for the next callers.
        for _ in range(3):
            generation = self._scan_generation
            found = [c for per_node in await asyncio.gather(*map(on, self.pool.nodes)) for c in per_node]
            if generation == self._scan_generation:
                self._scan = (time.monotonic(), found)
                break
        return found

    def base_url(self, node: str, port: int) -> str:
        return endpoint_url(self.pool.get(node).config, port)

    async def status(self, entry: ServiceEntry, containers: list[sc.ServiceContainer]) -> dict[str, Any]:
        """One entry with its live state (see the module docstring)."""
        mine = [c for c in containers if c.service == entry.name]
        container = next((c for c in mine if c.state == "running"), mine[0] if mine else None)
        out: dict[str, Any] = {**entry.summary(), "state": "stopped", "running_on": None, "url": None,
                               "container": None, "health": None, "detail": "", "pull": None}
        pull = self._pulls.get(entry.name)
        if pull is not None and pull.state != "done":
            out["pull"] = pull.to_dict()
        if container is None:
            if pull is not None and pull.state in ("pulling", "starting", "failed"):
                out.update(running_on=pull.node, state=pull.state,
                           detail=pull.describe() if pull.active else pull.message)
            return out
        url = self.base_url(container.node, container.port or entry.port)
        out.update(running_on=container.node, url=url, container=container.name)
        if container.state == "created" and pull is not None and pull.active:
            # Its pull just ended and `docker run` is starting it: not a container that failed to start.
            out.update(state="starting", detail="image pulled; the container is being started")
            return out
        if container.state != "running":
            code = container.exit_code
            out["state"] = "stopped" if code == 0 else "failed"
            out["detail"] = f"container {container.status or container.state}; see its logs"
            if pull is not None and pull.state == "failed":  # `docker run` after the pull failed: docker's reason
                out["detail"] = pull.message
            return out
        started = time.monotonic()
        health = await probe_health(self.http, url + entry.health)
        self._remember(url, entry.health, started, health)  # what the dashboard shows, the gateways use
        out["health"] = asdict(health)
        age = time.time() - container.started if container.started else 0.0
        if health.ok:
            out["state"], out["detail"] = "running", "healthy"
        elif age <= entry.start_timeout_s:
            out["state"] = "starting"
            out["detail"] = f"up {age:.0f} s, waiting for {entry.health}: {health.detail}"
        else:
            out["state"] = "failed"
            out["detail"] = (f"running for {age:.0f} s but {entry.health} still does not answer 200 "
                             f"(start_timeout_s {entry.start_timeout_s:g}): {health.detail}")
        return out

    async def statuses(self, kind: str | None = None) -> list[dict[str, Any]]:
        containers = await self.containers(fresh=True)
        entries = self.catalog.entries(kind)
        return list(await asyncio.gather(*(self.status(e, containers) for e in entries)))

    async def get(self, name: str) -> dict[str, Any]:
        return await self.status(self._entry(name), await self.containers(fresh=True))

    async def endpoints(self, kind: str) -> list[ServiceEndpoint]:
        """Running services of `kind` whose health path answers, for the gateways."""
        containers = await self.containers()
        candidates = [ServiceEndpoint(entry.name, entry.kind, c.node, self.base_url(c.node, c.port or entry.port),
                                      entry.model_name)
                      for entry in self.catalog.entries(kind) for c in containers
                      if c.service == entry.name and c.state == "running"]
        paths = {entry.name: entry.health for entry in self.catalog.entries(kind)}
        healths = await asyncio.gather(*(self._cached_health(e.base_url, paths[e.name]) for e in candidates))
        return [endpoint for endpoint, health in zip(candidates, healths) if health.ok]

    async def _cached_health(self, base_url: str, path: str) -> Health:
        """The service's health answer of the last _HEALTH_TTL_S, else a new probe; requests that
        come while a probe runs wait for that one instead of sending their own."""
        key = (base_url, path)
        now = time.monotonic()
        cached = self._health.get(key)
        if cached is None or now - cached[0] >= _HEALTH_TTL_S or not _usable(cached[1]):
            cached = self._health[key] = (now, asyncio.ensure_future(probe_health(self.http, base_url + path)))
        # Shielded: a client that goes away must not cancel the probe the other requests wait for.
        return await asyncio.shield(cached[1])

    def _remember(self, base_url: str, path: str, started: float, health: Health) -> None:
        answered: asyncio.Future[Health] = asyncio.get_running_loop().create_future()
        answered.set_result(health)
        self._health[(base_url, path)] = (started, answered)

    def connect_failed(self, base_url: str) -> None:
        """A gateway could not connect to `base_url`: its cached health answer no longer counts."""
        for key in [k for k in self._health if k[0] == base_url]:
            del self._health[key]

    def _forget_scans(self) -> None:
        """After a start or stop: the next endpoints() sees the nodes and the services as they are now."""
        self._scan = None
        self._scan_generation += 1
        self._health.clear()

    # ------------------------------------------------------------------ operations

    def _entry(self, name: str, kind: str | None = None) -> ServiceEntry:
        shellsafe.validate_service_name(name, field="service")
        entry = self.catalog.get(name)
        if kind == "nim" and entry.kind != "nim":
            raise InvalidInput(f"service {name!r} is not a NIM (kind {entry.kind}); use /api/services/{name}",
                               field="service")
        return entry

    async def start(self, name: str, node: str | None = None, *, kind: str | None = None) -> dict[str, Any]:
        entry = self._entry(name, kind)
        node = node or entry.node
        shellsafe.validate_service_name(node, field="node")
        self.pool.get(node)  # NotFound names the configured nodes
        if entry.kind == "nim":
            nim.key_input(self.settings)  # 503 before anything runs when no key is configured
        self._touched.add(name)
        with self._claim(name):
            pull = self._pulls.get(name)
            if pull is not None and pull.active:
                raise Conflict(f"service {name!r} is pulling its image on {pull.node}; wait, or stop it to cancel")
            running = [c for c in await self.containers(fresh=True) if c.service == name and c.state == "running"]
            if running:
                raise Conflict(f"service {name!r} is already running on {running[0].node}; stop or restart it")
            self._pulls.pop(name, None)  # a failed pull's reason goes with a new start
            await self.pool.run(node, remove_if_stopped_command(sc.container_name(name)), timeout=30, check=False)
            present = await self.pool.run(node, service_pull.present_command(entry.image), timeout=30, check=False)
            if present.exit_status == 0:
                await self._run_container(entry, node)
            else:
                await self._start_pull(entry, node)
            self._forget_scans()
        return await self.get(name)

    async def _start_pull(self, entry: ServiceEntry, node: str) -> None:
        """`docker pull` as a job on the node; a task follows it and then runs the container."""
        if entry.kind == "nim":
            await self._ngc_login(node)  # now, not in the job: its processes would hold the key for minutes
        job = RemoteJob(self.pool, node, service_pull.JOB_PREFIX + secrets.token_hex(6))
        pull = service_pull.ImagePull(entry.name, node, entry.image, job)
        await job.start(service_pull.pull_command(entry.image),
                        meta=service_pull.job_meta(entry.name, node, entry.image, pull.started))
        self._pulls[entry.name] = pull
        self._follow_pull(entry, pull)
        log.info("services: pulling %s for %s on %s (job %s)", entry.image, entry.name, node, job.job_id)

    def _follow_pull(self, entry: ServiceEntry, pull: service_pull.ImagePull, *, killed: bool = False) -> None:
        """The task that follows `pull` to its end, then starts the container."""
        node = pull.node

        async def then() -> None:
            await self._run_container(entry, node)
            self._forget_scans()

        async def undo() -> None:  # a stop came while `then()` ran
            container = sc.container_name(entry.name)
            await self.pool.run(node, stop_command(container, _STOP_TIMEOUT_S), timeout=_STOP_TIMEOUT_S + 30,
                                check=False)
            self._forget_scans()

        pull.task = asyncio.create_task(service_pull.run(
            pull, then=then, undo=undo, scrub=lambda text: nim.scrub(text, self.settings), poll_s=self.pull_poll_s,
            give_up_s=self.settings.job_unreachable_give_up_s, killed=killed, pending=self.pending))
        pull.task.add_done_callback(lambda _: self._pull_ended(pull))

    # ------------------------------------------------------------------ after a restart

    async def adopt_found(self, node: str, found: list[remote_job.FoundJob]) -> None:
        """Follow again the image pulls the last run left on `node` (remote_job.adopt_jobs_left_on)."""
        pulls, problems = service_pull.found_pulls(node, found)
        for problem in problems:
            log.warning("services: pull not resumed: %s", problem)
        for found_pull in pulls:
            try:
                await self._adopt_pull(node, found_pull)
            except Exception:  # one pull that cannot be taken over must not stop the others
                log.exception("services: pull job %s on %s not resumed", found_pull.job.job_id, node)

    async def _adopt_pull(self, node: str, found: service_pull.FoundPull) -> None:
        job = RemoteJob(self.pool, node, found.job.job_id)
        entry = next((e for e in self.catalog if e.name == found.service), None)
        if entry is None:
            await self._drop_found_pull(job, found, f"service {found.service!r} is no longer in the catalog")
        elif entry.image != found.image:
            await self._drop_found_pull(job, found, f"service {found.service!r} now uses {entry.image}")
        elif found.service in self._busy or found.service in self._touched:  # the user's word wins
            await self._drop_found_pull(job, found, f"service {found.service!r} was started or stopped since")
        elif (node, job.job_id) in self.pending:  # stopped before the restart; the node never heard it
            # Followed until the kill reaches the node, then it ends cancelled.
            self._take_over(entry, job, found, cancel=True)
            log.info("services: the pull of %s on %s was stopped before the restart; cancelling it there",
                     entry.image, node)
        else:
            # Claimed while the containers are read: a start meanwhile would pull a second time.
            with self._claim(found.service):
                # Only what `start` refuses for: an old exited container of it does not count.
                started = found.service in self._pulls or any(
                    c.service == found.service and c.state in ("running", "created")
                    for c in await self.containers(fresh=True))
                if not started:
                    self._take_over(entry, job, found, cancel=False)
                    log.info("services: following again the pull of %s for %s on %s (job %s)", entry.image,
                             entry.name, node, job.job_id)
                    return
            await self._drop_found_pull(job, found, f"service {found.service!r} was started again meanwhile")

    def _take_over(self, entry: ServiceEntry, job: RemoteJob, found: service_pull.FoundPull, *, cancel: bool) -> None:
        """Follow a pull the last run left as this app's own (cancel: it was stopped before the restart)."""
        pull = service_pull.ImagePull(entry.name, job.node, entry.image, job, started=found.started)
        if cancel:
            pull.cancel_requested.set()
        self._pulls[entry.name] = pull
        self._follow_pull(entry, pull, killed=found.job.killed)

    async def _drop_found_pull(self, job: RemoteJob, found: service_pull.FoundPull, why: str) -> None:
        """A pull left by the last run that is not carried on: stopped on its node, its job removed."""
        log.info("services: the pull of %s on %s left by the last run is dropped: %s", found.image, job.node, why)
        if found.job.running:
            await job.kill()
        self.pending.discard(job.node, job.job_id)
        await job.remove()

    async def _ngc_login(self, node: str) -> None:
        """`docker login nvcr.io` on `node`, the key on stdin; 503 with docker's reason when refused."""
        result = await self.pool.run(node, nim.login_from_stdin_command(), input=nim.key_input(self.settings),
                                     timeout=60, check=False)
        if result.exit_status != 0:
            output = nim.scrub((result.stderr or result.stdout).strip(), self.settings)[-800:] or "no output"
            hint = " " + nim.REFUSED_HINT if nim.refused(output) else ""
            raise ServiceUnavailable(f"{node}: docker login {nim.NGC_REGISTRY} failed (exit {result.exit_status}): "
                                     f"{output}.{hint}", field="NGC_API_KEY", code="ngc_login_failed")

    def _pull_ended(self, pull: service_pull.ImagePull) -> None:
        """A pull that started its container or was cancelled is forgotten; a failed one stays
        (the services list shows why) until the next start or stop."""
        if pull.state in ("done", "cancelled") and self._pulls.get(pull.service) is pull:
            del self._pulls[pull.service]
        self._forget_scans()

    async def _cancel_pull(self, pull: service_pull.ImagePull) -> None:
        """Ask the pull to end and wait for it, at most _PULL_CANCEL_WAIT_S, less when its node could
        not be reached to kill it (the caller says so)."""
        pull.cancel_requested.set()
        if pull.task is None:
            return
        deadline = time.monotonic() + _PULL_CANCEL_WAIT_S
        while not pull.task.done() and not pull.cancel_error and time.monotonic() < deadline:
            await asyncio.wait({pull.task}, timeout=0.25)
        if not pull.task.done():
            log.warning("services: the cancelled pull of %s on %s has not ended yet", pull.image, pull.node)

    async def close(self) -> None:
        """App shutdown: stop following the pulls (they finish on the nodes; nothing is started)."""
        tasks = [p.task for p in self._pulls.values() if p.task is not None and not p.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_container(self, entry: ServiceEntry, node: str) -> None:
        if entry.kind == "nim":
            key = nim.key_input(self.settings)  # 400 before anything runs when no key is configured
            command = nim.login_and_run_command(sc.shell_command(sc.run_argv(entry, secret_env=(nim.KEY_ENV,))))
            result = await self.pool.run(node, command, timeout=600, check=False, input=key)
        else:
            result = await self.pool.run(node, sc.shell_command(sc.run_argv(entry)), timeout=600, check=False)
        if result.exit_status != 0:
            output = nim.scrub((result.stderr or result.stdout).strip(), self.settings)
            raise SparkControlError(f"{node}: could not start service {entry.name!r} (exit {result.exit_status}): "
                                    f"{output[-800:] or 'no output'}")
        log.info("services: started %s on %s", entry.name, node)

    async def stop(self, name: str, *, kind: str | None = None) -> dict[str, Any]:
        """Stop the container, or cancel the pull (the container it would start never appears)."""
        entry = self._entry(name, kind)
        self._touched.add(name)
        with self._claim(name):
            pull = self._pulls.get(entry.name)
            if pull is not None and pull.active:
                await self._cancel_pull(pull)  # a container it started meanwhile is stopped below
                if pull.active and pull.cancel_error:  # kept: the pull task goes on trying to kill it
                    raise ServiceUnavailable(f"could not cancel the pull of {pull.image} on {pull.node}: "
                                             f"{pull.cancel_error}; it may still be running there. spark-control "
                                             f"cancels it as soon as {pull.node} answers again",
                                             code="pull_cancel_failed")
            if self._pulls.get(entry.name) is pull:
                self._pulls.pop(entry.name, None)
            mine = [c for c in await self.containers(fresh=True) if c.service == entry.name]
            if not mine and pull is None:
                raise NotFound(f"service {name!r} is not running on any node; nothing to stop", field="service")
            for c in mine:
                await self.pool.run(c.node, stop_command(c.name, _STOP_TIMEOUT_S), timeout=_STOP_TIMEOUT_S + 30)
            self._forget_scans()
        log.info("services: stopped %s", name)
        return await self.get(name)

    async def restart(self, name: str, node: str | None = None) -> dict[str, Any]:
        entry = self._entry(name)
        mine = [c for c in await self.containers(fresh=True) if c.service == entry.name]
        pull = self._pulls.get(entry.name)
        if mine or pull is not None:
            await self.stop(name)
        where = mine[0].node if mine else pull.node if pull is not None else None
        return await self.start(name, node or where)

    async def logs(self, name: str, *, tail: int, follow: bool) -> tuple[str, str]:
        """(node, command) that prints the service container's logs."""
        entry = self._entry(name)
        mine = [c for c in await self.containers(fresh=True) if c.service == entry.name]
        if not mine:
            raise NotFound(f"service {name!r} has no container on any node, so it has no logs", field="service")
        running = next((c for c in mine if c.state == "running"), mine[0])
        return running.node, logs_command(running.name, tail=tail, follow=follow)

    @contextmanager
    def _claim(self, name: str) -> Iterator[None]:
        """One start/stop per service at a time: a second one is a 409, never a race on the node."""
        if name in self._busy:
            raise Conflict(f"service {name!r} is being started or stopped; try again in a moment")
        self._busy.add(name)
        try:
            yield
        finally:
            self._busy.discard(name)


# Request bodies at module scope: inside build_router() FastAPI would answer 422 silently.
class ServiceStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str | None = Field(None, description="the node to run on; default: the entry's `node`")


def _manager(request: Request) -> ServiceManager:
    return request.app.state.services


def build_router() -> APIRouter:
    router = APIRouter(tags=["services"])

    @router.get("/api/services", summary="The services catalog with each service's live state, node, URL and health")
    async def list_services(request: Request) -> dict[str, Any]:
        manager = _manager(request)
        return {"services": await manager.statuses(), "sources": list(manager.catalog.sources)}

    @router.get("/api/services/{name}", summary="One service's live state")
    async def get_service(request: Request, name: str) -> dict[str, Any]:
        return await _manager(request).get(name)

    @router.post("/api/services/{name}/start", status_code=202,
                 summary="Start a service on its node (or `node`): runs the container, or answers `pulling` "
                         "while its image is pulled first")
    async def start(request: Request, name: str, body: ServiceStartRequest | None = None) -> dict[str, Any]:
        return await _manager(request).start(name, (body or ServiceStartRequest()).node)

    @router.post("/api/services/{name}/stop", summary="Stop a service and remove its container, or cancel its pull")
    async def stop(request: Request, name: str) -> dict[str, Any]:
        return await _manager(request).stop(name)

    @router.post("/api/services/{name}/restart", status_code=202,
                 summary="Stop the service (if it runs) and start it again on the same node (or `node`)")
    async def restart(request: Request, name: str, body: ServiceStartRequest | None = None) -> dict[str, Any]:
        return await _manager(request).restart(name, (body or ServiceStartRequest()).node)

    @router.get("/api/services/{name}/logs", summary="A service container's logs (follow=true streams them)")
    async def logs(request: Request, name: str, follow: bool = False,
                   tail: int = Query(200, ge=0, le=10000)) -> StreamingResponse:
        manager = _manager(request)
        node, command = await manager.logs(name, tail=tail, follow=follow)
        return StreamingResponse(manager.pool.get(node).stream(command), media_type="text/plain; charset=utf-8",
                                 headers=_SSE_HEADERS)

    return router
