"""A streamed answer (server-sent events) restored as it passes, one event at a time.

Bytes from the upstream are cut into events at the blank line; each `data:` JSON chunk is
rewritten and sent on at once. The text that arrives in pieces has one TextRestorer each:
per choice, its `content` / `reasoning_content` / `reasoning` / `refusal` / `text`, and per
tool call (choice, tool index) its `function.arguments`. Each holds back only what could still
be the start of an issued tag, so a chunk may go out with a shorter text (even "") and the held
part follows in the next one. When a choice finishes (`finish_reason`), its held tails are put
into that chunk; whatever is still held when the stream ends goes out in one extra chunk before
`[DONE]`. Other strings of a chunk (a tool's name, an error message) arrive whole and are
restored in place.
"""

from __future__ import annotations

import json
from typing import Any

from app.redaction.payload import restore_response
from app.redaction.placeholders import TagTable
from app.redaction.restore import TextRestorer, json_string_escape

_DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")


class SSERestorer:
    def __init__(self, table: TagTable) -> None:
        self.table = table
        self._buf = b""
        # (choice index, field) or (choice index, "tool", tool index) -> its restorer
        self._texts: dict[tuple, TextRestorer] = {}
        self._template: dict[str, Any] | None = None   # id/object/model of the last chunk, for the tail chunk

    def feed(self, data: bytes) -> bytes:
        """Bytes from the upstream -> bytes for the client (complete events only)."""
        buf = self._buf + data if self._buf else data
        out = []
        while True:
            end, size = _event_end(buf)
            if end < 0:
                break
            out.append(self._event(buf[:end]))
            buf = buf[end + size:]
        self._buf = buf
        return b"".join(out)

    def finish(self) -> bytes:
        """The upstream ended: an unterminated last event and any held text."""
        out = self._event(self._buf) if self._buf.strip() else b""
        self._buf = b""
        return out + self._tail_event()

    def _event(self, raw: bytes) -> bytes:
        lines = raw.decode("utf-8", "replace").splitlines()
        data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
        if not data:
            return raw + b"\n\n"   # a comment or keep-alive: as it was
        # `event:`/`id:` lines (OpenAI sends none; others may) go out as they came, before the data.
        other = "".join(line + "\n" for line in lines if not line.startswith("data:")).encode()
        if "\n".join(data).strip() == "[DONE]":
            return self._tail_event() + other + b"data: [DONE]\n\n"
        try:
            chunk = json.loads("\n".join(data))
        except ValueError:
            return raw + b"\n\n"
        if isinstance(chunk, dict) and isinstance(chunk.get("choices"), list):
            chunk = self._chunk(chunk)
        else:
            chunk = restore_response(chunk, self.table)
        return other + _encode(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        self._template = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
        restored_choices = []
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                restored_choices.append(choice)
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            streamed = {}
            if isinstance(delta, dict):
                streamed["delta"] = self._delta(index, delta)
            if isinstance(choice.get("text"), str):
                streamed["text"] = self._text((index, "text")).feed(choice["text"])
            rest = restore_response({k: v for k, v in choice.items() if k not in streamed}, self.table)
            choice = {**rest, **streamed}
            if choice.get("finish_reason") is not None:
                self._flush_choice(index, choice)
            restored_choices.append(choice)
        rest = restore_response({k: v for k, v in chunk.items() if k != "choices"}, self.table)
        return {**rest, "choices": restored_choices}

    def _delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in delta.items():
            if key in _DELTA_TEXT_KEYS and isinstance(value, str):
                out[key] = self._text((index, key)).feed(value)
            elif key == "tool_calls" and isinstance(value, list):
                out[key] = [self._tool_call(index, call) for call in value]
            else:
                out[key] = restore_response(value, self.table)
        return out

    def _tool_call(self, index: int, call: Any) -> Any:
        if not isinstance(call, dict):
            return call
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        restored = restore_response({k: v for k, v in call.items() if k != "function"}, self.table)
        if isinstance(function, dict):
            restored["function"] = restore_response({k: v for k, v in function.items() if k != "arguments"},
                                                    self.table)
            if isinstance(arguments, str):
                restorer = self._text((index, "tool", call.get("index", 0)), json_string_escape)
                restored["function"]["arguments"] = restorer.feed(arguments)
        return restored

    def _text(self, key: tuple, escape=None) -> TextRestorer:
        restorer = self._texts.get(key)
        if restorer is None:
            restorer = self._texts[key] = TextRestorer(self.table, escape)
        return restorer

    def _flush_choice(self, index: int, choice: dict[str, Any]) -> bool:
        """Put the choice's held tails into `choice`; True when there was any."""
        flushed = False
        for key, restorer in self._texts.items():
            if key[0] != index or not restorer.pending:
                continue
            tail = restorer.flush()
            flushed = True
            if key[1] == "text":
                choice["text"] = choice.get("text", "") + tail
                continue
            delta = choice.setdefault("delta", {})
            if key[1] == "tool":
                calls = delta.setdefault("tool_calls", [])
                call = next((c for c in calls if isinstance(c, dict) and c.get("index", 0) == key[2]), None)
                if call is None:
                    calls.append({"index": key[2], "function": {"arguments": tail}})
                else:
                    function = call.setdefault("function", {})
                    function["arguments"] = function.get("arguments", "") + tail
            else:
                delta[key[1]] = (delta.get(key[1]) or "") + tail
        return flushed

    def _tail_event(self) -> bytes:
        choices = []
        for index in sorted({key[0] for key, restorer in self._texts.items() if restorer.pending}):
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            self._flush_choice(index, choice)
            choices.append(choice)
        if not choices:
            return b""
        return _encode({**(self._template or {}), "choices": choices})


def _event_end(buf: bytes) -> tuple[int, int]:
    found = [(at, len(end)) for end in _EVENT_ENDS if (at := buf.find(end)) >= 0]
    return min(found) if found else (-1, 0)


def _encode(chunk: Any) -> bytes:
    return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
