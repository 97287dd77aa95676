"""HTTP endpoints for the catalog and the model lifecycle (launch, stop, swap, logs, events)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app import models
from app.errors import InvalidInput, NotFound, SparkControlError
from app.swap import Lifecycle

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Request bodies live at module scope: inside build_router() FastAPI would answer 422 silently.
class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    placement: str | None = Field(None, description="spark1, spark2, both, or spark1+spark2; default: what the model needs")
    overrides: models.LaunchOverrides | None = None


class SwapRequest(LaunchRequest):
    model: str


def _lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


async def weights_on_nodes(lifecycle: Lifecycle) -> dict[str, set[str] | None]:
    """Which Hugging Face repos each node has in its cache (None: the node did not answer)."""
    async def on(node: str) -> set[str] | None:
        try:
            result = await lifecycle.pool.run(node, models.HF_CACHE_LIST_COMMAND, timeout=10, check=False)
        except SparkControlError:
            return None
        return models.parse_hf_cache_listing(result.stdout)

    names = list(lifecycle.pool.nodes)
    return dict(zip(names, await asyncio.gather(*map(on, names))))


def build_router() -> APIRouter:
    router = APIRouter(tags=["models"])

    @router.get("/api/models", summary="The catalog: where each model runs, its state, whether weights are present")
    async def list_models(request: Request) -> dict[str, Any]:
        lifecycle = _lifecycle(request)
        weights = await weights_on_nodes(lifecycle)
        entries = []
        for entry in lifecycle.catalog.entries():
            deployment = lifecycle.primary(entry.name)
            entries.append({
                **entry.summary(),
                "deployment": deployment.to_dict() if deployment else None,
                "replicas": [d.to_dict() for d in lifecycle.deployments_of(entry.name)],
                "state": deployment.state.value if deployment else "stopped",
                "weights": {n: (None if repos is None else entry.hf_repo in repos) for n, repos in weights.items()},
            })
        return {"models": entries, "busy": lifecycle.busy}

    @router.get("/api/models/{name}/command",
                summary="Dry run: the exact commands per node and the pre-flight verdict")
    async def dry_run(request: Request, name: str, placement: str | None = None,
                      facts: bool = Query(True, description="also check memory, ports and images on the nodes")):
        lifecycle = _lifecycle(request)
        entry, plan = lifecycle.plan(name, placement, None)
        verdict = lifecycle.static_verdict(entry, plan)
        if verdict.ok and facts:
            try:
                verdict = await lifecycle.full_verdict(entry, plan)
            except SparkControlError as exc:
                return {**plan.to_dict(), "preflight": verdict.to_dict(), "node_check_error": exc.message}
        return {**plan.to_dict(), "preflight": verdict.to_dict()}

    @router.post("/api/models/{name}/launch", status_code=202, summary="Launch a model (answers once it is starting)")
    async def launch(request: Request, name: str, body: LaunchRequest | None = None) -> dict[str, Any]:
        body = body or LaunchRequest()
        deployment = await _lifecycle(request).launch(name, body.placement, body.overrides)
        return deployment.to_dict()

    @router.post("/api/models/{name}/stop", status_code=202,
                 summary="Stop a running model: every replica, or only the one on `node`")
    async def stop(request: Request, name: str,
                   node: str | None = Query(None, description="stop only the replica on this node")) -> dict[str, Any]:
        stopped = await _lifecycle(request).stop(name, node)
        return {**stopped[0].to_dict(), "stopping": [d.id for d in stopped]}

    @router.post("/api/swap", status_code=202,
                 summary="Stop whatever occupies the target nodes, launch the model, wait for ready")
    async def swap(request: Request, body: SwapRequest) -> dict[str, Any]:
        deployment = await _lifecycle(request).launch(body.model, body.placement, body.overrides, replace=True)
        return deployment.to_dict()

    @router.get("/api/swap/events", summary="Server-sent events: every state change and load progress")
    async def events(request: Request, last_event_id: str | None = Header(None)) -> StreamingResponse:
        last = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        return StreamingResponse(_lifecycle(request).events.follow(last), media_type="text/event-stream",
                                 headers=_SSE_HEADERS)

    @router.get("/api/models/{name}/logs", summary="A running model's container logs (follow=true streams them)")
    async def logs(request: Request, name: str, follow: bool = False, tail: int = Query(200, ge=0, le=10000),
                   node: str | None = None) -> StreamingResponse:
        lifecycle = _lifecycle(request)
        replicas = lifecycle.deployments_of(lifecycle.model_name(name))
        if not replicas:
            raise NotFound(f"{name} is not running on any node, so it has no logs", field="model")
        node = node or replicas[0].nodes[0]
        deployment = next((d for d in replicas if node in d.containers), None)
        if deployment is None:
            where = ", ".join(n for d in replicas for n in d.nodes)
            raise InvalidInput(f"{name} does not run on {node}; it runs on {where}", field="node")
        command = models.logs_command(deployment.containers[node], tail=tail, follow=follow)
        return StreamingResponse(lifecycle.pool.get(node).stream(command), media_type="text/plain; charset=utf-8",
                                 headers=_SSE_HEADERS)

    return router
