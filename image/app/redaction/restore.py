"""Tags back to originals: whole texts, and texts that arrive in pieces (a streamed answer).

`restore(text, table)` replaces every issued tag (tolerant spelling, placeholders.TAG) with its
original and leaves everything else alone, unissued tags included.

`TextRestorer` does the same for a text fed piece by piece. It emits everything except the
shortest tail that could still grow into an issued tag: the suffix starting at the earliest
'[' from which the rest is a proper prefix of an issued tag (TagTable.could_begin). Why that
is exact at every split point: a tag match contains exactly one '[' (its first character), so
matches at different '[' never overlap, and a match either ends inside the emitted part or
starts at or after the held '['; a match that could still complete to an issued tag is held;
one that could only become an unissued tag restores to itself either way. The delay is at most
one tag (the grammar is bounded), never the whole answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from app.redaction.placeholders import TAG, TagTable

# Tags inside a tool call's `arguments` (JSON text) sit inside a JSON string literal: the
# original must be escaped the way JSON escapes it, or a quote in a value would break the call.
Escape = Callable[[str], str]


def json_string_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def restore(text: str, table: TagTable, escape: Escape | None = None) -> str:
    if not table or "[" not in text:
        return text

    def substitute(match: re.Match) -> str:
        original = table.lookup(match)
        if original is None:
            return match.group(0)
        return escape(original) if escape is not None else original

    return TAG.sub(substitute, text)


class TextRestorer:
    """One streamed text (a choice's content, one tool call's arguments): feed(), then flush()."""

    __slots__ = ("table", "escape", "pending")

    def __init__(self, table: TagTable, escape: Escape | None = None) -> None:
        self.table = table
        self.escape = escape
        self.pending = ""

    def feed(self, piece: str) -> str:
        text = self.pending + piece if self.pending else piece
        hold = self._held_from(text)
        self.pending = text[hold:]
        return restore(text[:hold], self.table, self.escape)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return restore(text, self.table, self.escape)

    def _held_from(self, text: str) -> int:
        """Index of the last '[' when its suffix could still become an issued tag, else len(text).
        Only the last '[' can qualify: a tag has no '[' after its first character."""
        at = text.rfind("[")
        if at >= 0 and self.table.could_begin(text[at:]):
            return at
        return len(text)
