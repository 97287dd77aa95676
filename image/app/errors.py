"""The one error hierarchy of spark-control, and the one place it becomes HTTP.

    SparkControlError (500)              base: anything we raise on purpose
    ├── InvalidInput (400)               a user value failed validation (shellsafe, API bodies)
    ├── NotFound (404)                   unknown node, model, service, container
    ├── Conflict (409)                   an operation is already running on that node
    ├── ConfigError (500)                a config file or env var is wrong (named in the message)
    └── NodeError (502)                  talking to a node failed
        ├── NodeUnreachable (503)        cannot connect / connection lost / host key refused
        ├── NodeTimeout (504)            the node did not answer in time
        └── RemoteCommandFailed (502)    the command ran and exited non-zero (or was cut off)

Library exceptions (asyncssh, OSError, asyncio.TimeoutError) are translated into these
at exactly one boundary (app/ssh.py), re-raised `from exc`, so routers never see them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class SparkControlError(Exception):
    """Base class. `status` is the HTTP status; `message` is safe to show a user."""

    status = 500
    code = "internal_error"
    source = "spark-control"  # or "upstream": who failed is the first thing a user debugging an app asks

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        # One shape for every endpoint, the OpenAI one, so SDKs and the dashboard read it alike.
        return {"error": {"message": self.message, "type": type(self).__name__, "param": self.field,
                          "code": self.code, "source": self.source}}


class InvalidInput(SparkControlError):
    status = 400
    code = "invalid_input"


class NotFound(SparkControlError):
    status = 404
    code = "not_found"


class Conflict(SparkControlError):
    status = 409
    code = "conflict"


class PayloadTooLarge(SparkControlError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(SparkControlError):
    """What the request needs (a service, a model) is not running; the message says what to start."""

    status = 503
    code = "service_unavailable"


class UpstreamFailed(SparkControlError):
    """A model server or side service failed or answered nonsense. A refusal of the request
    itself (400, 413, ...) may keep the upstream's own status."""

    status = 502
    code = "upstream_error"
    source = "upstream"


class ConfigError(SparkControlError):
    """A configuration mistake. The message names the file (or variable), the key and the problem."""

    status = 500
    code = "config_error"


class NodeError(SparkControlError):
    status = 502
    code = "node_error"

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.node = node

    def to_dict(self) -> dict:
        body = super().to_dict()
        if self.node is not None:
            body["error"]["node"] = self.node
        return body


class NodeUnreachable(NodeError):
    status = 503
    code = "node_unreachable"


class NodeTimeout(NodeError):
    status = 504
    code = "node_timeout"


class RemoteCommandFailed(NodeError):
    status = 502
    code = "remote_command_failed"

    def __init__(self, message: str, *, node: str | None = None, exit_status: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message, node=node)
        self.exit_status = exit_status
        self.stderr = stderr


def error_response(exc: SparkControlError) -> JSONResponse:
    """The one mapping from an error to HTTP: for the handlers below and for endpoints that
    answer an error themselves (to count it in /metrics first)."""
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def install_error_handlers(app: FastAPI) -> None:
    """Map the hierarchy (and FastAPI's own validation errors) to JSON responses."""

    @app.exception_handler(SparkControlError)
    async def _spark_control_error(_request: Request, exc: SparkControlError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and wrong methods: the same error shape as everything else.
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {_request.method} {_request.url.path} (see docs/API.md)"
        body = {"error": {"message": message, "type": "HTTPError", "param": None, "code": str(exc.status_code),
                          "source": "spark-control"}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = "Invalid request: " + "; ".join(problems)
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return JSONResponse(
            {"error": {"message": message, "type": "InvalidInput", "param": param, "code": "invalid_input",
                       "source": "spark-control"}},
            status_code=422,
        )
