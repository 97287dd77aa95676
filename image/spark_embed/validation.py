"""The request body of `POST /v1/embeddings` -> an EmbeddingRequest, or an ApiError (OpenAI-shaped).

Pure: no torch, no I/O, so the whole boundary is tested without a model. `input` may be a
string, a list of strings, a list of token ids or a list of lists of token ids (OpenAI's four
shapes); token ids are checked for shape here and decoded by the encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENCODING_FORMATS = ("float", "base64")


class ApiError(Exception):
    """An error answer: `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str | None
    texts: list[str] | None             # string input
    token_ids: list[list[int]] | None   # token input (the model's own vocabulary)
    encoding_format: str = "float"
    dimensions: int | None = None

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


def parse_body(raw: bytes, *, max_items: int, max_chars: int) -> EmbeddingRequest:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return parse_request(body, max_items=max_items, max_chars=max_chars)


def parse_request(body: dict[str, Any], *, max_items: int, max_chars: int) -> EmbeddingRequest:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "`model` must be a string.", param="model")
    texts, token_ids = _input(body.get("input", _MISSING), max_items=max_items, max_chars=max_chars)
    return EmbeddingRequest(model=model or None, texts=texts, token_ids=token_ids,
                            encoding_format=encoding_format(body.get("encoding_format")),
                            dimensions=dimensions(body.get("dimensions")))


_MISSING = object()


def _input(value: Any, *, max_items: int, max_chars: int) -> tuple[list[str] | None, list[list[int]] | None]:
    if value is _MISSING or value is None:
        raise ApiError(400, "`input` is required: a string, a list of strings, or token ids.", param="input",
                       code="missing_input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(400, f"`input` must be a string, a list of strings, a list of token ids or a list of "
                            f"lists of token ids, not {type(value).__name__}.", param="input")
    if not value:
        raise ApiError(400, "`input` is empty: send at least one non-empty string.", param="input",
                       code="empty_input")
    if all(_is_token_id(item) for item in value):  # one input given as token ids
        _check_item(0, len(value), 1, max_chars, "token ids")
        return None, [value]
    if len(value) > max_items:
        raise ApiError(400, f"`input` has {len(value)} items; at most {max_items} are accepted per request. "
                            "Split it into several requests.", param="input", code="too_many_inputs")
    if all(isinstance(item, str) for item in value):
        for i, text in enumerate(value):
            _check_item(i, len(text), len(value), max_chars, "characters")
        return value, None
    if all(isinstance(item, list) for item in value):
        for i, ids in enumerate(value):
            if not all(_is_token_id(t) for t in ids):
                raise ApiError(400, f"`input[{i}]` must be a list of token ids (whole numbers >= 0).",
                               param="input")
            _check_item(i, len(ids), len(value), max_chars, "token ids")
        return None, value
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise ApiError(400, "`input` token ids must be whole numbers >= 0.", param="input")
    raise ApiError(400, "`input` mixes kinds: send all strings, or all token ids, or all lists of token ids.",
                   param="input")


def _check_item(i: int, length: int, n: int, max_chars: int, unit: str) -> None:
    where = "`input`" if n == 1 else f"`input[{i}]`"
    if length == 0:
        raise ApiError(400, f"{where} is empty: every input must have at least one character.", param="input",
                       code="empty_input")
    if length > max_chars:
        raise ApiError(400, f"{where} has {length} {unit}; at most {max_chars} are accepted per input.",
                       param="input", code="input_too_long")


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def encoding_format(value: Any) -> str:
    if value is None:
        return "float"
    if value not in ENCODING_FORMATS:
        raise ApiError(400, f"`encoding_format` must be \"float\" or \"base64\", not {json.dumps(value)}.",
                       param="encoding_format")
    return value


def dimensions(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"`dimensions` must be a whole number >= 1, not {json.dumps(value)}.",
                       param="dimensions")
    return value
