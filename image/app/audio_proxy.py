"""The OpenAI-compatible audio gateway: `POST /v1/audio/transcriptions`, with speakers.

One multipart request from an app becomes, concurrently, a transcription request (a Whisper
model served by vLLM through the models lifecycle when `model` names a running one, else a
running "transcription" service such as faster-whisper/speaches) and, only when speakers are
wanted (`response_format=diarized_json`, or `diarize=true` with another format), a diarization
request to a running "diarization" service. The transcription service is always asked for
verbose JSON with word and segment times; the words (or, from vLLM, the segments) are merged
with the speaker turns by app/audio_merge.py and rendered by app/audio_formats.py in the
format asked for, or as SSE events with `stream=true`.

Refused before anything is sent: a file over AUDIO_MAX_BYTES (413), something that is not
audio by its first bytes (400), bad fields (400). A needed service that is not running: 503
naming what to start. A service that fails: 502 naming it (its 4xx about the request, e.g. an
unknown language, keep their status). Errors are OpenAI-shaped. A Whisper replica (or a service
of the kind) that refuses the connection hands the request to the next one (app/upstream_retry.py).

The dashboard's Audio panel posts the same form to `/api/dashboard/audio/transcriptions`: the
same handler, guarded like the rest of /api (same origin only) rather than by PROXY_API_KEYS,
so the page works with keys set without ever holding one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Request
from prometheus_client import Counter
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app import llm_proxy, routing
from app.audio_formats import (FORMATS, Transcript, UnusableTranscript, render, speaker_cues, speaker_labels,
                               stream_events)
from app.audio_merge import _merge_words_with_speakers, words_from_segments
from app.errors import (InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable, SparkControlError,
                        UpstreamFailed, error_response)
from app.swap import State
from app.upstream_retry import CONNECT_FAILURES, first_that_connects, tried

PATH = "/v1/audio/transcriptions"
DIARIZATION_PATH = "/v1/audio/diarization"
ACCEPTED_FORMATS = "flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm"
# Room in the request beside the file: form fields and up to 4 known_speaker_references[] data URLs.
_FORM_OVERHEAD_BYTES = 10 * 1024 * 1024
# Transcribing an hour of audio takes a while; connecting to a service that is up does not.
_TIMEOUT = httpx.Timeout(600.0, connect=3.0)
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CLIENT_ERRORS = (400, 413, 415, 422)  # a service's refusal of the request itself keeps its status


# --------------------------------------------------------------------------- the request

def sniff_audio(head: bytes) -> str | None:
    """The container format by its magic bytes, or None when it is not one of the accepted ones."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"  # an ID3 tag, or an MPEG audio frame sync (11 bits set)
    return None


@dataclass
class AudioRequest:
    audio: bytes
    filename: str
    content_type: str
    model: str
    response_format: str
    granularities: tuple[str, ...]
    stream: bool
    diarize: bool
    language: str | None
    prompt: str | None
    temperature: float | None
    known_speaker_names: tuple[str, ...]
    known_speaker_references: tuple[str, ...]
    num_speakers: int | None = None


def _list_field(form, name: str) -> list[str]:
    """List fields arrive as `name[]` (the openai SDK) or repeated `name`."""
    return [str(v) for v in form.getlist(f"{name}[]") + form.getlist(name)]


def _text_field(form, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value)


