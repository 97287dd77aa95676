"""Errors in the OpenAI shape, for the /v1 gateway endpoints.

`{"error": {"message", "type", "param", "code", "source"}}`: the openai SDK reads the first four;
app/errors.py gives the project's own errors this shape too; this module is for errors that
are not exceptions (an upstream's answer, a broken stream). `source` says whether spark-control itself ("spark-control") or the model server ("upstream")
refused, which is the first thing a user debugging an app needs to know.
"""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_body(status: int, message: str, *, type_: str | None = None, param: str | None = None,
               code: str | None = None, source: str = "spark-control") -> dict:
    return {"error": {"message": message, "type": type_ or _TYPES.get(status, "server_error"),
                      "param": param, "code": code, "source": source}}


def openai_error_response(status: int, message: str, *, type_: str | None = None, param: str | None = None,
                          code: str | None = None, source: str = "spark-control") -> JSONResponse:
    return JSONResponse(error_body(status, message, type_=type_, param=param, code=code, source=source),
                        status_code=status)


def sse_error_event(message: str, *, source: str, status: int = 502) -> bytes:
    """How a stream that already started reports a failure: one more event, never a second response."""
    return f"data: {json.dumps(error_body(status, message, source=source))}\n\n".encode()
