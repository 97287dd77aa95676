r"""Structured PII: one compiled regex per entity, each confirmed by a validator.

Linear time by construction: a match can only start at the beginning of a run (a negative
look-behind on the character before it), so a long run is scanned once, not once per character;
repeats are bounded or possessive; the one construct with an unbounded gap (PEM private key
blocks) is searched from each BEGIN, not with a lazy regex.

Speed: patterns start with a character class or a literal and check the character before it
with a look-behind placed after it (`\d(?<![\w-]\d)`): re jumps to candidates for those, while a
pattern starting with a look-behind is tried at every character. Cheap substring gates ("@",
"://", birth words) skip whole passes. Patterns that still have no cheap first
character are only tried where they can start (validators.matches_at/matches_from): where a
keyword is (str.find: "ssn", "born", "api"...), inside the long whitespace-free runs (keys and
tokens: Scan.chunks), after an IPv6 colon hint, or at the candidate starts (a superset) that
scan.Scan finds in a one-byte-per-character class map (the literals "000-00-0000", "0.0", "AA00";
one bytes regex for cards, bare phones and numbered addresses) or a hex map (MAC addresses),
computed once per text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from . import validators as v
from .addresses import find_addresses
from .scan import Scan

Finding = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Text:
    """One text and what several finders read from it, computed once per text: its lower-case
    copy and where candidates can start (scan.Scan)."""

    scan: Scan
    # Spans found so far per entity, for skipping a candidate that lies inside one that outranks it
    # (see Covered); None when such skips are off (an allowlist could drop the outer span).
    found: dict[str, list[tuple[int, int]]] | None = None

    @property
    def text(self) -> str:
        return self.scan.text

    @property
    def low(self) -> str | None:
        """text.lower() when that keeps every offset, else None (validators.lower_same)."""
        return self.scan.low


class Covered:
    """Is a candidate inside one of `spans`? For ascending candidate starts, in O(1) amortised:
    the spans are sorted by start, and of those starting at or before the candidate, the one that
    ends last contains it if any does.

    Why skipping such a candidate never changes the result: detect.py merges overlapping
    candidates into one span labelled by the longest (then the higher priority); a candidate
    inside another that is at least as long and ranks at least as high neither widens the merged
    span nor wins its label. Only the validation work is saved (Luhn windows, an IPv6 parse,
    the phone rules)."""

    __slots__ = ("_spans", "_i", "_end")

    def __init__(self, spans: list[tuple[int, int]] | None) -> None:
        self._spans = sorted(spans) if spans else []
        self._i, self._end = 0, -1

    def __call__(self, start: int, end: int) -> bool:
        spans, i = self._spans, self._i
        while i < len(spans) and spans[i][0] <= start:
            if spans[i][1] > self._end:
                self._end = spans[i][1]
            i += 1
        self._i = i
        return end <= self._end


# ---------------------------------------------------------------------------------------- email
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![\w.%+-].)[\w.%+-]{0,63}+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _emails(t: Text) -> Iterator[Finding]:
    return _anchored(t.text, "@", _LOCAL_CHARS, 64, _EMAIL, "EMAIL")


def _anchored(text: str, anchor: str, back: frozenset[str], max_back: int, rx: re.Pattern[str], entity: str) -> Iterator[Finding]:
    """Matches of rx that contain anchor ("@", "://"), found from each anchor (str.find runs in C)
    instead of a regex pass over every character: walk back over the characters that can precede
    it, then let the anchored regex confirm. This and the substring gates of the other finders are
    where the MB/s budget is won."""
    at = text.find(anchor)
    while at != -1:
        start = at
        while start > 0 and at - start < max_back and text[start - 1] in back:
            start -= 1
        m = rx.match(text, start)
        if m is not None and m.end() > at:
            yield m.start(), m.end(), entity
            at = text.find(anchor, m.end())
        else:
            at = text.find(anchor, at + len(anchor))


# ---------------------------------------------------------------------------------------- phone
# A prefix (+CC, 00CC, 011 CC), an optional (area) or (0), digit groups joined by one separator,
# an optional extension. The digit count decides (see _phone_ok); the patterns only propose.
# Three patterns by first character ("+", "(", digit) so that re can jump to candidates: a
# pattern that starts with a look-behind is tried at every character of the text.
_PHONE_GROUPS = r"(?:[\s.-]\d{1,8}+){0,6}"
_PHONE_END = r"(?P<ext>\s?(?:ext\.?|extension|x|\#)\s?\d{1,6}+)?(?![\w-]|[.:]\d)"
_PHONES = (
    re.compile(
        rf"\+(?<![\w+/.:-]\+)\s?[1-9]\d{{0,2}}(?:[\s.-]?\(\d{{1,5}}+\))?[\s.-]?\d{{1,12}}+{_PHONE_GROUPS}{_PHONE_END}",
        re.IGNORECASE,
    ),
    re.compile(rf"\((?<![\w+/.:-]\()\d{{1,5}}+\)[\s.-]?\d{{1,12}}+{_PHONE_GROUPS}{_PHONE_END}", re.IGNORECASE),
    re.compile(
        rf"\d(?<![\w+/.:-]\d)(?=(?:[\s().+-]{{0,3}}\d){{6}})\d{{0,11}}+(?:[\s.-]?\(\d{{1,5}}+\))?{_PHONE_GROUPS}{_PHONE_END}",
        re.IGNORECASE,
    ),
)


# Outside its extension a phone match holds digits, whitespace and "+().-" only: deleting the
# latter leaves its digits (str.translate runs in C; a regex sub cost twice as much).
# (re's \s is str.isspace(); the last such character is U+3000.)
_NOT_DIGITS = dict.fromkeys([*map(ord, "+().-"), *(c for c in range(0x3001) if chr(c).isspace())])
# The same for an ASCII body, as bytes to delete: bytes.translate deletes in a C loop, where
# str.translate looks every character up in the dict (0.8 µs a phone candidate).
_NOT_DIGITS_ASCII = bytes(c for c in _NOT_DIGITS if c < 128)


def _digits_of(body: str) -> str:
    if body.isascii():
        return body.encode().translate(None, _NOT_DIGITS_ASCII).decode()
    return body.translate(_NOT_DIGITS)


def _phone_ok(m: re.Match[str]) -> bool:
    body = m.group(0)
    ext = m.start("ext")
    if ext != -1:
        body = body[: ext - m.start()]
    digits = _digits_of(body)
    if body[0] == "+" or body.startswith("011") or body.startswith("00") and body[2:3] in _NONZERO:
        return 7 <= len(digits) <= 15  # an international prefix: +, 00 then a country code, 011
    if "(" in body:
        inner = body[body.index("(") + 1 : body.index(")")]
        if inner == "0":  # +44(0)... without the +44 still reads as a UK number
            return 10 <= len(digits) <= 12
    n = len(digits)
    if (n == 10 or n == 11) and digits[0] == "0" and digits[1] != "0":
        # National format with a trunk 0 (UK 020 7946 0958, DE 030 6999021); "00..." is an
        # international prefix, handled above.
        return True
    if n == 10:
        # Without a country code, insist on the NANP shape: keeps timestamps and ids out.
        return v.nanp_ok(digits)
    if n == 11 and digits[0] == "1":
        return v.nanp_ok(digits[1:]) and any(not c.isdigit() and c not in "()" for c in body.strip())
    return False


_NONZERO = frozenset("123456789")


def _phones(t: Text) -> Iterator[Finding]:
    text = t.text
    prefixed: list[tuple[int, int]] = []  # "+..." and "(...)" phones: the bare digits one is often their tail
    for found in (_PHONES[0].finditer(text), _PHONES[1].finditer(text)):
        for m in found:
            if _phone_ok(m) and not _ipv4_like(m.group(0)):
                prefixed.append(m.span())
                yield m.start(), m.end(), "PHONE"
    inside = Covered(prefixed if t.found is not None else None)
    for m in v.matches_from(text, _PHONES[2], t.scan.phone_digits()):
        if not inside(m.start(), m.end()) and _phone_ok(m) and not _ipv4_like(m.group(0)):
            yield m.start(), m.end(), "PHONE"


_IPV4_SHAPE = re.compile(r"\s*\d{1,3}(?:\.\d{1,3}){3}\s*")


def _ipv4_like(s: str) -> bool:
    return "." in s and _IPV4_SHAPE.fullmatch(s) is not None


# ----------------------------------------------------------------------------------------- card
# A card has 12+ digits: the look-ahead (bounded: 11 steps) drops shorter runs inside re, not one
# Python iteration per date or phone group; a run that passes it is consumed whole (possessive).
_CARD = re.compile(r"\d(?<![\w.+-]\d)(?=(?:[ -]?\d){11})(?:[ -]?\d)*+")


def _cards(t: Text) -> Iterator[Finding]:
    text = t.text
    in_iban = Covered(t.found.get("IBAN") if t.found is not None else None)  # an IBAN outranks a card
    for m in v.matches_from(text, _CARD, t.scan.card_digits()):
        end = m.end()
        if end < len(text) and text[end] in "-." and text[end + 1 : end + 2].isdigit():
            continue  # part of a longer dotted/dashed number (a version, an id)
        if not in_iban(m.start(), end):
            yield from _cards_in_run(m.group(0), m.start())


def _cards_in_run(run: str, offset: int) -> Iterator[Finding]:
    """Card numbers inside one run of digits and single spaces/dashes.

    A run can hold more than a card ("4111 1111 1111 1111 1234"), so windows of whole groups are
    tried: one group of 12-19 digits, or 2-5 groups of 3+ digits each (4-4-4-4, 4-6-5, ...).
    Groups of one or two digits never form a card, which keeps "1 2 3 4 ..." linear.
    """
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    i = 0
    while i < len(groups):
        ends: list[int] = []  # group indexes j where groups i..j hold 12-19 digits
        n = 0
        for j in range(i, min(i + 5, len(groups))):
            gs, ge = groups[j]
            if j > i and (ge - gs < 3 or groups[i][1] - groups[i][0] < 3):
                break
            n += ge - gs
            if n > 19:
                break
            if n >= 12:
                ends.append(j)
        for j in reversed(ends):  # the longest valid window wins: 4-4-4-4 before its 4-4-4 prefix
            if v.luhn_ok("".join(run[a:b] for a, b in groups[i : j + 1])):
                yield offset + groups[i][0], offset + groups[j][1], "CREDIT_CARD"
                i = j
                break
        i += 1


_GROUP = re.compile(r"\d+")


# ----------------------------------------------------------------------------------------- iban
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?:[ ]?[A-Z0-9]){11,30}+")


def _ibans(t: Text) -> Iterator[Finding]:
    text = t.text
    for m in v.matches_from(text, _IBAN, t.scan.two_capitals_two_digits()):
        raw = m.group(0)
        expected = v.IBAN_LENGTHS.get(raw[:2])
        # Cut to the country's length, counted in characters other than spaces.
        if expected is not None:
            n = 0
            for i, c in enumerate(raw):
                if c != " ":
                    n += 1
                    if n == expected:
                        raw = raw[: i + 1]
                        break
        if v.iban_ok(raw.replace(" ", "")):
            yield m.start(), m.start() + len(raw), "IBAN"


# ------------------------------------------------------------------------------------------ ssn
_SSN = re.compile(r"(\d(?<![\w-]\d)\d{2})([- ])(\d{2})\2(\d{4})(?![\w-])")
# Nine bare digits are only an SSN when the text says so just before.
_SSN_BARE = re.compile(
    r"(?i:\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?|ss\#)\b)[^\w\n]{0,6}(\d{3})(\d{2})(\d{4})(?!\w)"
)


_SSN_WORDS = ("ssn", "social", "ss#")  # where _SSN_BARE can start


def _ssns(t: Text) -> Iterator[Finding]:
    text = t.text
    for m in v.matches_from(text, _SSN, t.scan.ssn_shaped()):
        if v.ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield m.start(), m.end(), "US_SSN"
    if t.low is not None and not any(w in t.low for w in _SSN_WORDS):
        return
    for m in v.matches_at_lower(text, t.low, _SSN_BARE, _SSN_WORDS):
        if v.ssn_ok(m.group(1), m.group(2), m.group(3)):
            yield m.start(1), m.end(3), "US_SSN"


# ------------------------------------------------------------------------------------------- ip
_IPV4 = re.compile(r"(\d(?<![\w.]\d)\d{0,2}+(?:\.\d{1,3}+){3})(?![\w]|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|release|v|build)\s*$")
_IPV6 = re.compile(r"[0-9A-Fa-f:](?<![\w:.].)[0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{0,4}:){1,6}+(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]+)?(?![\w:])")


# Every _IPV6 match holds ":", up to 4 hex digits, ":" from its first colon, which is at most 4
# hex digits after its start. _IPV6 starts with a hex digit: re would try it at every letter a-f
# and every digit; this hint starts with a literal, which re finds as fast as str.find.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")


def _ipv6_starts(text: str) -> Iterator[int]:
    """Ascending positions where an _IPV6 match can start: the hex run before each hint's colon."""
    for m in _IPV6_HINT.finditer(text):
        colon = start = m.start()
        while start > 0 and colon - start < 4 and text[start - 1] in v.HEX_DIGITS:
            start -= 1
        yield start


