"""Placeholders: the one tag grammar, value normalization and the table of issued tags.

A tag is issued as `[ENTITY_N]` (`[PERSON_1]`, `[CREDIT_CARD_2]`): N counts per entity within
one conversation. Models rewrite what they echo, so a tag is recognised with tolerance: any
case, up to two spaces or tabs inside the brackets, and the separators ` `, `_` or `-` between
words and before the number (`[person_1]`, `[ PERSON_1 ]`, `[PERSON 1]`, `[credit-card 2]`).

Why one fixed grammar: a tag found in text is parsed by `TAG` and then looked up in a dict of
the tags this conversation was issued. No placeholder (nor any value) is ever compiled into a
regex, so a tag's brackets cannot become a character class (LLM Guard's bug, FACTS.md) and a
tag that was never issued (`[FOO_1]`, a model's own brackets) is left exactly as it was.

The grammar is bounded (2 spaces, 2 separators, 6 digits): the streaming restorer's held tail
can therefore never be longer than one tag.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_WS = " \t"
_SEP = " _-"
_MAX_WS = 2
_MAX_SEP = 2
_MAX_DIGITS = 6

# The only tag pattern in the package. Entity words: ASCII letters joined by one separator;
# the number has no leading zero (tags are issued without one).
TAG = re.compile(r"\[[ \t]{0,2}([A-Za-z]+(?:[ _-][A-Za-z]+)*)[ _-]{0,2}([1-9][0-9]{0,5})[ \t]{0,2}\]")
_WORD_SPLIT = re.compile(r"[ _-]")

# Values compared by their digits only: "+1 (555) 010-9999" and "15550109999" are one phone.
_DIGIT_ENTITIES = frozenset({"PHONE", "CREDIT_CARD", "US_SSN"})
_COMPACT_ENTITIES = frozenset({"IBAN", "MAC_ADDRESS"})


def format_tag(entity: str, number: int) -> str:
    return f"[{entity}_{number}]"


def canonical_entity(words: str) -> str:
    """'credit card' / 'Credit-Card' / 'CREDIT_CARD' -> 'CREDIT_CARD'."""
    return "_".join(_WORD_SPLIT.split(words)).upper()


def normalize(entity: str, value: str) -> str:
    """The form under which two mentions are the same value: casefolded, whitespace collapsed;
    phones, cards and SSNs by their digits; IBANs and MACs without separators."""
    text = unicodedata.normalize("NFKC", value)
    if entity in _DIGIT_ENTITIES:
        digits = "".join(ch for ch in text if ch.isdigit())
        return digits or " ".join(text.casefold().split())
    if entity in _COMPACT_ENTITIES:
        return "".join(ch for ch in text.casefold() if ch.isalnum())
    return " ".join(text.casefold().split())


@dataclass
class TagTable:
    """The tags issued in one conversation: (ENTITY, number) -> original text."""

    originals: dict[tuple[str, int], str] = field(default_factory=dict)
    # entity -> its issued numbers as decimal strings: what the streaming prefix check needs.
    _numbers: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for entity, number in self.originals:
            self._numbers.setdefault(entity, set()).add(str(number))

    @classmethod
    def from_tags(cls, by_tag: Mapping[str, str]) -> "TagTable":
        """{'[PERSON_1]': 'Ada'} -> table (for callers holding issued tag strings)."""
        originals = {}
        for tag, original in by_tag.items():
            match = TAG.fullmatch(tag)
            if match is None:
                raise ValueError(f"not a tag: {tag!r}")
            originals[(canonical_entity(match.group(1)), int(match.group(2)))] = original
        return cls(originals)

    def add(self, entity: str, number: int, original: str) -> None:
        self.originals[(entity, number)] = original
        self._numbers.setdefault(entity, set()).add(str(number))

    def __len__(self) -> int:
        return len(self.originals)

    def only(self, keys: Iterable[tuple[str, int]]) -> "TagTable":
        """The part of the table for `keys`: what one request was issued."""
        wanted = set(keys)
        return TagTable({key: value for key, value in self.originals.items() if key in wanted})

    def lookup(self, match: re.Match) -> str | None:
        return self.originals.get((canonical_entity(match.group(1)), int(match.group(2))))

    def could_begin(self, text: str) -> bool:
        """True when `text` (starting with '[') is a proper prefix of a tag this table issued,
        in any tolerated spelling: more input could still make it one. Mirrors TAG exactly."""
        if not self.originals or not text.startswith("["):
            return False
        n = len(text)
        i = _skip(text, 1, _WS)
        if i - 1 > _MAX_WS:
            return False
        if i == n:
            return True
        words: list[str] = []
        while True:
            start = i
            while i < n and text[i].isascii() and text[i].isalpha():
                i += 1
            if i == start:
                return False
            words.append(text[start:i].upper())
            entity = "_".join(words)
            if i == n:
                return any(name.startswith(entity) for name in self._numbers)
            start = i
            i = _skip(text, i, _SEP)
            seps = i - start
            if seps > _MAX_SEP:
                return False
            if i == n:
                inner = seps == 1 and any(name.startswith(entity + "_") for name in self._numbers)
                return inner or entity in self._numbers
            if text[i].isdigit():
                break
            if seps != 1 or not (text[i].isascii() and text[i].isalpha()):
                return False
        numbers = self._numbers.get(entity)
        if numbers is None:
            return False
        start = i
        while i < n and text[i].isdigit():
            i += 1
        digits = text[start:i]
        if len(digits) > _MAX_DIGITS or digits.startswith("0"):
            return False
        if i == n:
            return any(number.startswith(digits) for number in numbers)
        if digits not in numbers:
            return False
        start = i
        i = _skip(text, i, _WS)
        return i == n and i - start <= _MAX_WS


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i
