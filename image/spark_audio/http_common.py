"""What both audio apps share at the HTTP boundary: OpenAI-shaped errors, the multipart upload
with its size limit, and building an app from the environment on first access."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from spark_audio.settings import ConfigError

T = TypeVar("T")


class EngineThread:
    """One dedicated thread for an engine: it is loaded there and every call runs there, one at a
    time. Why not asyncio.to_thread: OpenMP (CTranslate2, torch) keeps a team of spinning worker
    threads per calling thread, so calls hopping across a pool's threads pile up teams that fight
    for the cores (measured: 3.5 s per transcription became 100 s on a loaded 2-core machine)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ApiError(Exception):
    """An error for the caller: status and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, FormData]:
    """The multipart body's `file` (bytes) and its other fields; 413 above `max_bytes`, 400 when
    the body is not multipart or has no file."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"The request has {int(declared)} bytes; this server accepts at most {max_bytes} "
                            "(AUDIO_MAX_BYTES).", code="file_too_large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "Send the audio as multipart/form-data with the file in the `file` field.",
                       param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "The `file` field is missing: send the audio in a multipart field named `file`.",
                       param="file")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, f"The file exceeds {max_bytes} bytes (AUDIO_MAX_BYTES).", param="file",
                       code="file_too_large")
    return data, form


def form_list(form: FormData, name: str) -> list[str]:
    """A list field as clients send it: `name[]` (OpenAI's SDK) or repeated `name`."""
    return [str(v) for v in form.getlist(f"{name}[]") + form.getlist(name)]


def lazy_app(module: str, name: str, build: Callable[[], FastAPI]) -> Callable[[str], FastAPI]:
    """A module `__getattr__` for `uvicorn <module>:app`: the app is built from the environment on
    that first access only (importing the module builds nothing), and a configuration mistake
    becomes one line on stderr and exit status 2."""
    built: list[FastAPI] = []

    def __getattr__(attribute: str) -> FastAPI:
        if attribute != "app":
            raise AttributeError(f"module {module!r} has no attribute {attribute!r}")
        if not built:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            try:
                built.append(build())
            except ConfigError as exc:
                print(f"{name}: configuration error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
        return built[0]

    return __getattr__