def _ips(t: Text) -> Iterator[Finding]:
    text = t.text
    for m in v.matches_from(text, _IPV4, t.scan.dotted_digits()):
        # "version 1.2.3.4" / "v1.2.3.4" is a version, not an address; a bare 1.2.3.4 is an address.
        if v.ipv4_ok(m.group(1)) and not _VERSION_BEFORE.search(text, max(0, m.start() - 10), m.start()):
            yield m.start(), m.end(), "IP_ADDRESS"
    if "::" not in text and text.count(":") < 7:
        return
    in_mac = Covered(t.found.get("MAC_ADDRESS") if t.found is not None else None)  # a MAC outranks an IP
    for m in v.matches_from(text, _IPV6, _ipv6_starts(text)):
        if in_mac(m.start(), m.end()):
            continue
        cand = m.group(0)
        core = cand.split("%", 1)[0]
        groups = [g for g in core.split(":") if g]
        # "a::b" and "::1" are valid addresses but read as code or loopback: ask for 2+ groups and
        # 4+ hex digits before calling it an address.
        if len(groups) >= 2 and sum(map(len, groups)) >= 4 and v.ipv6_ok(core):
            yield m.start(), m.end(), "IP_ADDRESS"


# ------------------------------------------------------------------------------------------ mac
_MAC = re.compile(
    r"[0-9A-Fa-f](?<![\w:.-].)(?:[0-9A-Fa-f]([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{3}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-]|\.[0-9A-Fa-f])"
)


