"""Deep health: a real request through every running model and service, and its answer checked for sense.

`/health` 200 is not enough (a known failure on Sparks: green health, garbage answers), so:

    chat (models with chat, NIMs)  "What is the capital of France? Answer in one word." -> must mention Paris
    embeddings                     three sentences -> equal dimensions (= expected_dimension when the
                                   catalog gives one), finite, non-zero, and the paraphrase closer
                                   than the unrelated sentence
    transcription                  one second of a 440 Hz tone as WAV -> a JSON object with a text string
    diarization                    the same second -> a JSON object with a segments list
    memory per node                MemAvailable from the status probes, a warning under
                                   DEEP_HEALTH_MIN_AVAILABLE_GB

Results (with latencies) are kept: GET /api/health/deep answers the last one; ?refresh=true and
POST /api/health/deep/run run one now; DEEP_HEALTH_INTERVAL_S runs one in the background.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import struct
import time
import wave
from typing import Any

import httpx
from fastapi import APIRouter, Request

from app.health import Target, running_targets
from app.swap import State

log = logging.getLogger(__name__)

GB = 1e9
CHAT_QUESTION = "What is the capital of France? Answer in one word."
CHAT_EXPECTED = "paris"
SENTENCES = ("The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today.")
_REQUEST_TIMEOUT_S = 60.0


@functools.lru_cache(maxsize=4)  # the same second of audio for every check: built once
def tone_wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit WAV of a sine tone, made in memory."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(int(seconds * rate)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def check_chat(payload: Any) -> tuple[bool, str]:
    try:
        answer = payload["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return False, f"not a chat completion: {str(payload)[:200]}"
    shown = " ".join(answer.split())[:120]
    if CHAT_EXPECTED in answer.lower():
        return True, f"answered {shown!r}"
    return False, f"answer without sense to {CHAT_QUESTION!r}: {shown!r} (expected it to mention Paris)"


def check_embeddings(payload: Any, expected_dimension: int | None) -> tuple[bool, str]:
    try:
        vectors = [item["embedding"] for item in sorted(payload["data"], key=lambda d: d["index"])]
        vectors = [[float(x) for x in v] for v in vectors]
    except (KeyError, TypeError, ValueError):
        return False, f"not an embeddings response: {str(payload)[:200]}"
    if len(vectors) != len(SENTENCES):
        return False, f"{len(vectors)} embeddings for {len(SENTENCES)} inputs"
    dims = sorted({len(v) for v in vectors})
    if len(dims) != 1:
        return False, f"embeddings of different dimensions {dims}"
    if expected_dimension is not None and dims[0] != expected_dimension:
        return False, f"dimension {dims[0]}, expected {expected_dimension}"
    norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
    if not all(math.isfinite(n) and n > 0 for n in norms):
        return False, "an embedding is zero or not finite"

    def cosine(a: int, b: int) -> float:
        return sum(x * y for x, y in zip(vectors[a], vectors[b])) / (norms[a] * norms[b])

    similar, unrelated = cosine(0, 1), cosine(0, 2)
    if similar <= unrelated:
        return False, (f"no sense: a paraphrase is not closer than an unrelated sentence "
                       f"(cosine {similar:.3f} vs {unrelated:.3f})")
    return True, f"dimension {dims[0]}, paraphrase cosine {similar:.3f} > unrelated {unrelated:.3f}"


def check_transcription(payload: Any) -> tuple[bool, str]:
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return True, f"transcribed 1 s of audio: {payload['text'][:80]!r}"
    return False, f"not a transcription (no text): {str(payload)[:200]}"


def check_diarization(payload: Any) -> tuple[bool, str]:
    if isinstance(payload, dict) and isinstance(payload.get("segments"), list):
        return True, f"{len(payload['segments'])} speaker segment(s) in 1 s of audio"
    return False, f"not a diarization (no segments list): {str(payload)[:200]}"


def check_kind(target: Target) -> str | None:
    """Which real request a target gets; None: only its health path can be checked."""
    caps = target.capabilities
    if "chat" in caps or target.kind == "nim":
        return "chat"
    if "embeddings" in caps:
        return "embeddings"
    if "transcription" in caps or "audio" in caps:
        return "transcription"
    if "diarization" in caps:
        return "diarization"
    return None


async def deep_check(http: httpx.AsyncClient, target: Target) -> dict[str, Any]:
    check = check_kind(target)
    result: dict[str, Any] = {"type": target.type, "name": target.name, "kind": target.kind, "node": target.node,
                              "url": target.base_url, "check": check or "health", "ok": False, "skipped": False,
                              "latency_ms": None, "detail": ""}
    if target.type == "model" and target.state != State.READY.value:
        result.update(skipped=True, ok=True, detail=f"not checked: the model is {target.state}")
        return result
    started = time.monotonic()
    try:
        if check is None:
            response = await http.get(target.base_url + target.health_path, timeout=10.0)
            ok, detail = response.status_code == 200, f"{target.health_path} answered {response.status_code}"
        else:
            response = await _request(http, target, check)
            if response.status_code != 200:
                ok, detail = False, f"answered {response.status_code}: {response.text[:200]}"
            else:
                ok, detail = _judge(check, response, target)
    except httpx.HTTPError as exc:
        ok, detail = False, f"request failed: {type(exc).__name__}: {exc}"
    result.update(ok=ok, detail=detail, latency_ms=round((time.monotonic() - started) * 1000, 2))
    return result


async def _request(http: httpx.AsyncClient, target: Target, check: str) -> httpx.Response:
    url = target.base_url
    if check == "chat":
        body = {"model": target.model, "messages": [{"role": "user", "content": CHAT_QUESTION}],
                "max_tokens": 24, "temperature": 0}
        return await http.post(f"{url}/v1/chat/completions", json=body, timeout=_REQUEST_TIMEOUT_S)
    if check == "embeddings":
        return await http.post(f"{url}/v1/embeddings", json={"model": target.model, "input": list(SENTENCES)},
                               timeout=_REQUEST_TIMEOUT_S)
    path = "/v1/audio/transcriptions" if check == "transcription" else "/v1/audio/diarization"
    files = {"file": ("deep-health.wav", tone_wav(), "audio/wav")}
    return await http.post(f"{url}{path}", files=files, data={"model": target.model, "response_format": "json"},
                           timeout=_REQUEST_TIMEOUT_S)


def _judge(check: str, response: httpx.Response, target: Target) -> tuple[bool, str]:
    try:
        payload = response.json()
    except ValueError:
        return False, f"answered 200 but not JSON: {response.text[:200]!r}"
    if check == "chat":
        return check_chat(payload)
    if check == "embeddings":
        return check_embeddings(payload, target.expected_dimension)
    if check == "transcription":
        return check_transcription(payload)
    return check_diarization(payload)


def memory_headroom(latest: dict[str, dict[str, Any]], nodes: list[str], min_gb: float) -> list[dict[str, Any]]:
    """Per node: MemAvailable from the last status probe, `ok` or `warning` under min_gb (or `unknown`)."""
    out = []
    for node in nodes:
        status = latest.get(node) or {}
        memory = status.get("memory") or {}
        available = memory.get("available_bytes")
        if not status.get("reachable") or available is None:
            out.append({"node": node, "status": "unknown", "available_gb": None, "min_available_gb": min_gb,
                        "detail": status.get("reason") or "no memory figures from the node yet"})
            continue
        gb = round(available / GB, 2)
        low = gb < min_gb
        out.append({"node": node, "status": "warning" if low else "ok", "available_gb": gb, "min_available_gb": min_gb,
                    "detail": (f"only {gb} GB available (MemAvailable), under {min_gb:g} GB: the node may wedge "
                               "or a launch may fail; stop something") if low else f"{gb} GB available"})
    return out


class DeepHealth:
    """Runs deep checks on demand and on a schedule; keeps the last result."""

    def __init__(self, state, *, interval_s: float, min_available_gb: float) -> None:
        self.state = state
        self.interval_s = interval_s
        self.min_available_gb = min_available_gb
        self.last: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    async def run(self) -> dict[str, Any]:
        """One round; concurrent callers share the round that is already running."""
        if self._lock.locked():
            async with self._lock:
                return self.last or {}
        async with self._lock:
            started = time.monotonic()
            targets = await running_targets(self.state)
            checks = list(await asyncio.gather(*(deep_check(self.state.http, t) for t in targets)))
            memory = memory_headroom(self.state.status.latest, list(self.state.pool.nodes), self.min_available_gb)
            unhealthy = [c for c in checks if not c["ok"]]
            warnings = [m for m in memory if m["status"] == "warning"]
            status = "unhealthy" if unhealthy else "warning" if warnings else "healthy"
            self.last = {"status": status, "ok": not unhealthy, "checked_at": time.time(),
                         "duration_ms": round((time.monotonic() - started) * 1000, 2), "checks": checks,
                         "memory": memory, "unhealthy": [f"{c['type']} {c['name']}: {c['detail']}" for c in unhealthy]}
            if unhealthy:
                log.warning("deep health: %s", "; ".join(self.last["unhealthy"]))
            return self.last

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run()
            except Exception:  # noqa: BLE001 - a failed round must not end the schedule
                log.exception("deep health round failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def build_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/api/health/deep",
                summary="Deep health: the last result (refresh=true runs one now; runs one if none yet)")
    async def get_deep(request: Request, refresh: bool = False) -> dict[str, Any]:
        deep: DeepHealth = request.app.state.deep_health
        if refresh or deep.last is None:
            return await deep.run()
        return deep.last

    @router.post("/api/health/deep/run", summary="Run deep health now: a real request through everything running")
    async def run_deep(request: Request) -> dict[str, Any]:
        return await request.app.state.deep_health.run()

    return router
