"""The transcription service's HTTP API (OpenAI / speaches-compatible):
`POST /v1/audio/transcriptions`, `GET /v1/models`, `GET /health`.

`uvicorn spark_audio.transcribe_app:app` builds the app from the environment (settings.py) on
first access, so importing this module loads nothing; the model is loaded in the lifespan,
before the port accepts connections (/health answers 200 from then on).

The multipart fields are OpenAI's: file, model, language, prompt, temperature, response_format
(json, text, srt, vtt, verbose_json) and timestamp_granularities[] (word, segment: words are
computed only when asked, as they cost an alignment pass). `model` is accepted whatever it names:
this server serves one model, and a gateway in front names it as its catalog does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import FormData

from spark_audio import __version__, formats
from spark_audio.audio_io import AudioError, decode
from spark_audio.http_common import (ApiError, EngineThread, form_list, install_error_handler, lazy_app,
                                     read_upload)
from spark_audio.settings import TranscribeConfig

log = logging.getLogger("spark_audio.transcribe")
_GRANULARITIES = ("word", "segment")


def create_app(config: TranscribeConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from spark_audio.whisper_engine import WhisperEngine

        app.state.worker = EngineThread("whisper")
        app.state.engine = await app.state.worker.run(
            WhisperEngine, config.model_path, config.device, config.compute_type, config.cpu_threads,
            config.beam_size)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            app.state.worker.close()

    app = FastAPI(title="spark_audio transcription", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible speech to text with faster-whisper (word timestamps).")
    app.state.ready = False
    app.state.created = int(time.time())
    install_error_handler(app)

    @app.post("/v1/audio/transcriptions", summary="Transcribe an audio file (OpenAI shapes)")
    async def transcriptions(request: Request) -> Response:
        data, form = await read_upload(request, config.max_bytes)
        options = _options(form, request.app.state.engine.multilingual)
        try:
            audio = await asyncio.to_thread(decode, data)
        except AudioError as exc:
            raise ApiError(400, str(exc), param="file", code="invalid_audio") from None
        started = time.monotonic()
        result = await request.app.state.worker.run(
            request.app.state.engine.transcribe, audio, language=options["language"], prompt=options["prompt"],
            temperature=options["temperature"], word_timestamps=options["words"])
        log.info("transcribed %.1f s of audio in %.2f s", result["duration"], time.monotonic() - started)
        return _render(result, options["format"])

    @app.get("/v1/models", summary="The one model this server serves")
    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                            "created": request.app.state.created, "owned_by": "spark-audio",
                                            "root": str(config.model_path)}]}

    @app.get("/health", summary="200 once the model is loaded, 503 before")
    async def health(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        engine = request.app.state.engine
        return JSONResponse({"status": "ok", "model": config.model_name, "device": engine.device,
                             "load_seconds": round(engine.load_seconds, 3)})

    return app


def _options(form: FormData, multilingual: bool) -> dict[str, Any]:
    """The form's options, checked: 400 with the field's name for anything this server cannot do."""
    response_format = str(form.get("response_format") or "json")
    if response_format not in formats.RESPONSE_FORMATS:
        raise ApiError(400, f"`response_format` {response_format!r} is not one of "
                            f"{', '.join(formats.RESPONSE_FORMATS)} (speaker labels, diarized_json, come from "
                            "spark-control's gateway, which merges this service with a diarizer).",
                       param="response_format")
    granularities = form_list(form, "timestamp_granularities")
    unknown = [g for g in granularities if g not in _GRANULARITIES]
    if unknown:
        raise ApiError(400, f"`timestamp_granularities[]` {unknown[0]!r} is not one of word, segment.",
                       param="timestamp_granularities")
    if str(form.get("stream") or "false").lower() not in ("false", "0", ""):
        raise ApiError(400, "`stream` is not supported by this service: ask without it (spark-control's "
                            "gateway streams the result).", param="stream")
    language = str(form.get("language") or "").strip().lower() or None
    if language and not multilingual and language != "en":
        raise ApiError(400, f"`language` {language!r}: this server's model is English-only; send en or "
                            "leave `language` out.", param="language")
    temperature = None
    if str(form.get("temperature") or "").strip():
        try:
            temperature = float(str(form.get("temperature")))
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise ApiError(400, "`temperature` must be a number between 0 and 1.", param="temperature")
    return {"format": response_format, "language": language, "prompt": str(form.get("prompt") or "") or None,
            "temperature": temperature, "words": response_format == "verbose_json" and "word" in granularities}


def _render(result: dict[str, Any], response_format: str) -> Response:
    if response_format == "verbose_json":
        return JSONResponse(result)
    if response_format == "json":
        return JSONResponse({"text": result["text"]})
    if response_format == "text":
        return PlainTextResponse(result["text"] + "\n")
    render = formats.srt if response_format == "srt" else formats.vtt
    return PlainTextResponse(render(result["segments"]))


# `uvicorn spark_audio.transcribe_app:app` looks `app` up here; it is built on that first access only.
__getattr__ = lazy_app(__name__, "spark_audio.transcribe", lambda: create_app(TranscribeConfig.from_env()))