def _macs(t: Text) -> Iterator[Finding]:
    # Tried only where the hex shape is (scan.Scan.mac_shaped: three bytes.split calls), not at
    # every hex digit of every run without blanks (URLs, keys, e-mail addresses).
    for m in v.matches_from(t.text, _MAC, t.scan.mac_shaped()):
        yield m.start(), m.end(), "MAC_ADDRESS"


# -------------------------------------------------------------------------------- date of birth
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"
    rf"|{_MONTH}\s+\d{{4}})"
)
_DOB = re.compile(
    r"(?i:\b(?P<key>born|d\.?o\.?b\b\.?|date\s+of\s+birth|birth\s*date|birthday|geboren|n[ée]e?\s+le)\b)"
    r"(?=[^\n\d]{0,40}\d)[^\n\d]{0,24}?"
    rf"(?-i:(?i:{_DATE}))(?!\d)",
)
_DOB_DATE = re.compile(_DATE, re.IGNORECASE)
_DOB_KEYS = ("birth", "born", "dob", "d.o.b", "geboren", "né")  # the commonest first: any() stops there
# Where _DOB can start: these words (found with str.find, which skips ahead in C; a regex of
# them is tried at every b, d, g and n) and "née le" (a regex: its spaces vary). Every
# occurrence, overlapping ones too: a superset of the starts one alternation would find.
_DOB_WORDS = ("born", "dob", "do.b", "d.o", "date", "birth", "geboren")
_NEE_LE = re.compile(r"n[ée]e?\s+le")


