"""Node status: one SSH round trip per node per refresh, parsed by app/probes.py.

`StatusService` probes every node concurrently; a node that is down is reported down with the
reason while the others still answer. The latest result per node is kept so the connectivity
monitor's probes double as a status cache (`GET /api/status?cached=true`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app import probes
from app.connectivity import ProbeResult
from app.errors import SparkControlError
from app.ssh import NodePool


_STREAM_LIFETIME_S = 300.0


class StatusService:
    def __init__(self, pool: NodePool, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.latest: dict[str, dict[str, Any]] = {}
        self._next_round = asyncio.Event()

    def round_finished(self) -> None:
        """Called by the connectivity monitor after each round: wakes every live stream."""
        event, self._next_round = self._next_round, asyncio.Event()
        event.set()

    async def wait_for_round(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._next_round.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pass

    async def probe_node(self, name: str) -> dict[str, Any]:
        node = self.pool.get(name)
        cfg = node.config
        base = {"name": name, "host": cfg.host, "user": cfg.user, "port": cfg.port, "checked_at": time.time()}
        started = time.monotonic()
        try:
            result = await node.run(probes.STATUS_COMMAND, timeout=self.timeout_s, check=False)
        except SparkControlError as exc:
            status = {**base, "reachable": False, "reason": exc.message.removeprefix(f"{name}: ")}
        else:
            latency_ms = round((time.monotonic() - started) * 1000, 2)
            parsed = probes.parse_status(result.stdout).to_dict()
            status = {**base, "reachable": True, "reason": None, "latency_ms": latency_ms, **parsed}
        self.latest[name] = status
        return status

    async def probe_all(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.probe_node(n) for n in self.pool.nodes)))

    async def connectivity_probe(self, name: str) -> ProbeResult:
        status = await self.probe_node(name)
        return status["reachable"], status.get("latency_ms"), status["reason"]


def build_router() -> APIRouter:
    router = APIRouter(tags=["status"])

    @router.get("/api/status", summary="Every node: reachability, GPU, memory, disk, containers")
    async def get_status(request: Request, cached: bool = False) -> dict[str, Any]:
        service: StatusService = request.app.state.status
        if cached and len(service.latest) == len(service.pool.nodes):
            nodes = [service.latest[n] for n in service.pool.nodes]
        else:
            nodes = await service.probe_all()
        return {"nodes": nodes, "generated_at": time.time()}

    @router.get("/api/status/stream", summary="Server-sent events: node status after every probe round")
    async def stream_status(request: Request) -> StreamingResponse:
        service: StatusService = request.app.state.status
        monitor = request.app.state.connectivity

        async def events():
            # A stream ends after a while and the browser's EventSource reconnects on its own:
            # an endless response would hold up a graceful shutdown of the server.
            ends_at = time.monotonic() + _STREAM_LIFETIME_S
            yield "retry: 1000\n\n"
            if len(service.latest) < len(service.pool.nodes):
                await service.wait_for_round(timeout=10.0)  # the first event carries every node
            while time.monotonic() < ends_at and not await request.is_disconnected():
                nodes = [service.latest[n] for n in service.pool.nodes if n in service.latest]
                connectivity = monitor.summary()
                connectivity["transitions"] = connectivity["transitions"][:50]
                payload = {"nodes": nodes, "connectivity": connectivity, "generated_at": time.time()}
                yield f"event: status\ndata: {json.dumps(payload)}\n\n"
                await service.wait_for_round(timeout=max(15.0, monitor.interval_s * 3))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/api/health", summary="Is the spark-control app itself up")
    async def get_health(request: Request) -> dict[str, Any]:
        state = request.app.state
        return {
            "status": "ok",
            "version": state.version,
            "uptime_s": round(time.monotonic() - state.started_monotonic, 3),
            "nodes": list(state.pool.nodes),
        }

    @router.get("/api/connectivity", summary="Per-node reachability history: uptime and transitions")
    async def get_connectivity(request: Request, limit: int = 200) -> dict[str, Any]:
        summary = request.app.state.connectivity.summary()
        summary["transitions"] = summary["transitions"][: max(0, limit)]
        return summary

    @router.post("/api/connectivity/check", summary="Probe every node now instead of waiting for the next round")
    async def check_connectivity_now(request: Request) -> dict[str, Any]:
        monitor = request.app.state.connectivity
        await monitor.probe_all()
        return monitor.summary()

    return router