def _bool_field(form, name: str) -> bool:
    value = (_text_field(form, name) or "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidInput(f"`{name}` must be true or false, not {value!r}.", field=name)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit (declared or counted)."""
    allowed = limit + _FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > allowed:
        raise _too_large(limit, f"The request is {int(declared)} bytes, over the {allowed} accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > allowed:
            raise _too_large(limit, f"The request is over the {allowed} bytes accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what}: the audio file may be at most {limit} bytes (AUDIO_MAX_BYTES), the form "
                           f"fields beside it {_FORM_OVERHEAD_BYTES} bytes. Split the recording or compress it "
                           "(e.g. to mp3 or ogg).", field="file", code="file_too_large")


async def parse_request(request: Request, limit: int) -> AudioRequest:
    """Read and check the multipart form (413, 400); nothing has been sent anywhere yet."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidInput("Send the audio as multipart/form-data with a `file` part (as the openai SDK does).",
                         field="file")
    body = await _read_body(request, limit)

    async def replay() -> dict[str, Any]:  # the form parser reads the body already read (and counted)
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=64,
                                                         max_part_size=_FORM_OVERHEAD_BYTES)
    except MultiPartException as exc:
        raise InvalidInput(f"The multipart form could not be read: {exc.message}.") from None
    try:
        return await _fields(form, limit)
    finally:
        await form.close()


async def _fields(form, limit: int) -> AudioRequest:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("`file` is required: the audio file as a multipart file part.", field="file")
    audio = await upload.read()
    if len(audio) > limit:
        raise _too_large(limit, f"The audio file is {len(audio)} bytes")
    if sniff_audio(audio[:16]) is None:
        raise InvalidInput(f"`file` ({upload.filename or 'unnamed'}) is not audio in an accepted format: its first "
                              f"bytes match none of {ACCEPTED_FORMATS}.", field="file",
                         code="invalid_audio_format")
    model = (_text_field(form, "model") or "").strip()
    if not model:
        raise InvalidInput("`model` is required: `whisper-1` (any transcription service), or a running audio "
                              "model from GET /v1/models.", field="model")
    fmt = (_text_field(form, "response_format") or "json").strip()
    if fmt not in FORMATS:
        raise InvalidInput(f"`response_format` must be one of {', '.join(FORMATS)}, not {fmt!r}.",
                         field="response_format")
    granularities = tuple(dict.fromkeys(v.strip() for v in _list_field(form, "timestamp_granularities")))
    wrong = [g for g in granularities if g not in ("word", "segment")]
    if wrong:
        raise InvalidInput(f"`timestamp_granularities[]` takes `word` and/or `segment`, not {wrong[0]!r}.",
                         field="timestamp_granularities")
    temperature = _text_field(form, "temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise InvalidInput(f"`temperature` must be a number from 0 to 1, not {temperature!r}.",
                             field="temperature")
    names = _list_field(form, "known_speaker_names")
    references = _list_field(form, "known_speaker_references")
    if len(names) != len(references) or len(names) > 4:
        raise InvalidInput("`known_speaker_names[]` and `known_speaker_references[]` go in pairs, at most 4: "
                              f"got {len(names)} names and {len(references)} references.",
                         field="known_speaker_names")
    num_speakers = (_text_field(form, "num_speakers") or "").strip()
    if num_speakers and not (num_speakers.isdigit() and 1 <= int(num_speakers) <= 32):
        raise InvalidInput(f"`num_speakers` must be a whole number from 1 to 32 (or left out to have it "
                              f"estimated), not {num_speakers!r}.", field="num_speakers")
    return AudioRequest(
        audio=audio, num_speakers=int(num_speakers) if num_speakers else None, filename=upload.filename or "audio", content_type=upload.content_type or "application/octet-stream",
        model=model, response_format=fmt, granularities=granularities, stream=_bool_field(form, "stream"),
        # `json` has nowhere to put speakers: the opt-in does not call a diarizer for it.
        diarize=fmt == "diarized_json" or (_bool_field(form, "diarize") and fmt != "json"),
        language=(_text_field(form, "language") or "").strip() or None, prompt=_text_field(form, "prompt") or None,
        temperature=float(temperature) if temperature is not None else None,
        known_speaker_names=tuple(names), known_speaker_references=tuple(references))


# --------------------------------------------------------------------------- where it goes

@dataclass(frozen=True)
class Target:
    """Who gets one half of the work."""

    name: str       # in messages: `transcription service `whisper` on spark1`, `model `whisper-large-v3-turbo``
    metric: str     # the metrics' model label (a bounded set: catalog and service names)
    base_url: str
    model: str      # the `model` to send
    words: bool     # whether it gives word times (vLLM's Whisper gives segments only)
    service: bool = False  # a side service (its cached health is dropped when it refuses a connect)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.base_url})"


def _audio_deployments(lifecycle, model: str) -> list:
    """Every deployment (replica) of an audio model that `model` names (name, served name, alias)."""
    wanted = model.lower()
    return [d for d in lifecycle.deployments.values()
            if "audio" in d.capabilities and wanted in (n.lower() for n in routing.names_of(lifecycle, d))]


def _model_targets(upstreams: list[routing.Upstream]) -> list[Target]:
    """Every ready replica, the one whose turn it is first (the others take a refused connect)."""
    return [Target(name=f"model `{u.model}`", metric=u.model, base_url=u.base_url, model=u.served_name, words=False)
            for u in upstreams]


def _catalog_audio_model(lifecycle, model: str) -> str | None:
    """The catalog audio model to suggest launching: the one `model` names, else the first one."""
    try:
        entry = lifecycle.catalog.get(model)
        if "audio" in entry.capabilities:
            return entry.name
    except NotFound:
        pass
    return next((entry.name for entry in lifecycle.catalog if "audio" in entry.capabilities), None)


async def _service_endpoints(request: Request, kind: str) -> list:
    registry = getattr(request.app.state, "services", None)
    if registry is None:
        return []
    try:
        return list(await registry.endpoints(kind))
    except SparkControlError as exc:  # e.g. the node that would run it is unreachable
        raise ServiceUnavailable(f"The running {kind} services could not be listed: {exc.message}",
                                 code="service_unavailable") from None


def _service_names(request: Request, kind: str) -> list[str]:
    """The catalog's services of `kind`, to say what to start (empty if the registry cannot say)."""
    registry = getattr(request.app.state, "services", None)
    try:
        return [entry.name for entry in registry.catalog.entries(kind)]
    except AttributeError:
        return []


def _start_hint(request: Request, kind: str) -> str:
    names = _service_names(request, kind)
    if names:
        return " or ".join(f"POST /api/services/{name}/start" for name in names) + " (or from the dashboard)"
    return "POST /api/services/<name>/start (GET /api/services lists them; docs/AUDIO_API.md)"


def _service_targets(endpoints: list, requested_model: str) -> list[Target]:
    """Every running, healthy service of the kind, in catalog order: the first is asked, the
    others only when it refuses the connection."""
    return [Target(name=f"{e.kind} service `{e.name}` on {e.node}", metric=e.name, base_url=e.base_url,
                   model=getattr(e, "model", None) or requested_model, words=True, service=True) for e in endpoints]


async def transcription_targets(request: Request, model: str) -> list[Target]:
    """The ready replicas of a running audio model that `model` names (vLLM), else the transcription
    services, else an audio model on its way (waited for), else 503."""
    state = request.app.state
    lifecycle = state.lifecycle
    replicas = _audio_deployments(lifecycle, model)
    if any(d.state == State.READY for d in replicas):
        return _model_targets(await routing.resolve(lifecycle, model, capability="audio", wait_s=0))
    endpoints = await _service_endpoints(request, "transcription")
    if endpoints:
        return _service_targets(endpoints, model)
    if any(d.state in (State.STARTING, State.LOADING) for d in replicas):
        # The Whisper model is on its way (a swap): wait for it, as the other gateways do.
        try:
            upstreams = await routing.resolve(lifecycle, model, capability="audio",
                                              wait_s=state.settings.proxy_wait_for_model_s)
        except SparkControlError as exc:
            raise ServiceUnavailable(f"No transcription service is running, and {exc.message}", field="model",
                                     code="service_unavailable") from None
        return _model_targets(upstreams)
    launch = _catalog_audio_model(lifecycle, model)
    or_launch = f", or launch {launch} (POST /api/models/{launch}/launch)" if launch else ""
    raise ServiceUnavailable(f"No transcription service is running (and `{model}` is not a running audio model): "
                             f"start one with {_start_hint(request, 'transcription')}{or_launch}.", field="model",
                             code="service_unavailable")


async def diarization_targets(request: Request, why: str) -> list[Target]:
    endpoints = await _service_endpoints(request, "diarization")
    if not endpoints:
        raise ServiceUnavailable(f"No diarization service is running (needed for {why}): start one with "
                              f"{_start_hint(request, 'diarization')}, or ask for another response_format.",
                         code="service_unavailable")
    return _service_targets(endpoints, "")


# --------------------------------------------------------------------------- calling them

def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or f"HTTP {response.status_code}"
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        for key in ("detail", "message", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return json.dumps(body)[:300]


@dataclass(frozen=True)
class Calls:
    """What posting to the targets needs beside the request: the client, the retries counter,
    and who hears that a service refused a connect (the registry's health cache)."""

    http: httpx.AsyncClient
    retries: Counter
    refused: Callable[[Target], None]


def _calls(state) -> Calls:
    forget = getattr(getattr(state, "services", None), "connect_failed", None)

    def refused(target: Target) -> None:
        if target.service and forget is not None:
            forget(target.base_url)

    return Calls(state.http, state.metrics.retries, refused)


def _unreachable(targets: list[Target]) -> str:
    if len(targets) == 1:
        return targets[0].label
    return f"{' / '.join(dict.fromkeys(t.name for t in targets))} at {tried([t.base_url for t in targets])}"


async def _post(calls: Calls, targets: list[Target], path: str, audio: AudioRequest,
                data: dict[str, Any]) -> tuple[Target, dict[str, Any]]:
    """(the target that answered, its JSON). A refused connect moves on to the next target
    (app/upstream_retry.py); the multipart body is built again from the bytes for each one."""
    async def send(target: Target) -> httpx.Response:
        files = {"file": (audio.filename, audio.audio, audio.content_type)}
        try:
            return await calls.http.post(target.base_url.rstrip("/") + path, data=data, files=files,
                                         timeout=_TIMEOUT)
        except CONNECT_FAILURES:
            raise
        except httpx.HTTPError as exc:  # the request may have reached it: never sent elsewhere
            raise UpstreamFailed(f"The {target.label} did not answer: {type(exc).__name__}.",
                                 code="upstream_unreachable") from None

    try:
        target, response = await first_that_connects(targets, send, retries=calls.retries,
                                                     labels=lambda t: (t.metric, t.base_url),
                                                     on_connect_failure=calls.refused)
    except CONNECT_FAILURES as exc:
        raise UpstreamFailed(f"The {_unreachable(targets)} did not answer: {type(exc).__name__}.",
                             code="upstream_unreachable") from None
    if response.status_code != 200:
        status = response.status_code if response.status_code in _CLIENT_ERRORS else 502
        raise UpstreamFailed(f"The {target.label} answered {response.status_code}: {_upstream_message(response)}",
                             status=status)
    try:
        return target, response.json()
    except ValueError:
        raise UpstreamFailed(f"The {target.label} answered 200 with something that is not JSON: "
                             f"{response.text[:200]!r}.") from None


async def transcribe(calls: Calls, targets: list[Target], audio: AudioRequest) -> Transcript:
    first = targets[0]  # every target is the same model or the same kind of service
    data: dict[str, Any] = {"model": first.model, "response_format": "verbose_json",
                            "timestamp_granularities[]": ["word", "segment"] if first.words else ["segment"]}
    for name in ("language", "prompt", "temperature"):
        if getattr(audio, name) is not None:
            data[name] = str(getattr(audio, name))
    try:
        target, body = await _post(calls, targets, PATH, audio, data)
    except UpstreamFailed as exc:
        if first.words or exc.status != 400:
            raise
        # A vLLM too old for verbose_json refuses it: its plain text is still a transcript (speakers
        # are then shared over it by time, as one segment over the whole audio).
        data["response_format"] = "json"
        del data["timestamp_granularities[]"]
        target, body = await _post(calls, targets, PATH, audio, data)
    try:
        return Transcript.from_response(body)
    except UnusableTranscript as exc:
        raise UpstreamFailed(f"The {target.label} answered with no usable transcript: {exc}.") from None


@dataclass(frozen=True)
class Diarization:
    turns: list[dict[str, Any]]
    duration: float | None


def turns_from_response(body: Any) -> Diarization:
    """Speaker turns from a speaches-style answer `{duration, segments: [{start, end, speaker}]}`."""
    segments = body.get("segments") if isinstance(body, Mapping) else None
    if not isinstance(segments, list):
        raise UnusableTranscript("the answer has no `segments` list")
    turns = []
    for segment in segments:
        if isinstance(segment, Mapping) and all(k in segment for k in ("start", "end", "speaker")):
            turns.append({"start": segment["start"], "end": segment["end"], "speaker": str(segment["speaker"])})
    duration = body.get("duration")
    return Diarization(turns, float(duration) if isinstance(duration, (int, float)) else None)


async def diarize(calls: Calls, targets: list[Target], audio: AudioRequest) -> Diarization:
    data: dict[str, Any] = {"num_speakers": str(audio.num_speakers)} if audio.num_speakers else {}
    if audio.known_speaker_names:
        data["known_speaker_names[]"] = list(audio.known_speaker_names)
        data["known_speaker_references[]"] = list(audio.known_speaker_references)
    target, body = await _post(calls, targets, DIARIZATION_PATH, audio, data)
    try:
        return turns_from_response(body)
    except UnusableTranscript as exc:
        raise UpstreamFailed(f"The {target.label} answered with no usable speaker turns: {exc}.") from None


async def _both(calls: Calls, transcribers: list[Target], diarizers: list[Target] | None,
                audio: AudioRequest) -> tuple[Transcript, Diarization | None]:
    """Both requests at once; the first failure cancels the other."""
    try:
        async with asyncio.TaskGroup() as group:
            text_task = group.create_task(transcribe(calls, transcribers, audio))
            turns_task = group.create_task(diarize(calls, diarizers, audio)) if diarizers else None
    except* SparkControlError as failed:
        raise failed.exceptions[0] from None
    return text_task.result(), turns_task.result() if turns_task else None


# --------------------------------------------------------------------------- the answer

def _answer(audio: AudioRequest, transcript: Transcript, diarization: Diarization | None) -> Response:
    if diarization is None:
        if audio.stream:
            return StreamingResponse(iter(list(stream_events(transcript))), media_type="text/event-stream",
                                     headers=_STREAM_HEADERS)
        body, media_type = render(audio.response_format, transcript, granularities=audio.granularities)
        return Response(body, media_type=media_type)
    if transcript.duration is None:  # a transcriber that gave text only: the diarizer knows how long it is
        transcript.duration = diarization.duration
    if transcript.words:
        words = transcript.words
    else:  # vLLM's Whisper: segments only (or, plain json, no times at all: one segment over the audio)
        words = words_from_segments(transcript.segments or [{"start": 0.0, "end": transcript.duration or 0.0,
                                                              "text": transcript.text}])
    merged = _merge_words_with_speakers(words, diarization.turns)
    labels = speaker_labels(merged, audio.known_speaker_names)
    cues = speaker_cues(merged, labels)
    if audio.stream:
        return StreamingResponse(iter(list(stream_events(transcript, cues))), media_type="text/event-stream",
                                 headers=_STREAM_HEADERS)
    # Per-word speakers for verbose_json's words: only real word times are shown, never estimated ones.
    speakers = [labels[turn.speaker] for turn in merged for _ in range(turn.first, turn.last)] \
        if transcript.words else None
    body, media_type = render(audio.response_format, transcript, granularities=audio.granularities, turn_cues=cues,
                              word_speakers=speakers)
    return Response(body, media_type=media_type)


async def transcriptions(request: Request) -> Response:
    """`POST /v1/audio/transcriptions`: for apps, so the key check of PROXY_API_KEYS comes first."""
    return llm_proxy.check_api_key(request) or await transcribe_request(request)


async def transcribe_request(request: Request) -> Response:
    """One transcription request, whoever is let in: apps with a key (above) or the dashboard's
    same-origin `POST /api/dashboard/audio/transcriptions` (CSRF-guarded, no key in the page)."""
    state = request.app.state
    try:
        audio = await parse_request(request, state.settings.audio_max_bytes)
        transcribers = await transcription_targets(request, audio.model)
        why = "response_format=diarized_json" if audio.response_format == "diarized_json" else "diarize=true"
        diarizers = await diarization_targets(request, why) if audio.diarize else None
    except SparkControlError as exc:
        return error_response(exc)
    route = state.metrics.route(transcribers[0].metric, PATH)
    started = time.perf_counter()
    route.in_flight.inc()
    try:
        transcript, diarization = await _both(_calls(state), transcribers, diarizers, audio)
        response = await asyncio.to_thread(_answer, audio, transcript, diarization)  # a long merge stays off the loop
    except SparkControlError as exc:
        route.error(exc.source).inc()
        response = error_response(exc)
    finally:
        route.in_flight.dec()
    route.requests(str(response.status_code)).inc()
    route.latency.observe(time.perf_counter() - started)
    return response


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"])
    router.add_api_route(PATH, transcriptions, methods=["POST"],
                         summary="OpenAI audio transcriptions (json, text, srt, vtt, verbose_json, diarized_json, "
                                 "stream), with speakers from a diarization service")
    # The dashboard's Audio panel: the same handler, same-origin only (the CSRF guard), no key to send.
    router.add_api_route("/api/dashboard/audio/transcriptions", transcribe_request, methods=["POST"],
                         summary="The dashboard's audio upload: POST /v1/audio/transcriptions without the API key, "
                                 "same-origin only")
    return router
