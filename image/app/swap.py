"""Launch, stop and swap models: an explicit state machine per deployment (see design.md).

    stopped -> starting -> loading -> ready -> stopping -> stopped
                   \\          \\         \\          \\
                    `----------`---------`----------`--> failed (with the reason)

A deployment is one catalog model on a placement (one node, or head + worker). A model may run
as several deployments on different nodes (replicas): the gateway spreads requests over them and
retries a failed connect on another. The truth lives
on the nodes: containers carry `spark-control.*` labels, and `refresh_from_nodes()` rebuilds
every deployment from them after an app restart. One operation per node at a time: a second
one is refused with 409 naming what is in progress.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx

from app import models, validate
from app.errors import Conflict, NodeError, NotFound, SparkControlError
from app.events import EventLog
from app.readiness import check_ready
from app.ssh import NodePool

log = logging.getLogger(__name__)



# vLLM's access-log lines for the readiness probes themselves: noise as "progress".
_ACCESS_LOG = re.compile(r'"(GET|POST) /(health|v1/models|v1/completions|v1/embeddings|metrics)\b')


class State(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


ACTIVE_STATES = {State.STARTING, State.LOADING, State.READY, State.STOPPING}


@dataclass
class Deployment:
    model: str
    served_name: str
    nodes: tuple[str, ...]
    endpoint: str                           # http://<head host>:<port>
    containers: dict[str, str]              # node -> container name
    capabilities: tuple[str, ...] = ()
    state: State = State.STARTING
    since: float = field(default_factory=time.time)
    detail: str = ""

    @property
    def id(self) -> str:
        """Unique per model and placement: `gpt-oss-20b@spark2`, `qwen3-235b@spark1+spark2`."""
        return f"{self.model}@{'+'.join(self.nodes)}"

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.id, "model": self.model, "served_name": self.served_name, "nodes": list(self.nodes),
                "endpoint": self.endpoint, "containers": self.containers, "capabilities": list(self.capabilities),
                "state": self.state.value, "since": self.since, "detail": self.detail}


class Lifecycle:
    """Owns every deployment and every node's in-progress operation. Lives in the app's lifespan."""

    def __init__(self, pool: NodePool, catalog: models.Catalog, http: httpx.AsyncClient, *,
                 load_timeout_s: float, poll_interval_s: float = 1.0) -> None:
        self.pool = pool
        self.catalog = catalog
        self.http = http
        self.load_timeout_s = load_timeout_s
        self.poll_interval_s = poll_interval_s
        self.deployments: dict[str, Deployment] = {}   # Deployment.id -> deployment
        self.busy: dict[str, str] = {}      # node -> what it is doing
        self.events = EventLog()
        self._tasks: set[asyncio.Task] = set()
        self._launches: dict[str, asyncio.Task] = {}   # Deployment.id -> its launch, so a stop can abort a load
        self.turns: dict[str, itertools.count] = {}     # model -> whose turn among its replicas (app/routing.py)

    # ------------------------------------------------------------------ lookups

    def register(self, deployment: Deployment) -> Deployment:
        self.deployments[deployment.id] = deployment
        return deployment

    def deployments_of(self, model: str) -> list[Deployment]:
        """Every deployment (replica) of a catalog model, in node order."""
        order = {name: i for i, name in enumerate(self.pool.nodes)}
        return sorted((d for d in self.deployments.values() if d.model == model),
                      key=lambda d: [order.get(n, len(order)) for n in d.nodes])

    def primary(self, model: str) -> Deployment | None:
        """The deployment to show for a model: a ready one first, else the most recent."""
        replicas = self.deployments_of(model)
        ready = [d for d in replicas if d.state == State.READY]
        return (ready or sorted(replicas, key=lambda d: -d.since) or [None])[0]

    def model_name(self, name: str) -> str:
        """A catalog name or alias -> the catalog name (a model no longer in the catalog keeps its own)."""
        if any(d.model == name for d in self.deployments.values()):
            return name
        return self.catalog.get(name).name

    # ------------------------------------------------------------------ planning

    def placement(self, entry: models.ModelEntry, spec: str | None) -> models.Placement:
        """As `models.resolve_placement`; with no spec, as few nodes as the model needs, first nodes first."""
        configs = [node.config for node in self.pool.nodes.values()]
        if spec in (None, "", "auto"):
            return models.Placement(tuple(configs[: max(1, entry.nodes.min)]))
        return models.resolve_placement(spec, configs)

    def plan(self, name: str, placement_spec: str | None,
             overrides: models.LaunchOverrides | None) -> tuple[models.ModelEntry, models.LaunchPlan]:
        entry = self.catalog.get(name)
        plan = models.build_launch_command(entry, self.placement(entry, placement_spec), overrides)
        return entry, plan

    def static_verdict(self, entry: models.ModelEntry, plan: models.LaunchPlan) -> validate.Verdict:
        return validate.check_launch([(c.node, c.command) for c in plan.commands], model_size_gb=entry.size_gb)

    async def node_facts(self, nodes: list[str]) -> dict[str, validate.NodeFacts]:
        results = await asyncio.gather(*(self.pool.run(n, validate.NODE_FACTS_COMMAND, timeout=10) for n in nodes))
        return {n: validate.parse_node_facts(r.stdout) for n, r in zip(nodes, results)}

    async def full_verdict(self, entry: models.ModelEntry, plan: models.LaunchPlan) -> validate.Verdict:
        facts = await self.node_facts([c.node for c in plan.commands])
        return validate.check_launch([(c.node, c.command) for c in plan.commands], model_size_gb=entry.size_gb,
                                     node_facts=facts)

    # ------------------------------------------------------------------ operations

    def _claim(self, nodes: list[str], what: str) -> None:
        taken = {n: self.busy[n] for n in nodes if n in self.busy}
        if taken:
            doing = "; ".join(f"{n} is busy {w}" for n, w in taken.items())
            raise Conflict(f"{doing}. Wait for it to finish (GET /api/swap/events) and try again.")
        for n in nodes:
            self.busy[n] = what

    def _release(self, nodes: list[str]) -> None:
        for n in nodes:
            self.busy.pop(n, None)

    def occupants(self, nodes: tuple[str, ...], *, except_model: str | None = None) -> list[Deployment]:
        return [d for d in self.deployments.values()
                if d.model != except_model and d.state in ACTIVE_STATES and set(d.nodes) & set(nodes)]

    async def launch(self, name: str, placement_spec: str | None, overrides: models.LaunchOverrides | None,
                     *, replace: bool = False) -> Deployment:
        """Validate everything that can be validated without waiting, claim the nodes, then
        start in the background. `replace=True` is a swap: whatever occupies the nodes is stopped first."""
        entry, plan = self.plan(name, placement_spec, overrides)
        validate.raise_for_problems(self.static_verdict(entry, plan))  # before any SSH call
        nodes = tuple(c.node for c in plan.commands)
        running = [d for d in self.deployments_of(entry.name) if d.state in ACTIVE_STATES]
        clash = next((d for d in running if set(d.nodes) & set(nodes)), None)
        if clash is not None:
            used = {n for d in running for n in d.nodes}
            free = [n for n in self.pool.nodes if n not in used]
            hint = (f"; or add a replica on another node (placement: {free[0]})" if free
                    and len(free) >= max(1, entry.nodes.min) else "")
            raise Conflict(f"{entry.name} is already {clash.state.value} on {'+'.join(clash.nodes)}; "
                           f"stop it first{hint}")
        # A launch runs beside what is there (an embedder next to a chat model): the node
        # checks decide whether memory and the port allow it. A swap replaces what is there.
        occupants = self.occupants(nodes) if replace else []
        involved = sorted(set(nodes).union(*(d.nodes for d in occupants)))
        self._claim(involved, f"{'swapping to' if occupants else 'launching'} {entry.name}")
        try:
            if not occupants:  # a swap checks memory and ports after the old model has gone
                validate.raise_for_problems(await self.full_verdict(entry, plan))
        except BaseException:
            self._release(involved)
            raise
        deployment = Deployment(entry.name, plan.served_model_name, nodes, plan.endpoint,
                                {c.node: c.container for c in plan.commands}, tuple(entry.capabilities),
                                detail="starting containers")
        self.register(deployment)
        self._publish(deployment)
        launch = self._spawn(self._run_launch(deployment, entry, plan, occupants, involved))
        key = deployment.id
        self._launches[key] = launch
        launch.add_done_callback(lambda task: self._launches.pop(key, None)
                                 if self._launches.get(key) is task else None)
        return deployment

    async def stop(self, name: str, node: str | None = None) -> list[Deployment]:
        """Stop every replica of a model, or only the one on `node`."""
        model = self.model_name(name)
        targets = [d for d in self.deployments_of(model)
                   if d.state != State.STOPPED and (node is None or node in d.nodes)]
        if not targets:
            where = f"on {node}" if node else "on any node"
            raise NotFound(f"{name} is not running {where}", field="node" if node else "model")
        for deployment in targets:  # stopping a model that is still loading aborts the load
            launch = self._launches.get(deployment.id)
            if launch is not None and not launch.done():
                launch.cancel()
                await asyncio.gather(launch, return_exceptions=True)
        self._claim(sorted({n for d in targets for n in d.nodes}), f"stopping {model}")
        for deployment in targets:
            self._transition(deployment, State.STOPPING, "stopping containers")
            self._spawn(self._run_stop(deployment, release=True))
        return targets

    # ------------------------------------------------------------------ background work

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_launch(self, deployment: Deployment, entry: models.ModelEntry, plan: models.LaunchPlan,
                          occupants: list[Deployment], involved: list[str]) -> None:
        try:
            for old in occupants:
                self._transition(old, State.STOPPING, f"making room for {deployment.model}")
                if not await self._run_stop(old, release=False):
                    return self._transition(deployment, State.FAILED, f"could not stop {old.model}: {old.detail}")
            if occupants:
                verdict = await self.full_verdict(entry, plan)
                if not verdict.ok:
                    return self._transition(deployment, State.FAILED,
                                            "; ".join(p.message for p in verdict.problems))
            for command in plan.commands:  # head first: the worker joins it
                self._transition(deployment, State.STARTING, f"starting {command.container} on {command.node}")
                await self.pool.run(command.node, models.remove_if_stopped_command(command.container), timeout=30)
                await self.pool.run(command.node, command.command, timeout=120)
            self._transition(deployment, State.LOADING, "containers started; waiting for the model to load")
            await self._wait_until_ready(deployment)
        except SparkControlError as exc:
            self._transition(deployment, State.FAILED, exc.message)
        except Exception as exc:  # a bug must still leave a clear state, never a hang
            log.exception("launch of %s failed", deployment.model)
            self._transition(deployment, State.FAILED, f"internal error: {exc}")
        finally:
            self._release(involved)
            if deployment.state == State.FAILED:
                # Remove what the failed launch left on the nodes that still answer (best effort).
                await self._stop_containers(deployment, timeout_s=30)

    async def _wait_until_ready(self, deployment: Deployment) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        last_detail = ""
        while time.monotonic() < deadline:
            if deployment.state != State.LOADING:
                return
            problem = await self._container_problem(deployment)
            if problem:
                return self._transition(deployment, State.FAILED, problem)
            readiness = await check_ready(self.http, deployment.endpoint, deployment.served_name,
                                          deployment.capabilities)
            if readiness.ready:
                return self._transition(deployment, State.READY, readiness.detail)
            progress = await self._last_log_line(deployment) or readiness.detail
            if progress != last_detail:
                last_detail = progress
                deployment.detail = progress
                self._publish(deployment)
            await asyncio.sleep(self.poll_interval_s)
        self._transition(deployment, State.FAILED,
                         f"not ready after {self.load_timeout_s:g} s: {last_detail or 'no progress reported'}")

    async def _container_problem(self, deployment: Deployment) -> str | None:
        """Why the deployment cannot become ready (a container exited, a node vanished), or None."""
        async def inspect(node: str, container: str) -> str | None:
            try:
                result = await self.pool.run(node, models.inspect_command(container), timeout=10, check=False)
            except NodeError as exc:
                return f"{node} became unreachable while {deployment.model} was loading: {exc.message}"
            status = result.stdout.strip()
            if result.exit_status != 0:
                return f"container {container} on {node} is gone: {(result.stderr or status).strip()[:200]}"
            if not status.startswith("running"):
                tail = await self._log_tail(node, container, 5)
                return f"container {container} on {node} {status}: {tail}"
            return None

        problems = await asyncio.gather(*(inspect(n, c) for n, c in deployment.containers.items()))
        return next((p for p in problems if p), None)

    async def _log_tail(self, node: str, container: str, lines: int) -> str:
        try:
            result = await self.pool.run(node, models.logs_command(container, tail=lines), timeout=10, check=False)
        except NodeError:
            return ""
        return " | ".join(line.strip() for line in result.stdout.strip().splitlines()[-lines:])[-600:]

    async def _last_log_line(self, deployment: Deployment) -> str:
        """The head's latest log line that says something about loading (not our own health checks)."""
        head = deployment.nodes[0]
        lines = (await self._log_tail(head, deployment.containers[head], 8)).split(" | ")
        useful = [line for line in lines if line and not _ACCESS_LOG.search(line)]
        return useful[-1] if useful else ""

    async def _stop_containers(self, deployment: Deployment, timeout_s: float) -> list[str]:
        """Stop and remove the deployment's containers, workers first (a head that loses its worker
        mid-stop only adds noise to the logs). Returns why a node could not be reached, if any."""
        failures = []
        for node in reversed(deployment.nodes):
            try:
                await self.pool.run(node, models.stop_command(deployment.containers[node]), timeout=timeout_s,
                                    check=False)
            except NodeError as exc:
                failures.append(exc.message)
        return failures

    async def _run_stop(self, deployment: Deployment, *, release: bool) -> bool:
        try:
            failures = await self._stop_containers(deployment, timeout_s=60)
        finally:
            if release:
                self._release(list(deployment.nodes))
        if failures:
            self._transition(deployment, State.FAILED, "could not stop everywhere: " + "; ".join(failures))
            return False
        self._transition(deployment, State.STOPPED, "stopped")
        if self.deployments.get(deployment.id) is deployment:
            del self.deployments[deployment.id]
        return True

    # ------------------------------------------------------------------ state

    def _transition(self, deployment: Deployment, state: State, detail: str) -> None:
        deployment.state, deployment.detail, deployment.since = state, detail, time.time()
        log.info("%s on %s: %s (%s)", deployment.model, "+".join(deployment.nodes), state.value, detail)
        self._publish(deployment)

    def _publish(self, deployment: Deployment) -> None:
        self.events.publish("deployment", **deployment.to_dict())

    async def refresh_from_nodes(self) -> None:
        """Rebuild deployments from the containers' labels on every node (after an app restart)."""
        async def containers_on(node: str) -> list[models.ManagedContainer]:
            try:
                result = await self.pool.run(node, models.list_containers_command(), timeout=10)
            except SparkControlError as exc:
                log.warning("cannot list containers on %s: %s", node, exc.message)
                return []
            return models.parse_container_list(result.stdout)

        found: dict[tuple[str, tuple[str, ...]], dict[str, models.ManagedContainer]] = {}
        for node, containers in zip(self.pool.nodes, await asyncio.gather(*map(containers_on, self.pool.nodes))):
            for c in containers:  # replicas of one model differ in their placement label
                found.setdefault((c.model, c.placement or (node,)), {})[node] = c
        for (model_name, _placement), by_node in found.items():
            deployment = self._deployment_from_labels(model_name, by_node)
            if deployment.id in self.deployments:
                continue
            self.register(deployment)
            if all(c.state == "running" for c in by_node.values()):
                deployment.state, deployment.detail = State.LOADING, "found running on the nodes; checking"
                self._publish(deployment)
                self._spawn(self._watch_existing(deployment))
            else:
                exited = ", ".join(f"{c.name} on {n}: {c.status}" for n, c in by_node.items() if c.state != "running")
                self._transition(deployment, State.FAILED, f"found stopped containers: {exited}")

    def _deployment_from_labels(self, model_name: str, by_node: dict[str, models.ManagedContainer]) -> Deployment:
        any_container = next(iter(by_node.values()))
        nodes = tuple(n for n in any_container.placement if n in self.pool.nodes) or tuple(by_node)
        try:
            capabilities = tuple(self.catalog.get(model_name).capabilities)
        except NotFound:
            capabilities = ()
        return Deployment(
            model=model_name, served_name=any_container.served_name, nodes=nodes,
            endpoint=models.endpoint_url(self.pool.get(nodes[0]).config, any_container.port or models.DEFAULT_PORT),
            containers={n: c.name for n, c in by_node.items()}, capabilities=capabilities)

    async def _watch_existing(self, deployment: Deployment) -> None:
        try:
            await self._wait_until_ready(deployment)
        except Exception as exc:  # never leave it loading forever
            self._transition(deployment, State.FAILED, f"internal error: {exc}")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