def _dobs(t: Text) -> Iterator[Finding]:
    text = t.text
    if t.low is not None and not any(k in t.low for k in _DOB_KEYS):
        return
    found = _DOB.finditer(text) if t.low is None else v.matches_from(text, _DOB, _dob_starts(t.low))
    for m in found:
        # The span is the date only: "born on" stays readable for the model. The date is looked
        # for after the keyword (no date can start inside one: none holds a digit or a month's
        # name), not from its first letter: each position costs the whole date alternation.
        d = _DOB_DATE.search(text, m.end("key"), m.end())
        if d is not None:
            yield d.start(), m.end(), "DATE_OF_BIRTH"


def _dob_starts(low: str) -> list[int]:
    starts = {m.start() for m in _NEE_LE.finditer(low)} if "le" in low else set()
    for word in _DOB_WORDS:
        at = low.find(word)
        while at != -1:
            starts.add(at)
            at = low.find(word, at + 1)
    return sorted(starts)


# ------------------------------------------------------------------------------ url credentials
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_CRED = re.compile(
    r"[A-Za-z](?<![A-Za-z0-9+.-].)[A-Za-z0-9+.-]{0,31}+://[^\s/:@?#]{1,256}+:[^\s/@]{1,256}+@[^\s/?#\"'<>]{1,256}+"
)


