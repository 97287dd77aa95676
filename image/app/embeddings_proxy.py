"""The OpenAI-compatible embeddings gateway: `POST /v1/embeddings`.

Validated at the boundary (empty input, too many or too long inputs, `encoding_format`,
`dimensions`: OpenAI-shaped 400s from spark-control), routed by `model` through
`app/routing.py` to whatever really serves it (a spark_embed container or vLLM with
`--runner pooling`), then relayed as bytes: the body is re-serialised only when an alias must
become the served name, and the answer (floats or base64, however large) is passed through
unparsed. Upstream errors keep their status and words and gain `source: "upstream"`; an
upstream that does not answer is a 502 naming it (llm_proxy's relay, shared).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app import llm_proxy
from app.openai_errors import openai_error_response

PATH = "/v1/embeddings"
ENCODING_FORMATS = ("float", "base64")
# The gateway's own limits, whatever model is behind it. OpenAI takes at most 2048 inputs per
# request; one input may not be longer than any catalog embedder's context (Qwen3-Embedding:
# 32K tokens) could hold, at a generous 8 characters per token. The model still refuses what
# exceeds its own context, and the body as a whole is capped by PROXY_MAX_BODY_BYTES (413).
MAX_ITEMS = 2048
MAX_INPUT_CHARS = 262_144


class BadEmbeddingsRequest(ValueError):
    def __init__(self, message: str, param: str = "input", code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def validate(payload: dict[str, Any], *, max_items: int, max_chars: int) -> None:
    """Raise BadEmbeddingsRequest for what no model would accept. `input`: a string, a list of
    strings, a list of token ids, or a list of lists of token ids (OpenAI's four shapes)."""
    value = payload.get("input")
    if value is None:
        raise BadEmbeddingsRequest("`input` is required: a string, a list of strings, or token ids.",
                                   code="missing_input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadEmbeddingsRequest(f"`input` must be a string, a list of strings, a list of token ids or a list "
                                   f"of lists of token ids, not {type(value).__name__}.")
    if not items:
        raise BadEmbeddingsRequest("`input` is empty: send at least one non-empty string.", code="empty_input")
    if all(_whole_number(item) for item in items):  # one input given as token ids
        _check_length(0, len(items), 1, max_chars, "token ids")
    elif len(items) > max_items:
        raise BadEmbeddingsRequest(f"`input` has {len(items)} items; at most {max_items} are accepted per "
                                   "request. Split it into several requests.", code="too_many_inputs")
    elif all(isinstance(item, str) for item in items):
        for i, text in enumerate(items):
            _check_length(i, len(text), len(items), max_chars, "characters")
    elif all(isinstance(item, list) and all(_whole_number(t) for t in item) for item in items):
        for i, ids in enumerate(items):
            _check_length(i, len(ids), len(items), max_chars, "token ids")
    else:
        raise BadEmbeddingsRequest("`input` must be all strings, or all token ids (whole numbers >= 0), or all "
                                   "lists of token ids; it mixes kinds or holds something else.")
    fmt = payload.get("encoding_format")
    if fmt is not None and fmt not in ENCODING_FORMATS:
        raise BadEmbeddingsRequest(f"`encoding_format` must be \"float\" or \"base64\", not {json.dumps(fmt)}.",
                                   param="encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not _whole_number(dimensions) or dimensions < 1):
        raise BadEmbeddingsRequest(f"`dimensions` must be a whole number >= 1, not {json.dumps(dimensions)}.",
                                   param="dimensions")


def _check_length(i: int, length: int, n: int, max_chars: int, unit: str) -> None:
    where = "`input`" if n == 1 else f"`input[{i}]`"
    if length == 0:
        raise BadEmbeddingsRequest(f"{where} is empty: every input must have at least one character.",
                                   code="empty_input")
    if length > max_chars:
        raise BadEmbeddingsRequest(f"{where} has {length} {unit}; at most {max_chars} are accepted per input.",
                                   code="input_too_long")


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check(payload: dict[str, Any]) -> JSONResponse | None:
    try:
        validate(payload, max_items=MAX_ITEMS, max_chars=MAX_INPUT_CHARS)
    except BadEmbeddingsRequest as exc:
        return openai_error_response(400, exc.message, param=exc.param, code=exc.code)
    return None


async def embeddings(request: Request) -> Response:
    return await llm_proxy.relay(request, PATH, "embeddings", check_payload=_check, allow_stream=False)


def build_router() -> APIRouter:
    router = APIRouter(tags=["openai"])
    router.add_api_route(PATH, embeddings, methods=["POST"],
                         summary="OpenAI embeddings (float or base64, `dimensions`), routed to the node serving "
                                 "the model")
    return router
