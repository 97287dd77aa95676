"""Found values -> tags: the spans of every text replaced by the conversation's placeholders.

The detector finds (app/redaction/detect.py); this assigns. Every distinct (entity, normalized
value) of the whole request gets its tag in one store transaction, so a value mentioned in the
system prompt and again in a tool result is one tag, and the same tag as in earlier turns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.redaction.placeholders import TagTable, format_tag, normalize
from app.redaction.store import Item, RedactionStore


class SpanLike(Protocol):
    start: int
    end: int
    entity: str
    text: str


@dataclass
class Pseudonymized:
    texts: list[str]
    # The tags this request was issued (its values, old or new in the conversation), for the
    # answer's restore: a tag the caller typed, or one issued to another request of the same
    # conversation, is never filled in with a stored value.
    table: TagTable
    counts: Counter = field(default_factory=Counter)   # entity -> distinct values in this request


def pseudonymize(texts: Sequence[str], spans: Sequence[Sequence[SpanLike]], store: RedactionStore,
                 conversation: str) -> Pseudonymized:
    kept = [_non_overlapping(text_spans) for text_spans in spans]
    items: dict[tuple[str, str], Item] = {}
    for text, text_spans in zip(texts, kept):
        for span in text_spans:
            original = text[span.start:span.end]
            key = (span.entity, normalize(span.entity, original))
            items.setdefault(key, Item(span.entity, key[1], original))
    numbers, table = store.assign(conversation, items.values())
    tag_of = {key: format_tag(entity, number) for key, (entity, number) in zip(items, numbers)}
    out = []
    for text, text_spans in zip(texts, kept):
        pieces, at = [], 0
        for span in text_spans:
            pieces.append(text[at:span.start])
            pieces.append(tag_of[(span.entity, normalize(span.entity, text[span.start:span.end]))])
            at = span.end
        pieces.append(text[at:])
        out.append("".join(pieces))
    return Pseudonymized(out, table.only(numbers), Counter(entity for entity, _ in items))


def _non_overlapping(spans: Sequence[SpanLike]) -> list[_Cut]:
    """By start; spans that overlap become one cut over their union, with the first one's entity
    (dropping the second would leave its end in the clear)."""
    kept: list[_Cut] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= span.start:
            continue
        if kept and span.start < kept[-1].end:
            if span.end > kept[-1].end:
                kept[-1] = _Cut(kept[-1].start, span.end, kept[-1].entity)
            continue
        kept.append(_Cut(span.start, span.end, span.entity))
    return kept


@dataclass(frozen=True)
class _Cut:
    start: int
    end: int
    entity: str