def _url_creds(t: Text) -> Iterator[Finding]:
    return _anchored(t.text, "://", _SCHEME_CHARS, 32, _URL_CRED, "URL_CREDENTIALS")


# --------------------------------------------------------------------------------------- secret
# One alternative per first letter (sk- and sk_, gh_ github_ glpat-, ...: re tries the
# alternatives of a group one by one), each a literal and then the look-behind "no word character
# or '-' before": re jumps to those letters, where a look-behind first would be tried at every
# character of a run, and a look-behind checked after the whole key would read to the end of every
# "sk-" or "eyJ" inside a long run first (quadratic on "task-task-...").
_KNOWN_KEYS = re.compile(
    r"(?:"
    r"s(?<![\w-]s)(?:k-(?:proj-|ant-(?:api\d\d-)?|live-|test-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}|k_(?:live|test)_[A-Za-z0-9]{16,})"
    r"|r(?<![\w-]r)k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|p(?<![\w-]p)(?:k_(?:live|test)_[A-Za-z0-9]{16,}|ypi-AgE[A-Za-z0-9_-]{50,})"
    r"|g(?<![\w-]g)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{22,}|lpat-[A-Za-z0-9_-]{20,})"
    r"|x(?<![\w-]x)ox[abposr]-[A-Za-z0-9-]{10,}"
    r"|A(?<![\w-]A)(?:(?:KIA|SIA|GPA|IDA|ROA)[A-Z0-9]{16}|Iza[0-9A-Za-z_-]{35})"
    r"|h(?<![\w-]h)f_[A-Za-z0-9]{30,}"
    r"|n(?<![\w-]n)(?:pm_[A-Za-z0-9]{36}|vapi-[A-Za-z0-9_-]{30,})"
    r"|S(?<![\w-]S)G\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
    r"|e(?<![\w-]e)yJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r")(?![\w-])"
)
# key = value / "token": "value" -- the value is a secret whatever its shape (a password).
_ASSIGNED = re.compile(
    r"(?i:\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token"
    r"|password|passwd|pwd|client[_-]?secret|private[_-]?key|bearer))"
    r"[\"']?(?:\s*[:=]\s*|\s+)[\"']?([^\s\"',;]{8,200}+)"
)
_KNOWN_KEY_MIN = 15  # the shortest _KNOWN_KEYS match: "xox" + "b-" + 10
_ASSIGNED_KEYS = ("key", "secret", "token", "pass", "pwd", "bearer")
# where _ASSIGNED can start (api_key, apikey, access_token, auth_token, client_secret, private_key...)
_ASSIGNED_STARTS = ("api", "secret", "access", "auth", "token", "pass", "pwd", "client", "private", "bearer")
_TOKEN = re.compile(r"[A-Za-z0-9_+/=-](?<![\w+/=-].)[A-Za-z0-9_+/=-]{23,511}+(?![\w+/=-])")
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s:,.-]*+")


