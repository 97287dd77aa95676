"""The real spark-control app under uvicorn in a thread of the test process, so a test can tell its
lifecycle what is deployed (the gateway tests: test_llm_proxy, test_embeddings_proxy, test_spark_embed)."""

from __future__ import annotations

import threading
from typing import Self

import uvicorn

from app.server import create_app
from app.settings import Settings
from app.swap import Deployment, State
from conftest import free_port, wait_until
from fake_upstream import FakeUpstream


class InThreadApp:
    """The real app under uvicorn in a thread; its data files in `tmp_path`, `env` on top."""

    start_timeout_s = 15.0

    def __init__(self, tmp_path, **env: str) -> None:
        environ = {"DATA_DIR": str(tmp_path / "data"), "CONNECTIVITY_LOG": str(tmp_path / "c.json"),
                   "REDACTION_MAP_DB": str(tmp_path / "r.db"),
                   "CONNECTIVITY_INTERVAL_S": "30", **env}
        self.app = create_app(Settings.from_env(environ=environ))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        wait_until(lambda: self.server.started, self.start_timeout_s, message="app started")
        return self

    def add_deployment(self, endpoint: str, *, name: str, served_name: str, capabilities: tuple[str, ...],
                       state: State = State.READY, node: str = "spark1") -> Deployment:
        """What the lifecycle would know after launching `name` on `node`, served at `endpoint`."""
        return self.app.state.lifecycle.register(Deployment(
            model=name, served_name=served_name, nodes=(node,), endpoint=endpoint, containers={},
            capabilities=capabilities, state=state))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ChatGateway(InThreadApp):
    """The app in a thread, for chat models served by a FakeUpstream (test_llm_proxy)."""

    start_timeout_s = 10.0

    def deploy(self, upstream: FakeUpstream, state: State = State.READY, name: str = "test-model",
               node: str = "spark1") -> Deployment:
        return self.add_deployment(upstream.base_url, name=name, served_name=upstream.served_name,
                                   capabilities=("chat", "completions"), state=state, node=node)
