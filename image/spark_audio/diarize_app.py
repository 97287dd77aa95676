"""The diarization service's HTTP API: `POST /v1/audio/diarization`, `GET /health`.

    POST /v1/audio/diarization   multipart: file, num_speakers (optional, 1-32)
    -> {"duration": 36.6, "segments": [{"start": 0.5, "end": 4.57, "speaker": "speaker_0"}, ...]}

`uvicorn spark_audio.diarize_app:app` builds the app from the environment (settings.py) on
first access; the voice encoder is loaded in the lifespan, before the port accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from spark_audio import __version__
from spark_audio.audio_io import AudioError, decode
from spark_audio.http_common import ApiError, EngineThread, install_error_handler, lazy_app, read_upload
from spark_audio.settings import DiarizeConfig

log = logging.getLogger("spark_audio.diarize")
MAX_NUM_SPEAKERS = 32


def create_app(config: DiarizeConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from spark_audio.diarizer import Diarizer

        app.state.worker = EngineThread("diarizer")
        app.state.diarizer = await app.state.worker.run(
            Diarizer, config.weights_path, config.device, config.window_s, config.threshold, config.max_speakers,
            config.torch_threads)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            app.state.worker.close()

    app = FastAPI(title="spark_audio diarization", version=__version__, lifespan=lifespan,
                  description="Speaker turns with resemblyzer embeddings and clustering.")
    app.state.ready = False
    install_error_handler(app)

    @app.post("/v1/audio/diarization", summary="Who spoke when: speaker turns of an audio file")
    async def diarization(request: Request) -> JSONResponse:
        data, form = await read_upload(request, config.max_bytes)
        num_speakers = _num_speakers(str(form.get("num_speakers") or "").strip())
        try:
            audio = await asyncio.to_thread(decode, data)
        except AudioError as exc:
            raise ApiError(400, str(exc), param="file", code="invalid_audio") from None
        started = time.monotonic()
        result = await request.app.state.worker.run(request.app.state.diarizer.diarize, audio, num_speakers)
        log.info("diarized %.1f s of audio in %.2f s: %d turns, %d speakers", result["duration"],
                 time.monotonic() - started, len(result["segments"]),
                 len({s["speaker"] for s in result["segments"]}))
        return JSONResponse(result)

    @app.get("/health", summary="200 once the voice encoder is loaded, 503 before")
    async def health(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        diarizer = request.app.state.diarizer
        return JSONResponse({"status": "ok", "engine": "resemblyzer", "device": diarizer.device,
                             "load_seconds": round(diarizer.load_seconds, 3)})

    return app


def _num_speakers(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_NUM_SPEAKERS:
        raise ApiError(400, f"`num_speakers` must be a whole number from 1 to {MAX_NUM_SPEAKERS}, or left out "
                            "to have it estimated.", param="num_speakers")
    return int(text)


# `uvicorn spark_audio.diarize_app:app` looks `app` up here; it is built on that first access only.
__getattr__ = lazy_app(__name__, "spark_audio.diarize", lambda: create_app(DiarizeConfig.from_env()))