def _secrets(t: Text) -> Iterator[Finding]:
    text = t.text
    # Private key blocks first: a token inside one, or inside a known key, is covered already, and
    # judging a token (entropy, camel words) is this finder's costly part: a PEM body is a column
    # of 64-character tokens. Skipping is only a saving, never a change: the spans merge anyway.
    pem = list(_pem_blocks(text)) if "PRIVATE KEY" in text else []
    yield from pem
    # A known key holds no whitespace: its regex reads only the long runs (searching a run as if
    # it were the whole text is exact: what borders it is whitespace).
    keys: list[tuple[int, int]] = []
    for s, e in t.scan.chunks():
        if e - s >= _KNOWN_KEY_MIN:
            for m in _KNOWN_KEYS.finditer(text, s, e):
                keys.append(m.span())
                yield m.start(), m.end(), "SECRET"
    # A token is tried only where 24 token characters follow a character that cannot precede
    # one (scan.Scan.token_starts), not at every character of every run.
    p = k = 0  # tokens, PEM blocks and keys all ascend: one pointer each keeps this linear
    for m in v.matches_from(text, _TOKEN, t.scan.token_starts()):
        a, b = m.span()
        while p < len(pem) and pem[p][1] <= a:
            p += 1
        while k < len(keys) and keys[k][1] <= a:
            k += 1
        if p < len(pem) and pem[p][0] <= a and b <= pem[p][1] or k < len(keys) and keys[k][0] <= a and b <= keys[k][1]:
            continue
        if v.looks_random(m.group(0)):
            yield a, b, "SECRET"
    if t.low is None or any(k in t.low for k in _ASSIGNED_KEYS):
        yield from _assigned(text, v.matches_at_lower(text, t.low, _ASSIGNED, _ASSIGNED_STARTS))


def _assigned(text: str, found: Iterable[re.Match[str]]) -> Iterator[Finding]:
    for m in found:
        val = m.group(1)
        # "password: required" is prose; a secret value has a digit, a symbol or mixed case.
        if not val.isalpha() or (not val.islower() and not val.isupper() and not val.istitle()):
            yield m.start(1), m.end(1), "SECRET"


def _pem_body_end(text: str, pos: int) -> int:
    m = _PEM_BODY.match(text, pos)  # a body may be empty: never None
    return pos if m is None else m.end()


def _pem_blocks(text: str) -> Iterator[Finding]:
    pos = 0
    while True:
        b = _PEM_BEGIN.search(text, pos)
        if b is None:
            return
        e = _PEM_END.search(text, b.end())
        body_end = _pem_body_end(text, b.end())
        if e is not None and body_end >= e.start():
            end = e.end()
        else:
            # A truncated key (no END) is still a key: cover its base64 body (fail closed).
            end = body_end
            while end > b.end() and text[end - 1].isspace():
                end -= 1
        yield b.start(), end, "SECRET"
        pos = end


# ----------------------------------------------------------------------------------------------
# In this order: an IBAN before the cards inside it, a MAC address before the IPv6 look-alikes.
FINDERS: dict[str, Callable[[Text], Iterator[Finding]]] = {
    "EMAIL": _emails,
    "PHONE": _phones,
    "IBAN": _ibans,
    "CREDIT_CARD": _cards,
    "US_SSN": _ssns,
    "MAC_ADDRESS": _macs,
    "IP_ADDRESS": _ips,
    "DATE_OF_BIRTH": _dobs,
    "URL_CREDENTIALS": _url_creds,
    "SECRET": _secrets,
    "ADDRESS": lambda t: find_addresses(t.scan),
}


def find_structured(texts: Sequence[str], entities: frozenset[str], skip_contained: bool = True) -> list[list[Finding]]:
    """Every candidate finding of the selected structured entities in each text (overlaps not yet
    resolved). skip_contained: leave out candidates inside a found one that outranks them
    (Covered); off when an allowlist may drop the outer one.

    One finder at a time over all the texts (a conversation's messages): that keeps one pattern's
    code and branch history warm, 18 % less CPU than text by text on a hundred 1 KB texts."""
    scans = [Text(Scan(text, v.lower_same(text)), {} if skip_contained else None) for text in texts]
    out: list[list[Finding]] = [[] for _ in texts]
    for name, finder in FINDERS.items():
        if name in entities:
            for t, found in zip(scans, out):
                new = list(finder(t))
                if t.found is not None and name in _OUTRANKING:
                    t.found[name] = [(s, e) for s, e, _ in new]
                found.extend(new)
    return out


_OUTRANKING = frozenset({"IBAN", "MAC_ADDRESS"})  # whose spans later finders read (t.found)
