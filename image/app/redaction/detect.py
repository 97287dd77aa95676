"""The detection interface of the redaction gateway: which spans of which texts are PII.

Structured entities come from validated regexes (structured.py, addresses.py); person names from
spaCy NER, propagated across all the texts of one call (names.py). Overlapping candidates are
resolved here, once, deterministically: overlapping candidates merge into one span labelled by
the longer, then higher-priority, then earlier candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

from .names import NameFinder
from .structured import find_structured


class Span(NamedTuple):
    """A tuple, not a dataclass: a dense 10 KB text has over a hundred spans, and a frozen
    dataclass costs about 1 µs each to build."""

    start: int  # character offsets into the text
    end: int
    entity: str
    text: str  # == text[start:end]


# Highest priority first: a secret or a credential URL that happens to contain an e-mail-like
# "user@host" must stay one SECRET/URL_CREDENTIALS span.
_PRIORITY = (
    "SECRET", "URL_CREDENTIALS", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "MAC_ADDRESS",
    "IP_ADDRESS", "DATE_OF_BIRTH", "PHONE", "ADDRESS", "PERSON",
)
ENTITIES: frozenset[str] = frozenset(_PRIORITY)
_RANK = {name: i for i, name in enumerate(_PRIORITY)}
_START = itemgetter(0)


class DetectionFailed(Exception):
    """Detection could not run (e.g. the NER model is missing): the caller must fail closed."""


class Detector:
    def __init__(self, entities: Iterable[str] | None = None, allowlist: Iterable[str] = (), ner: bool = True) -> None:
        chosen = ENTITIES if entities is None else frozenset(entities)
        unknown = sorted(chosen - ENTITIES)
        if unknown:
            raise ValueError(
                f"unknown redaction entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(ENTITIES))}"
            )
        self.entities = chosen
        self.allowlist = frozenset(a.strip().casefold() for a in allowlist if a.strip())
        self._names = NameFinder() if ner and "PERSON" in chosen else None

    def detect(self, text: str) -> list[Span]:
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text: sorted, non-overlapping, span.text == text[start:end]."""
        try:
            return self._detect_many(texts)
        except DetectionFailed:
            raise
        except Exception as exc:  # a bug in a finder must not let raw text through
            raise DetectionFailed(f"detection failed: {type(exc).__name__}: {exc}") from exc

    def _detect_many(self, texts: Sequence[str]) -> list[list[Span]]:
        # An allowlisted outer span is dropped later: then what lies inside it must still be found.
        candidates = find_structured(texts, self.entities, skip_contained=not self.allowlist)
        if self._names is not None:
            # NER reads the texts with the structured values blanked out: their capitalised words
            # (street and city names, e-mail users) are not people and would only cost NER time.
            masked = [_blank(t, c) for t, c in zip(texts, candidates, strict=True)]
            names = [n for n in self._names.person_names(masked, self.allowlist) if n.casefold() not in self.allowlist]
            pattern = self._names.name_pattern(names)
            if pattern is not None:
                for text, cands in zip(texts, candidates, strict=True):
                    widen = self._names.widen
                    cands.extend((widen(text, m.start()), m.end(), "PERSON") for m in pattern.finditer(text))
        return [self._resolve(t, c) for t, c in zip(texts, candidates, strict=True)]

    def _resolve(self, text: str, cands: list[tuple[int, int, str]]) -> list[Span]:
        """Overlapping candidates become one span covering them all, labelled by the best of them
        (longest, then highest priority, then earliest). Dropping the loser of a partial overlap
        would leak its uncovered end ("...Ridges. Block AA" vs a MAC starting at "AA")."""
        out: list[Span] = []
        cluster: list[tuple[int, int, str]] = []
        end = -1
        allow = self.allowlist
        # By start alone (int keys compare in C; whole tuples cost a rich comparison each): the
        # order among candidates with one start changes neither a cluster nor its label.
        for c in sorted(cands, key=_START):
            if c[0] >= c[1] or (allow and text[c[0] : c[1]].strip().casefold() in allow):
                continue
            if cluster and c[0] >= end:
                out.append(self._merge(text, cluster))
                cluster = []
            cluster.append(c)
            end = max(end, c[1]) if len(cluster) > 1 else c[1]
        if cluster:
            out.append(self._merge(text, cluster))
        return out

    @staticmethod
    def _merge(text: str, cluster: list[tuple[int, int, str]]) -> Span:
        # tuple.__new__ builds the Span in C: a NamedTuple's own __new__ is Python code (0.5 µs
        # against 0.2, and a dense KB has a dozen spans).
        if len(cluster) == 1:  # the common case: no overlap, nothing to choose
            s, e, entity = cluster[0]
            return tuple.__new__(Span, (s, e, entity, text[s:e]))
        best = min(cluster, key=lambda c: (c[0] - c[1], _RANK[c[2]], c[0]))
        s = min(c[0] for c in cluster)
        e = max(c[1] for c in cluster)
        return tuple.__new__(Span, (s, e, best[2], text[s:e]))


def _blank(text: str, cands: list[tuple[int, int, str]]) -> str:
    """text with every candidate span replaced by spaces (same length)."""
    if not cands:
        return text
    chars = list(text)
    for s, e, _ in cands:
        chars[s:e] = " " * (e - s)
    return "".join(chars)
