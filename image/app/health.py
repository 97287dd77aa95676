"""Quick health: for every running model and service, is its port open and does its health path answer?

Cheap enough to call often (one TCP connect and one GET per target, all at once): it says that
something listens and claims to be healthy. Whether it answers real requests with sense is
deep health's job (app/deep_health.py). The app's own liveness stays `GET /api/health`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request

from app.services import probe_health
from app.swap import ACTIVE_STATES

_CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Target:
    """Something running that should answer: a model deployment or a service."""

    type: str      # "model" or "service"
    name: str
    kind: str      # a service's kind, or a model's capabilities joined with "+"
    node: str
    base_url: str
    health_path: str
    state: str
    model: str     # the `model` to send in real requests
    capabilities: tuple[str, ...] = ()
    expected_dimension: int | None = None


async def running_targets(state) -> list[Target]:
    """Every model deployment that is up and every service container that runs, from app.state."""
    targets = []
    for d in state.lifecycle.deployments.values():
        if d.state in ACTIVE_STATES:
            targets.append(Target("model", d.model, "+".join(d.capabilities), d.nodes[0], d.endpoint, "/health",
                                  d.state.value, d.served_name, tuple(d.capabilities)))
    services = state.services
    containers = await services.containers(fresh=True)
    for entry in services.catalog.entries():
        for c in containers:
            if c.service == entry.name and c.state == "running":
                targets.append(Target("service", entry.name, entry.kind, c.node,
                                      services.base_url(c.node, c.port or entry.port), entry.health, c.state,
                                      entry.model_name, (entry.kind,), entry.expected_dimension))
    return targets


async def port_open(base_url: str, timeout: float = _CONNECT_TIMEOUT_S) -> tuple[bool, float | None, str]:
    """(open, connect time in ms, detail) for the host and port of a base URL."""
    parts = urlsplit(base_url)
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        return False, None, f"port {parts.port} on {parts.hostname} is closed: {type(exc).__name__}"
    latency = round((time.monotonic() - started) * 1000, 2)
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        pass
    return True, latency, "open"


async def quick_check(http, target: Target) -> dict[str, Any]:
    opened, connect_ms, detail = await port_open(target.base_url)
    result: dict[str, Any] = {**asdict(target), "capabilities": list(target.capabilities), "port_open": opened,
                              "connect_ms": connect_ms, "ok": False, "health": None, "detail": detail}
    if opened:
        health = await probe_health(http, target.base_url + target.health_path)
        result.update(ok=health.ok, health=asdict(health), detail=health.detail)
    return result


def build_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/api/health/services",
                summary="Quick health of every running model and service: port open, health path, latency")
    async def services_health(request: Request) -> dict[str, Any]:
        state = request.app.state
        targets = await running_targets(state)
        results = await asyncio.gather(*(quick_check(state.http, t) for t in targets))
        return {"ok": all(r["ok"] for r in results), "targets": list(results), "checked_at": time.time()}

    return router
