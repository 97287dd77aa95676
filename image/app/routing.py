"""Which upstream serves a model name: the one routes table of the gateway.

Downstream apps name a model by its catalog name, its served name, an alias, or `default`
(the chat model that became ready last). The answer comes from what the lifecycle knows is
really running. A model that is starting or loading (a swap in progress) is waited for, up to
`PROXY_WAIT_FOR_MODEL_S`, instead of failing the request: apps keep working across swaps.
A model served by several replicas (one deployment per node) gets every ready replica, in turn
order, so the gateway spreads requests and can retry a failed connect on the next one.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from app.errors import NotFound, SparkControlError
from app.swap import ACTIVE_STATES, Deployment, Lifecycle, State

DEFAULT_MODEL = "default"


class ModelUnavailable(SparkControlError):
    """The model is known but not serving (failed, stopping, or still loading after the wait)."""

    status = 503
    code = "model_unavailable"


@dataclass(frozen=True)
class Upstream:
    model: str          # catalog name
    served_name: str    # what the upstream vLLM calls it
    base_url: str       # http://host:port


def names_of(lifecycle: Lifecycle, deployment: Deployment) -> list[str]:
    """Every name a client may use for a deployment: served name, catalog name, aliases."""
    names = [deployment.served_name, deployment.model]
    try:
        names += list(lifecycle.catalog.get(deployment.model).aliases)
    except NotFound:
        pass
    return list(dict.fromkeys(names))


def _find(lifecycle: Lifecycle, requested: str, capability: str) -> list[Deployment]:
    """Every active replica of the model `requested` names, ready ones first."""
    candidates = [d for d in lifecycle.deployments.values() if d.state in ACTIVE_STATES]
    if requested == DEFAULT_MODEL:
        capable = [d for d in candidates if capability in d.capabilities or not d.capabilities]
        ready = [d for d in capable if d.state == State.READY]
        latest = max(ready or capable, key=lambda d: d.since, default=None)
        if latest is None:
            return []
        candidates, requested = capable, latest.model
    wanted = requested.lower()
    found = [d for d in candidates if wanted in (n.lower() for n in names_of(lifecycle, d))]
    return sorted(found, key=lambda d: d.state != State.READY)


def _in_turn(lifecycle: Lifecycle, ready: list[Deployment]) -> list[Deployment]:
    """Requests go round the ready replicas (the counters live with the app's lifecycle)."""
    if len(ready) < 2:
        return ready
    start = next(lifecycle.turns.setdefault(ready[0].model, itertools.count())) % len(ready)
    return ready[start:] + ready[:start]


async def resolve(lifecycle: Lifecycle, requested: str | None, *, capability: str,
                  wait_s: float) -> list[Upstream]:
    """The upstreams for `requested` (every ready replica, the next in turn first), waiting
    (bounded) while the model starts or loads."""
    requested = requested or DEFAULT_MODEL
    deadline = time.monotonic() + wait_s
    while True:
        replicas = _find(lifecycle, requested, capability)
        ready = [d for d in replicas if d.state == State.READY]
        if ready:
            return [Upstream(d.model, d.served_name, d.endpoint) for d in _in_turn(lifecycle, ready)]
        deployment = next((d for d in replicas if d.state in (State.STARTING, State.LOADING)),
                          replicas[0] if replicas else None)
        if deployment is None and not _known(lifecycle, requested):
            running = sorted({n for d in lifecycle.deployments.values() if d.state == State.READY
                              for n in names_of(lifecycle, d)})
            raise NotFound(f"The model `{requested}` does not exist or is not running. Running: "
                           f"{', '.join(running) or 'nothing'} (GET /v1/models lists them).", field="model")
        if deployment is None or deployment.state not in (State.STARTING, State.LOADING):
            state = deployment.state.value if deployment else "stopped"
            raise ModelUnavailable(f"The model `{requested}` is {state}; launch it from the dashboard or "
                                   f"POST /api/models/{{name}}/launch.", field="model")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ModelUnavailable(f"The model `{requested}` is still {deployment.state.value} after "
                                   f"waiting {wait_s:g} s; try again shortly.", field="model")
        await lifecycle.events.wait_for_change(timeout=min(remaining, 1.0))


def _known(lifecycle: Lifecycle, requested: str) -> bool:
    """A catalog name or alias that is simply not running (503), as opposed to nonsense (404)."""
    if requested == DEFAULT_MODEL:
        return False
    try:
        lifecycle.catalog.get(requested)
        return True
    except NotFound:
        return False
