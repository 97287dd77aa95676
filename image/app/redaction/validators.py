"""Checksums and rules that turn a regex candidate into a finding, and where a regex may start.

A regex only proposes: "16 digits" is a card only if Luhn holds, "DE89..." an IBAN only if
mod-97 holds. Keeping the checks here, pure and tiny, lets the tests hit every rule directly.
The matches_* helpers run a regex only where its match can begin (the speed of detection).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Iterator

# Length of a complete IBAN per country (ISO 13616 registry, the common subset). A candidate of a
# listed country is cut to its exact length, so a trailing uppercase word never spoils mod-97.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a digit string (cards): every second digit from the right doubled (its
    digit sum: 0246813579), read with translate and a bytes sum, which run in C."""
    rev = digits[::-1]
    odd, even = rev[::2], rev[1::2].translate(_LUHN_DOUBLED)
    return (sum(odd.encode()) + sum(even.encode()) - 48 * len(rev)) % 10 == 0


_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def iban_ok(compact: str) -> bool:
    """ISO 7064 mod-97 of an IBAN without spaces (upper case)."""
    if len(compact) < 15 or len(compact) > 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters become 10..35; int() of the whole string is exact and fast for <= 34 chars.
    numeric = rearranged.translate(_IBAN_LETTERS)
    return numeric.isdigit() and int(numeric) % 97 == 1


