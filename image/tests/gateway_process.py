"""spark-control in its own process with READY deployments and no nodes, for load and fault
tests that measure the gateway process alone (memory, CPU):

    python -m uvicorn --factory gateway_process:create   (tests/ on PYTHONPATH)

`GATEWAY_UPSTREAMS` is JSON: {"model": ["http://127.0.0.1:P1", ...]}: one READY replica per URL,
on spark1, spark2, ... in turn, registered once the app's own lifespan has started.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager

from app.server import create_app
from app.settings import Settings
from app.swap import Deployment, State


def create():
    app = create_app(Settings.from_env())
    started_by_app = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with started_by_app(app_) as state:
            for model, urls in json.loads(os.environ["GATEWAY_UPSTREAMS"]).items():
                for i, url in enumerate(urls):
                    app_.state.lifecycle.register(Deployment(
                        model=model, served_name=model, nodes=(f"spark{i + 1}",), endpoint=url, containers={},
                        capabilities=("chat", "completions"), state=State.READY))
            yield state

    app.router.lifespan_context = lifespan
    return app
