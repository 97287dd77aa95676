"""The FastAPI entry point: `create_app(settings)`, the CSRF guard, routers and the dashboard.

`uvicorn app.server:app --port 9999` works from image/: `app` is built on first access (module
`__getattr__`), so importing this module creates nothing, and a configuration mistake ends the
process with one readable line instead of a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import httpx

from app import (audio_proxy, deep_health, disk, download, embeddings_proxy, health, llm_proxy, metrics, models,
                 models_api, nim, redaction_gateway, remote_job, services, services_catalog, status)
from app.connectivity import ConnectivityLog, ConnectivityMonitor
from app.errors import ConfigError, install_error_handlers
from app.pending_cancels import PendingCancels
from app.settings import Settings
from app.ssh import NodePool
from app.swap import Lifecycle

log = logging.getLogger("spark_control")

_STATIC_DIR = Path(__file__).parent / "static"

# Endpoints that downstream apps call from other origins (browser apps on other ports/hosts).
# Everything else that changes state must come from the dashboard's own origin.
_CSRF_EXEMPT_PREFIXES: tuple[str, ...] = ("/v1/", "/redact/v1/", "/api/redact", "/api/unredact")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _origin_host(value: str) -> str | None:
    """'http://host:port/path' -> 'host:port' (default ports made explicit); None if unparsable."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname.lower()}:{port}"


class CSRFGuard:
    """Pure ASGI middleware: a state-changing request whose Origin (or Referer) host differs
    from the Host it was sent to gets 403. Requests with neither header (curl, SDKs) pass:
    browsers always send Origin on cross-origin POSTs, which is what this defends against."""

    def __init__(self, app, exempt_prefixes: tuple[str, ...] = _CSRF_EXEMPT_PREFIXES) -> None:
        self.app = app
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS \
                and not scope["path"].startswith(self.exempt_prefixes):
            reason = self._refusal(scope)
            if reason:
                response = JSONResponse(
                    {"error": {"message": reason, "type": "CSRFRefused", "code": "csrf_refused"}},
                    status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _refusal(scope) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        source = headers.get("origin") or headers.get("referer")
        if source is None:
            return None
        served = _origin_host(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
        claimed = _origin_host(source)
        if claimed != served:
            return (f"cross-origin request refused: {source!r} is not this dashboard ({served}). "
                    "Control endpoints only accept requests from the spark-control page itself; "
                    "downstream apps should use the /v1/ proxy endpoints.")
        return None


class _RevalidatedStaticFiles(StaticFiles):
    """The dashboard's modules carry no version in their names: browsers must revalidate
    (ETag, 304) so an upgrade never runs yesterday's JavaScript against today's API."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _package_version() -> str:
    try:
        return version("spark-control")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Long-lived things (SSH pool, monitor) are created in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s: Settings = app.state.settings
        try:
            s.ensure_data_dir()
        except OSError as exc:  # the data files degrade on their own; never a crash at startup
            log.warning("cannot create the data directory for %s: %s", s.connectivity_log_path, exc)
        app.state.pool = NodePool(s)
        app.state.status = status.StatusService(app.state.pool, timeout_s=min(5.0, s.ssh_command_timeout_s))
        conn_log = ConnectivityLog(s.connectivity_log_path, s.connectivity_history)
        conn_log.load()
        app.state.connectivity = ConnectivityMonitor(
            conn_log, list(app.state.pool.nodes), app.state.status.connectivity_probe, s.connectivity_interval_s,
            on_round=app.state.status.round_finished)
        app.state.connectivity.start()
        # Per-phase timeouts: connecting to a model must be quick; reading may take long.
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0))
        app.state.lifecycle = Lifecycle(app.state.pool, app.state.catalog, app.state.http,
                                        load_timeout_s=s.launch_timeout_s, poll_interval_s=s.launch_poll_interval_s)
        refresh = asyncio.create_task(app.state.lifecycle.refresh_from_nodes())  # the truth is on the nodes
        pending = PendingCancels(s.pending_cancels_path)  # cancels a node has not heard yet, across restarts
        pending.keep_nodes(set(app.state.pool.nodes))
        app.state.downloads = download.DownloadManager(app.state.pool, hf_token=s.hf_token, pending=pending,
                                                       unreachable_give_up_s=s.job_unreachable_give_up_s)
        app.state.services = services.ServiceManager(app.state.pool, app.state.services_catalog, app.state.http, s,
                                                     pending=pending)
        # Downloads and image pulls the last run left on the nodes: one lookup per node, once it answers.
        owners = [app.state.downloads.adopt_found, app.state.services.adopt_found]
        finders = [asyncio.create_task(remote_job.adopt_jobs_left_on(app.state.pool, node, owners, pending))
                   for node in app.state.pool.nodes]
        app.state.deep_health = deep_health.DeepHealth(app.state, interval_s=s.deep_health_interval_s,
                                                       min_available_gb=s.deep_health_min_available_gb)
        app.state.deep_health.start()
        try:
            yield
        finally:
            refresh.cancel()
            for finder in finders:
                finder.cancel()
            await asyncio.gather(*finders, return_exceptions=True)
            await app.state.deep_health.stop()
            await app.state.downloads.close()
            await app.state.services.close()
            await app.state.lifecycle.close()
            await app.state.connectivity.stop()
            await app.state.http.aclose()
            await app.state.pool.close()

    app = FastAPI(title="spark-control", version=_package_version(), lifespan=lifespan,
                  description="Control plane and OpenAI-compatible gateway for DGX Spark clusters.")
    app.state.settings = settings or Settings.from_env()
    app.state.catalog = models.load_catalog(app.state.settings)  # a bad catalog stops startup, named
    app.state.services_catalog = services_catalog.load_services_catalog(app.state.settings)  # likewise
    app.state.proxy_api_keys = app.state.settings.api_keys
    # Node gauges read the monitor's latest probes at scrape time (the status service exists once running).
    app.state.metrics = metrics.create_metrics(
        lambda: getattr(app.state, "status", None) and app.state.status.latest.values() or ())
    app.state.version = _package_version()
    app.state.started_monotonic = time.monotonic()
    install_error_handlers(app)
    app.add_middleware(CSRFGuard)
    app.include_router(status.build_router())
    app.include_router(models_api.build_router())
    app.include_router(llm_proxy.build_router())
    app.include_router(embeddings_proxy.build_router())
    app.include_router(audio_proxy.build_router())
    app.include_router(redaction_gateway.build_router())
    app.include_router(metrics.build_router())
    app.include_router(services.build_router())
    app.include_router(nim.build_router())
    app.include_router(health.build_router())
    app.include_router(deep_health.build_router())
    app.include_router(download.build_router())
    app.include_router(disk.build_router())

    if _STATIC_DIR.is_dir():
        app.mount("/static", _RevalidatedStaticFiles(directory=_STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def dashboard() -> FileResponse:
            return FileResponse(_STATIC_DIR / "index.html")

    return app


def _app_from_environment() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # asyncssh logs every command at INFO: noise, and a command may carry a user's values.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return create_app()
    except ConfigError as exc:
        print(f"spark-control: configuration error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None


_app: FastAPI | None = None


def __getattr__(name: str):
    # `uvicorn app.server:app` looks up `app` here; it is built on that first access only.
    global _app
    if name == "app":
        if _app is None:
            _app = _app_from_environment()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