_IBAN_LETTERS = {ord(c): str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000 or 666, no group 00, no serial 0000. Area 9xx is never an SSN, but
    in this layout it is an ITIN (a taxpayer id: personal data too) or a test value someone
    meant as an SSN: redacting it costs little, leaking it is what a gateway must not do."""
    return area != "000" and area != "666" and group != "00" and serial != "0000"


def ipv4_ok(text: str) -> bool:
    parts = text.split(".")
    # ipaddress rejects leading zeros since 3.9.5, which would let "010.001.001.001" leak: an octet
    # with a leading zero is still an address a user meant, so only the range is checked here.
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


def ipv6_ok(text: str) -> bool:
    """What ipaddress.IPv6Address accepts, by its own rules (8 hextets of 1-4 hex digits, or
    fewer around one "::", an IPv4 address as the last two), without its exceptions: the library
    took 6.6 µs a candidate. A scope (%), a prefix (/) or a non-ASCII character: the library."""
    if not text.isascii() or "%" in text or "/" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    parts = text.split(":")
    if len(parts) < 3:
        return False
    if "." in parts[-1]:
        if not _ipv4_strict(parts.pop()):
            return False
        parts += ["0", "0"]  # the IPv4 address counts as two hextets
    if len(parts) > 9:
        return False
    skip = 0  # the index of the empty part that "::" leaves, 0 for none (it is never the first)
    for i in range(1, len(parts) - 1):
        if not parts[i]:
            if skip:
                return False  # two "::"
            skip = i
    if skip:
        before, after = skip, len(parts) - skip - 1
        if not parts[0]:
            before -= 1
            if before:
                return False  # a lone leading ":"
        if not parts[-1]:
            after -= 1
            if after:
                return False  # a lone trailing ":"
        if before + after > 7:
            return False  # "::" must stand for at least one hextet
        hextets = parts[:before] + parts[len(parts) - after :]
    else:
        if len(parts) != 8 or not parts[0] or not parts[-1]:
            return False
        hextets = parts
    return all(0 < len(h) <= 4 and HEX_DIGITS.issuperset(h) for h in hextets)


HEX_DIGITS = frozenset("0123456789abcdefABCDEF")  # also read by scan.py and structured.py


def _ipv4_strict(text: str) -> bool:
    """ipaddress.IPv4Address's rules for ASCII text: four decimal octets up to 255, no leading zero."""
    octets = text.split(".")
    return len(octets) == 4 and all(
        o.isdigit() and len(o) <= 3 and (o[0] != "0" or o == "0") and int(o) <= 255 for o in octets
    )


def nanp_ok(ten: str) -> bool:
    """North-American number plan: area code and exchange never start with 0 or 1."""
    return len(ten) == 10 and ten[0] not in "01" and ten[3] not in "01"


def looks_random(token: str) -> bool:
    """A long token that reads like a generated secret rather than a word, hash or identifier.
    token: ASCII, under 1024 characters (a match of structured._TOKEN has at most 512); anything
    else is not judged random.

    Why these rules: prose has long words, snake_case identifiers, paths and hex digests (git
    SHAs, checksums) that users paste all the time and that are not secrets. A generated key mixes
    upper case, lower case and at least two digits, and has high entropy; pure hex or single-case
    tokens do not qualify, which keeps PII-free prompts untouched. Identifiers (getUserById2,
    ProxyFactoryBean42) are made of words; a generated key's "camel words" (what
    `[A-Z]?[a-z]+|[A-Z]+(?![a-z])` finds) are about two letters long (98th percentile 3.1 on
    random base64; identifiers measured 3.6 and up).

    One pass over the bytes counts all of it (compiled, a tenth of the str methods, the camel
    regex and the Counter it replaces). Camel words: each lower-case run is one (with the capital
    before it, if any); a capital run is one more unless it is a single capital that a lower-case
    run follows (two capitals and more: all but the last, which starts the next word).
    """
    n = len(token)
    if not 24 <= n < len(_C_LOG2_C) or not token.isascii():
        return False
    counts = [0] * 128
    first_seen: list[int] = []  # each character once, in order: the entropy sums as Counter did
    uppers = lowers = digits = words = capital_run = 0
    after_lower = False
    for c in token.encode():
        if counts[c] == 0:
            first_seen.append(c)
        counts[c] += 1
        if 65 <= c <= 90:  # A-Z
            uppers += 1
            capital_run += 1
            after_lower = False
        elif 97 <= c <= 122:  # a-z
            lowers += 1
            if not after_lower:
                words += 2 if capital_run >= 2 else 1
            capital_run = 0
            after_lower = True
        else:
            if 48 <= c <= 57:  # 0-9
                digits += 1
            if capital_run:
                words += 1
            capital_run = 0
            after_lower = False
    if capital_run:
        words += 1
    if not uppers or not lowers or digits < 2 or (uppers + lowers) / words >= 3.5:
        return False
    # Entropy per character in bits: log2(n) - sum(c * log2(c)) / n over the character counts c.
    return math.log2(n) - sum([_C_LOG2_C[counts[c]] for c in first_seen]) / n >= 3.8


_C_LOG2_C = [0.0] + [c * math.log2(c) for c in range(1, 1024)]  # c * log2(c); a token has < 1024 characters


def trie_regex(words: list[str], fold: bool = True) -> str:
    """An alternation shaped as a trie: re tries alternatives one by one, so 250 flat branches
    would be tried at every candidate; a trie tests one character per level. fold: the words are
    lower-cased (for a case-insensitive group)."""
    trie: dict[str, dict] = {}
    for w in words:
        node = trie
        for ch in w.lower() if fold else w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        end = "" in node
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if end else body

    return emit(trie)


def lower_same(text: str) -> str | None:
    """text.lower() when it keeps every offset (a few characters, e.g. "İ", lower to two): the
    copy to str.find case-insensitive keywords in, or None when offsets would shift. "ı"
    (dotless i) and "ſ" (long s) become "i" and "s" in it: re's IGNORECASE matches them with
    those letters ("Bırthdate" is a birth date to re), str.lower keeps them."""
    low = text.lower()
    if len(low) != len(text):
        return None
    return low.translate(_FOLD_AS_RE) if "ı" in low or "ſ" in low else low


_FOLD_AS_RE = str.maketrans("ıſ", "is")


def matches_at(text: str, rx: re.Pattern[str], words: Iterable[str], haystack: str | None = None) -> list[re.Match[str]]:
    """What rx.finditer(text) yields (left to right, non-overlapping), for a pattern whose every
    match starts where one of `words` occurs in haystack (text itself, or its lower_same copy).

    Why: a pattern that starts with \\b, a look-behind or a case-insensitive alternation gives re
    no first character to jump to, so finditer tries it at every character of the text; str.find
    runs in C, and the pattern is then tried only where it can start.
    """
    hay = text if haystack is None else haystack
    starts: set[int] = set()
    for w in words:
        i = hay.find(w)
        while i != -1:
            starts.add(i)
            i = hay.find(w, i + 1)
    return matches_from(text, rx, sorted(starts))


def matches_at_lower(text: str, low: str | None, rx: re.Pattern[str], words: Iterable[str]) -> Iterable[re.Match[str]]:
    """matches_at with lower-case `words` found in `low` (lower_same(text)); without that copy
    (lowering would shift offsets) rx is tried everywhere, as finditer does."""
    return rx.finditer(text) if low is None else matches_at(text, rx, words, low)


def matches_from(text: str, rx: re.Pattern[str], starts: Iterable[int]) -> list[re.Match[str]]:
    """What rx.finditer(text) yields, for a pattern whose every match starts at one of `starts`
    (ascending): rx is tried there only, and not inside a match already found. A list, not a
    generator: most calls find none or one, and a compiled generator costs more to make."""
    found: list[re.Match[str]] = []
    end = 0
    match = rx.match
    for s in starts:
        if s < end:
            continue
        m = match(text, s)
        if m is not None:
            found.append(m)
            end = max(m.end(), s + 1)
    return found
