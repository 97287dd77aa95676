r"""Where the structured patterns can start, found at C speed from a one-byte-per-character map.

Why: re tries a pattern that starts with a character class (a digit, a capital) at every
character, about 6-12 ns a character per pass, and a pattern tried from Python at each digit run
costs 0.2 µs a call before it reads a character; the digit-first patterns alone made 165 calls
per KB of dense text. Here the text becomes bytes, one per character (latin-1; a character above
U+00FF becomes a latin-1 stand-in of the same classes for re: \d, \w, \s), and `bytes.translate`
(memory speed) maps each byte to its class for one question, so that "a digit run right after a
space or an opening bracket, then a dot" becomes literals such as b" 0." whose offsets
`bytes.split` finds in C. A finder then tries its regex only at those offsets
(validators.matches_from), which yields exactly what finditer would: every offset where a match
can start is listed, and a listed offset where none starts is only a failed attempt.

The map starts with one sentinel byte that stands for "no character": a needle's first byte can
then be "what comes before", and an offset in the map is the offset of the character after it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from functools import cache
from itertools import accumulate, chain
from operator import add

# Stand-ins for the characters above U+00FF, one per class that the patterns tell apart: a
# decimal digit (re's \d), another word character (\w, but not in [A-Za-z0-9]), whitespace (\s,
# but neither " " nor "\t"), anything else. The sentinel is "anything else" too.
_DIGIT, _WORD, _SPACE, _OTHER = "0", "\xe9", "\x85", "\x7f"
_SENTINEL = _OTHER.encode("latin-1")
_ERRORS = "spark-control-class-stand-in"


def _stand_in(char: str) -> str:
    if char.isdecimal():
        return _DIGIT
    if char.isalnum():
        return _WORD
    return _SPACE if char.isspace() else _OTHER


def _stand_ins(err: UnicodeError) -> tuple[str, int]:
    assert isinstance(err, UnicodeEncodeError)
    return "".join(map(_stand_in, err.object[err.start : err.end])), err.end


@cache
def _register_stand_ins() -> None:
    codecs.register_error(_ERRORS, _stand_ins)


def class_bytes(text: str) -> bytes:
    """The sentinel, then one byte per character of text: itself below U+0100, else its stand-in."""
    try:
        return _SENTINEL + text.encode("latin-1")  # the common text: every character below U+0100
    except UnicodeEncodeError:
        _register_stand_ins()
        return _SENTINEL + text.encode("latin-1", _ERRORS)


@cache
def _table(digit: bytes, upper: bytes, word: bytes, space: bytes, other: bytes, keep: str = "") -> bytes:
    """A bytes.translate table: each latin-1 character becomes one byte by class (a decimal
    digit, A-Z, another word character, whitespace, anything else), or stays itself (keep)."""
    out = bytearray()
    for b in range(256):
        c = chr(b)
        if c in keep:
            out.append(b)
        elif c.isdecimal():
            out += digit
        elif "A" <= c <= "Z":
            out += upper
        elif c.isalnum() or c == "_":  # re's \w
            out += word
        elif c.isspace():
            out += space
        else:
            out += other
    return bytes(out)


def offsets(hay: bytes, needle: bytes, shift: int = 0) -> list[int]:
    """Offsets (+ shift) of the non-overlapping occurrences of needle in hay. All in C: the
    offset of occurrence i is the length of the pieces before it plus i needles."""
    pieces = hay.split(needle)
    if len(pieces) == 1:
        return []
    step = len(needle)
    return list(map(add, accumulate(map(len, pieces[:-1])), range(shift, shift + step * (len(pieces) - 1), step)))


def _union(lists: Iterable[list[int]]) -> list[int]:
    """The ascending union of ascending lists with no offset in common."""
    found = [f for f in lists if f]
    if len(found) > 1:
        return sorted(chain.from_iterable(found))  # timsort merges the runs in C
    return found[0] if found else []


def _all(hay: bytes, needles: tuple[bytes, ...], shift: int = 0) -> list[int]:
    """offsets() of needles that never occur at the same offset, ascending."""
    return _union(offsets(hay, n, shift) for n in needles)


# The map most questions read: a decimal digit "0", A-Z "A", another word character "a", " ", "\t",
# "-", "." and ":" themselves, other whitespace "\n", anything else "|" (the sentinel too).
# Digit-run starts read a map of their own, where anything but a digit or a word character is " ":
# one needle (b" 0") costs less than one per character that can come before a digit.
_RICH = (b"0", b"A", b"a", b"\n", b"|")
_KEEP = " \t-.:"
_DIGITS = (b"0", b"a", b"a", b" ", b" ")
_POSTCODE = re.compile(rb"A(?<![a0A-]A)A?0")  # literal first: re jumps to each "A"


class Scan:
    """One text and the candidate starts its finders share, each computed on first use."""

    __slots__ = ("text", "low", "_bytes", "_map", "_digits", "_chunks")

    def __init__(self, text: str, low: str | None) -> None:
        self.text = text
        self.low = low  # text.lower() when that keeps every offset, else None (validators.lower_same)
        self._bytes: bytes | None = None
        self._map: bytes | None = None
        self._digits: list[int] | None = None
        self._chunks: list[tuple[int, int]] | None = None

    def _translate(self, table: bytes) -> bytes:
        if self._bytes is None:
            self._bytes = class_bytes(self.text)
        return self._bytes.translate(table)

    @property
    def map(self) -> bytes:
        if self._map is None:
            self._map = self._translate(_table(*_RICH, keep=_KEEP))
        return self._map

    def digits(self) -> list[int]:
        """Ascending offsets of every digit that no word character precedes: where a pattern
        that starts with a digit run can start."""
        if self._digits is None:
            self._digits = offsets(self._translate(_table(*_DIGITS)), b" 0")
        return self._digits

    def digits_after_blank(self) -> list[int]:
        """Ascending offsets of every digit right after a space or a tab ("Hauptstraße 5")."""
        text = self.text
        return [d for d in self.digits() if d and text[d - 1] in " \t"]

    def dotted_digits(self) -> list[int]:
        """Ascending offsets of every digit run that a dot and a digit follow ("1.2", "10.0"):
        where an IPv4 address can start (a superset: re checks the rest)."""
        text = self.text
        out = []
        for last in offsets(self.map, b"0.0", -1):  # the run's last digit
            start = last
            while start > 0 and text[start - 1].isdecimal() and last - start < 3:
                start -= 1
            out.append(start)
        return out

    def ssn_shaped(self) -> list[int]:
        """Offsets of 3-2-4 digits joined by "-" or by " ": where a US SSN can start (a superset:
        re checks what comes before and after)."""
        return _all(self.map, (b"000-00-0000", b"000 00 0000"), -1)

    def two_capitals_two_digits(self) -> list[int]:
        """Offsets of two capitals A-Z then two decimal digits, wherever they are: where an IBAN
        ("DE89 ...") can start."""
        return offsets(self.map, b"AA00", -1)

    def capitals_then_digit_after_gap(self) -> list[int]:
        """Offsets of a capital that follows neither a word character nor "-", then at most one
        more capital, then a digit: where a UK postcode ("SW1A 1AA", "E4 1ZP") can start."""
        return [m.start() - 1 for m in _POSTCODE.finditer(self.map)]

    def chunks(self) -> list[tuple[int, int]]:
        """(start, end) of every run of 14+ characters without whitespace. str.split runs in C;
        each long run is located with str.find from the end of the previous one (it cannot occur
        earlier: the runs in between are shorter than it). (A literal search for 14 non-blanks in
        the byte map cost more: re's prefix search steps back on every shorter word.)"""
        if self._chunks is None:
            self._chunks = []
            pos = 0
            find = self.text.find
            for word in self.text.split():
                if len(word) >= 14:
                    start = find(word, pos)
                    pos = start + len(word)
                    self._chunks.append((start, pos))
        return self._chunks
