"""The OpenAI request and response shapes, walked: which strings get redacted, which restored.

Request (redacted, every text the model would read): chat `messages[].content` (a string, or
the `text` of its parts), `name`, `refusal`, assistant `tool_calls[].function.arguments` (and the
legacy `function_call.arguments`), for every role (system, developer, user, assistant, tool);
completions `prompt` (a string or a list of strings) and `suffix`; the top-level `user`.
A prompt of token ids cannot be checked and is refused, never forwarded unchecked.

Response (restored): every string of the answer; tool-call arguments get the original JSON-
escaped, since they are JSON text and the tag sat inside one of its string literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput
from app.redaction.placeholders import TagTable
from app.redaction.restore import json_string_escape, restore

_MESSAGE_TEXT_KEYS = ("content", "name", "refusal")
_TEXT_PART_TYPES = frozenset({"text", "input_text"})


@dataclass
class Slot:
    """One string of the request: `container[key]`, set back after redaction."""

    container: dict | list
    key: str | int

    @property
    def text(self) -> str:
        return self.container[self.key]

    def set(self, value: str) -> None:
        self.container[self.key] = value


def chat_slots(payload: dict[str, Any]) -> list[Slot]:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise InvalidInput("`messages` must be a list of messages.", field="messages")
    slots: list[Slot] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        for key in _MESSAGE_TEXT_KEYS:
            if isinstance(message.get(key), str):
                slots.append(Slot(message, key))
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
                    slots.append(Slot(part, "text"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                slots.append(Slot(function, "arguments"))
        legacy = message.get("function_call")
        if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
            slots.append(Slot(legacy, "arguments"))
    _top_level(payload, ("user",), slots)
    return slots


def completion_slots(payload: dict[str, Any]) -> list[Slot]:
    prompt = payload.get("prompt")
    slots: list[Slot] = []
    if isinstance(prompt, str):
        slots.append(Slot(payload, "prompt"))
    elif isinstance(prompt, list):
        for i, item in enumerate(prompt):
            if not isinstance(item, str):
                raise InvalidInput("`prompt` must be a string or a list of strings here: a prompt of token ids "
                                   "cannot be checked for personal data, so it is not forwarded.", field="prompt")
            slots.append(Slot(prompt, i))
    elif prompt is not None:
        raise InvalidInput("`prompt` must be a string or a list of strings.", field="prompt")
    _top_level(payload, ("suffix", "user"), slots)
    return slots


def _top_level(payload: dict[str, Any], keys: tuple[str, ...], slots: list[Slot]) -> None:
    for key in keys:
        if isinstance(payload.get(key), str):
            slots.append(Slot(payload, key))


def conversation_seed(payload: dict[str, Any]) -> str:
    """What identifies a conversation that names none: its system prompt(s) and first user
    message (chat), or its first prompt (completions). Read before redaction."""
    if isinstance(payload.get("messages"), list):
        system, first_user = [], None
        for message in payload["messages"]:
            if not isinstance(message, dict):
                continue
            if message.get("role") in ("system", "developer"):
                system.append(_message_text(message))
            elif message.get("role") == "user" and first_user is None:
                first_user = _message_text(message)
        return "\0".join(system) + "\0\0" + (first_user or "")
    prompt = payload.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return "prompt\0" + (prompt if isinstance(prompt, str) else "")


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def restore_response(body: Any, table: TagTable) -> Any:
    """A non-streamed answer (or an error body) with every issued tag back to its original.
    `arguments` (function and tool calls: JSON text) get the original JSON-escaped."""
    if isinstance(body, dict):
        return {key: restore(value, table, json_string_escape) if key == "arguments" and isinstance(value, str)
                else restore_response(value, table) for key, value in body.items()}
    if isinstance(body, list):
        return [restore_response(item, table) for item in body]
    if isinstance(body, str):
        return restore(body, table)
    return body
