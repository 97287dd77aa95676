"""Is a model really ready? `/health` 200 is not enough.

Known failure on Sparks: the container is "Up", /health is green, and the model answers
garbage or not at all. Ready therefore means all three: /health answers 200, the served name
is listed in /v1/models, and a real one-token request is answered (a completion for chat
models, an embedding for embedding models).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Readiness:
    ready: bool
    stage: str      # "health", "models", "inference" or "ready": how far it got
    detail: str


async def check_ready(http: httpx.AsyncClient, base_url: str, served_name: str,
                      capabilities: list[str] | tuple[str, ...]) -> Readiness:
    try:
        health = await http.get(f"{base_url}/health", timeout=3.0)
    except httpx.HTTPError as exc:
        return Readiness(False, "health", f"no answer from {base_url}/health yet ({type(exc).__name__})")
    if health.status_code != 200:
        return Readiness(False, "health", f"/health answered {health.status_code} (still loading)")
    try:
        listed = [m.get("id") for m in (await http.get(f"{base_url}/v1/models", timeout=5.0)).json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return Readiness(False, "models", f"/v1/models did not answer a model list ({exc})")
    if served_name not in listed:
        return Readiness(False, "models", f"/v1/models lists {listed}, not {served_name!r}")
    return await _one_token(http, base_url, served_name, capabilities)


async def _one_token(http: httpx.AsyncClient, base_url: str, served_name: str,
                     capabilities: list[str] | tuple[str, ...]) -> Readiness:
    if "chat" in capabilities or "completions" in capabilities:
        path, body = "/v1/completions", {"model": served_name, "prompt": "Hello", "max_tokens": 1}
    elif "embeddings" in capabilities:
        path, body = "/v1/embeddings", {"model": served_name, "input": "ready?"}
    else:  # audio models have no cheap text request; listed + healthy is what can be checked
        return Readiness(True, "ready", "listed in /v1/models (no one-token check for this kind)")
    try:
        r = await http.post(f"{base_url}{path}", json=body, timeout=60.0)
    except httpx.HTTPError as exc:
        return Readiness(False, "inference", f"{path} failed: {type(exc).__name__}: {exc}")
    if r.status_code != 200:
        return Readiness(False, "inference", f"{path} answered {r.status_code}: {r.text[:200]}")
    try:
        payload = r.json()
        answered = bool(payload["choices"]) if "choices" in payload else bool(payload["data"][0]["embedding"])
    except (ValueError, KeyError, IndexError, TypeError):
        answered = False
    if not answered:
        return Readiness(False, "inference", f"{path} answered without a result: {r.text[:200]}")
    return Readiness(True, "ready", f"answered a one-token request on {path}")
