r"""Where the structured patterns can start, found at C speed from a one-byte-per-character map.

Why: re tries a pattern that starts with a character class (a digit, a capital) at every
character, about 6-12 ns a character per pass, and a pattern tried from Python at each digit run
costs 0.2 µs a call before it reads a character; the digit-first patterns alone made 165 calls
per KB of dense text. Here the text becomes bytes, one per character (latin-1; a character above
U+00FF becomes a latin-1 stand-in of the same classes for re: \d, \w, \s), and `bytes.translate`
maps each byte to its class once, so that "an SSN's shape" becomes the literals b"000-00-0000"
and b"000 00 0000", whose offsets `bytes.split` finds in C, and "where a card number, a phone or
a numbered address can start" one bytes regex that starts with a literal. A finder then tries its
own regex only at those offsets (validators.matches_from), which yields exactly what finditer
would: every offset where a match can start is listed (each question asks for a superset), and a
listed offset where none starts is only a failed attempt.

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

from .validators import HEX_DIGITS

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


# The map: a decimal digit "0", A-Z "A", another word character "a", the punctuation the patterns
# below read as itself, other whitespace "\n", anything else "|" (the sentinel too).
_RICH = (b"0", b"A", b"a", b"\n", b"|")
_KEEP = " \t-.:+/(),"
# The three digit-first patterns of structured.py and addresses.py (a numbered street address, a
# card number, a phone without a prefix) as they read in the map, up to their look-ahead, in one
# pass: re jumps to each "0" (a literal), and at each digit-run start decides in C which of them
# can start there; a run where none can fails and never reaches Python. Before, each text pattern
# was tried from Python at every digit run (0.2 µs a call before it reads a character). Each
# accepts a superset of its pattern's starts (any two letters for an ordinal, any letter for
# A-Z); re then checks the text there.
_ADDRESS_AHEAD = rb"(?<!-0)(?=0{0,5}+[aA]?(?:-0{1,6}+[aA]?)?,?[ \t]++(?:[aA]|0{1,3}[aA]{2}))"
_CARD_AHEAD = rb"(?<![.+-]0)(?=(?:[ -]?0){11})"
_PHONE_AHEAD = rb"(?<![+/.:-]0)(?=(?:[ \t\n().+-]{0,3}0){6})"
# Which of them can start is the one empty group that matched (m.lastindex, an int: reading all
# groups' spans built 5 tuples a match); each look-ahead is tried once on every path.
_DIGIT_FIRST = re.compile(
    rb"0(?<![aA0]0)(?:"
    + _ADDRESS_AHEAD + rb"(?:" + _CARD_AHEAD + rb"(?:" + _PHONE_AHEAD + rb"()|())|" + _PHONE_AHEAD + rb"()|())"
    + rb"|" + _CARD_AHEAD + rb"(?:" + _PHONE_AHEAD + rb"()|())"
    + rb"|" + _PHONE_AHEAD + rb"())"
)
# (address, card, phone) by the index of the group that matched.
_DIGIT_FIRST_KINDS = (
    (False, False, False),
    (True, True, True), (True, True, False), (True, False, True), (True, False, False),
    (False, True, True), (False, True, False),
    (False, False, True),
)
_LONG_RUN = 14  # keys and tokens have at least this many characters
# A MAC address in the hex map (hex digit "h", the separators as themselves, else " "): six pairs
# joined by ":" or "-", or three quads joined by ".".
_MAC_NEEDLES = (b"hh:hh:hh:hh:hh:hh", b"hh-hh-hh-hh-hh-hh", b"hhhh.hhhh.hhhh")


# A token (structured._TOKEN: 24-512 of [A-Za-z0-9_+/=-]) in the token map: "t" for those
# characters, "w" for any other word character, " " for the rest (the sentinel too).
_TOKEN_AFTER_GAP = b" " + b"t" * 24
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=-")


@cache
def _token_table() -> bytes:
    return bytes(
        ord("t") if chr(b) in _TOKEN_CHARS else ord("w") if chr(b).isalnum() else ord(" ") for b in range(256)
    )


@cache
def _hex_table() -> bytes:
    return bytes(
        ord("h") if chr(b) in HEX_DIGITS else b if chr(b) in ":-." else ord(" ") for b in range(256)
    )
_LONG_RUN_AFTER_BLANK = b" " + b"x" * _LONG_RUN
_POSTCODE = re.compile(rb"A(?<![a0A-]A)A?0")  # literal first: re jumps to each "A"


class Scan:
    """One text and the candidate starts its finders share, each computed on first use."""

    __slots__ = ("text", "low", "_bytes", "_map", "_digit_starts", "_chunks")

    def __init__(self, text: str, low: str | None) -> None:
        self.text = text
        self.low = low  # text.lower() when that keeps every offset, else None (validators.lower_same)
        self._bytes: bytes | None = None
        self._map: bytes | None = None
        self._digit_starts: tuple[list[int], list[int], list[int]] | None = None
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

    def _digit_first(self) -> tuple[list[int], list[int], list[int]]:
        if self._digit_starts is None:
            address: list[int] = []
            card: list[int] = []
            phone: list[int] = []
            for m in _DIGIT_FIRST.finditer(self.map):
                at = m.start() - 1  # - 1: the sentinel
                is_address, is_card, is_phone = _DIGIT_FIRST_KINDS[m.lastindex or 0]
                if is_address:
                    address.append(at)
                if is_card:
                    card.append(at)
                if is_phone:
                    phone.append(at)
            self._digit_starts = (address, card, phone)
        return self._digit_starts

    def address_numbers(self) -> list[int]:
        """Where a numbered street address ("12 Main Street", "221B Baker St") can start."""
        return self._digit_first()[0]

    def card_digits(self) -> list[int]:
        """Where a card number (12+ digits, single spaces or dashes between) can start."""
        return self._digit_first()[1]

    def phone_digits(self) -> list[int]:
        """Where a phone number without a "+" or "(" prefix (7+ digits) can start."""
        return self._digit_first()[2]

    def digits_after_blank(self) -> list[int]:
        """Ascending offsets of every digit right after a space or a tab ("Hauptstraße 5")."""
        hay = self.map
        return _all(hay, (b" 0", b"\t0")) if b"\t" in hay else offsets(hay, b" 0")  # memchr first: tabs are rare

    def dotted_digits(self) -> list[int]:
        """Ascending offsets of up to three digits that a dot and a digit follow ("1.2", "10.0"):
        where an IPv4 address can start (a superset: re checks the rest, the look-behind too)."""
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

    def mac_shaped(self) -> list[int]:
        """Offsets of six hex pairs joined by ":" or by "-", or three hex quads joined by ".":
        where a MAC address can start (a superset: re checks what comes before and after). A
        match is never inside another such shape (a hex digit or a separator before it fails
        the MAC's look-behind), so the non-overlapping occurrences list every start."""
        return _all(self._translate(_hex_table()), _MAC_NEEDLES, -1)

    def token_starts(self) -> list[int]:
        """Offsets of 24 token characters ([A-Za-z0-9_+/=-]) after a character that is neither
        one nor another word character (or after the start): where a random token can start (a
        superset: a non-ASCII digit's stand-in reads as a token character; re checks it). A start
        is never inside another occurrence (a token character precedes it there).

        Looked for only in the runs without blanks of 24 characters or more (chunks), which hold
        every token: the needle is mostly "t", which the search cannot skip over (a whole-map
        search cost as much as the chunks themselves)."""
        hay = self._translate(_token_table())
        find = hay.find
        out: list[int] = []
        for start, end in self.chunks():
            if end - start >= len(_TOKEN_AFTER_GAP) - 1:
                # hay[start] is the blank before the run (the map is one sentinel byte ahead)
                at = find(_TOKEN_AFTER_GAP, start, end + 1)
                while at != -1:
                    out.append(at)
                    at = find(_TOKEN_AFTER_GAP, at + len(_TOKEN_AFTER_GAP), end + 1)
        return out

    def capitals_then_digit_after_gap(self) -> list[int]:
        """Offsets of a capital that follows neither a word character nor "-", then at most one
        more capital, then a digit: where a UK postcode ("SW1A 1AA", "E4 1ZP") can start."""
        return [m.start() - 1 for m in _POSTCODE.finditer(self.map)]

    def chunks(self) -> list[tuple[int, int]]:
        """(start, end) of every run of 14+ characters without whitespace: after a blank (or the
        start), 14 non-blanks, found by bytes.split with that 15-byte needle (it skips ahead up to
        15 bytes a step); each run's end by bytes.find."""
        if self._chunks is None:
            hay = self._translate(_table(b"x", b"x", b"x", b" ", b"x"))
            starts = offsets(hay, _LONG_RUN_AFTER_BLANK)  # the sentinel reads "x": see the start below
            if hay[1 : _LONG_RUN + 1] == _LONG_RUN_AFTER_BLANK[1:]:
                starts.insert(0, 0)
            found = []
            find = hay.find
            for start in starts:
                end = find(b" ", start + _LONG_RUN)
                found.append((start, (len(hay) if end == -1 else end) - 1))
            self._chunks = found
        return self._chunks
