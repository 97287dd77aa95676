"""The candidate starts of app/redaction/scan.py: a finder that tries its regex only there must find
what re.finditer over the whole text finds, on any text (hypothesis), including characters above
U+00FF that the byte map replaces by stand-ins (a curly quote, a Polish letter, an Arabic-Indic
digit, an em space)."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.redaction import addresses, structured
from app.redaction import validators as v
from app.redaction.detect import Detector
from app.redaction.scan import Scan, class_bytes, offsets
from app.redaction.validators import lower_same, matches_from

_PIECES = st.sampled_from(
    ["123-45-6789", "123 45 6789", "10.0.0.1", "1.2.3.4.5", "v1.2", "DE89 3704 0044 0532 0130 00",
     "GB82WEST12345698765432", "SW1A 1AA", "E4 1ZP", "X-E4 1ZP", "4111 1111 1111 1111", "+1 (415) 555-0132",
     "12 Main Street", "Hauptstraße 5", "Weg\t7", " ", "\t", "\n", "-", ".", "+", "/", ":", "a", "Z", "_",
     "\u2019", "\u0142", "\u0663", "\u0663\u0663\u0663-45-6789", "\u2003", "\u0130", "\x1c", "é", "ÄÖÜ"]
)
_TEXTS = st.lists(st.one_of(_PIECES, st.text(alphabet="0123456789 -.:+/AZaz\t", max_size=8)), max_size=30).map("".join)
# What the finders with their own start-finding read: keys, PO boxes, birth words, MACs, streets.
_WORDS = st.sampled_from(
    ["sk-", "task-", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123", "xsk-proj-AbCdEfGhIjKlMnOpQrStUvWx123", "=",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27u", "AKIAIOSFODNN7EXAMPLE", "-",
     "P.O. Box 12", "PO Box 7", "post office box 9", "p", "box", "Box 4, 10115 Berlin Mitte", "born ",
     "date of birth 1/2/1990", "DOB: 03/04/1985", "B\u0131rthdate 01/02/1990", "\u017f", "née le 4 mai 1970", "d.o.b. 1990-01-02", "le",
     "00:1A:2B:3C:4D:5E", "001a.2b3c.4d5e", "0a-1B-2c-3D-4e-5F", ":1a", "-7f", ".beef", "aB3dE5gH7jK9mN1pQ3", "+/=", "x_y", "\u0663", "ª", "²", "fe80::1", "Hauptstraße 5", "x.Weg 5", "Allee\t7a",
     " ", "\n", ".", ",", "a", "1", "\u2019", "\u0130", "\u2003"]
)
_KEY_TEXTS = st.lists(_WORDS, max_size=30).map("".join)


def _spans(found: object) -> list[tuple[int, int]]:
    return [m.span() for m in found]  # type: ignore[attr-defined]


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
@example("SSN 123 45 6789 or 123-45-6789; ip 10.0.0.1, 1.2.3.4.5; IBAN DE89 3704 0044 0532 0130 00 at SW1A 1AA")
@example("\u2019123 45 6789\u2003E4 1ZP \u0142DE89370400440532013000 12 Main Street")
def test_each_finder_tried_at_its_starts_finds_what_finditer_finds(text: str) -> None:
    scan = Scan(text, lower_same(text))
    for rx, starts in [
        (structured._CARD, scan.card_digits()),
        (structured._PHONES[2], scan.phone_digits()),
        (addresses._ADDRESS, scan.address_numbers()),
        (structured._SSN, scan.ssn_shaped()),
        (structured._IPV4, scan.dotted_digits()),
        (structured._IBAN, scan.two_capitals_two_digits()),
        (addresses._POSTCODE_ALONE, scan.capitals_then_digit_after_gap()),
    ]:
        assert _spans(matches_from(text, rx, starts)) == _spans(rx.finditer(text)), rx.pattern[:40]


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_digits_after_a_blank_follow_re_own_classes(text: str) -> None:
    want = [i for i, c in enumerate(text) if re.match(r"\d", c) and i and text[i - 1] in " \t"]
    assert Scan(text, None).digits_after_blank() == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\n", "\t", "\x1c", "\u2003", "\u2019", "é", "\x7f", "x" * 14, "y" * 15]), max_size=12).map("".join))
def test_chunks_are_the_whitespace_free_runs_of_14_or_more(text: str) -> None:
    want, pos = [], 0
    for word in text.split():
        start = text.find(word, pos)
        pos = start + len(word)
        if len(word) >= 14:
            want.append((start, pos))
    assert Scan(text, None).chunks() == want


# The key pattern with its look-behind where it used to be, before the whole alternation.
_KEYS_LOOKING_BEHIND_FIRST = re.compile(r"(?<![\w-])" + re.sub(r"\(\?<!\[\\w-\]\w\)", "", structured._KNOWN_KEYS.pattern))


def _continental_reference(text: str) -> list[tuple[int, int]]:
    """_CONTINENTAL tried at every character, a match kept when its street noun fits."""
    out, p = [], 0
    while p < len(text):
        m = addresses._CONTINENTAL.match(text, p)
        if m and m.group(1).lower().endswith(addresses._CONTINENTAL_NOUNS):
            before = addresses._CAP_BEFORE.search(text, max(0, m.start() - 40), m.start())
            out.append((before.start(1) if before else m.start(), m.end()))
            p = m.end()
        else:
            p += 1
    return out


@settings(max_examples=400, deadline=None)
@given(_KEY_TEXTS)
@example("task-sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123 =sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123 P.O. Box 12 born 1/2/1990")
@example("Lager 3, 10115 Berlin Mitte 5 or Hauptstraße 5, 10115 Berlin; x.Weg 7 and Hans Georg-Conradi-Allee 27")
@example("00:1A:2B:3C:4D:5E:6F 00:1A:2B:3C:4D:5E 0a-1B-2c-3D-4e-5F,001a.2b3c.4d5e.beef x001a.2b3c.4d5e (a0:1a:2b:3c:4d:5e)")
def test_finders_with_their_own_starts_find_what_a_whole_scan_finds(text: str) -> None:
    low = v.lower_same(text)
    scan = Scan(text, low)
    chunks = scan.chunks()
    assert [m.span() for s, e in chunks for m in structured._KNOWN_KEYS.finditer(text, s, e)] == [
        m.span() for s, e in chunks for m in _KEYS_LOOKING_BEHIND_FIRST.finditer(text, s, e)
    ]
    assert _spans(matches_from(text, structured._TOKEN, scan.token_starts())) == _spans(structured._TOKEN.finditer(text))
    t = structured.Text(scan, None)
    assert [f[:2] for f in structured._macs(t)] == [m.span() for m in structured._MAC.finditer(text)]
    if low is not None:
        assert _spans(matches_from(text, addresses._PO_BOX, addresses._po_box_starts(low))) == _spans(addresses._PO_BOX.finditer(text))
        assert _spans(matches_from(text, structured._DOB, structured._dob_starts(low))) == _spans(structured._DOB.finditer(text))
    assert list(addresses._continental(scan)) == _continental_reference(text)


def test_the_byte_map_has_one_byte_per_character_and_the_sentinel() -> None:
    text = "a’ł٣\u2003b"
    assert len(class_bytes(text)) == len(text) + 1
    assert offsets(b"x 0 0y 0", b" 0") == [1, 3, 6]
    assert offsets(b"abc", b" 0") == []


def test_a_street_after_a_city_tail_is_still_found() -> None:
    # "Lager 3, 10115 Berlin" reads like a continental address that is not a street; the street
    # after it must not be lost in its tail.
    spans = Detector(ner=False).detect("Abholung: Lager 3, 10115 Berlin Hauptstraße 5 bitte")
    assert any("Hauptstraße 5" in s.text and s.entity == "ADDRESS" for s in spans), spans


# ---------------------------------------------------------------------------- looks_random
# The rules as they read before the one-pass version: str methods, the camel-word regex, Counter.
_CAMEL_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def _looks_random_reference(token: str) -> bool:
    import math
    from collections import Counter

    if len(token) < 24 or token.lower() == token or token.upper() == token:
        return False
    if sum(map(token.count, "0123456789")) < 2:
        return False
    words = _CAMEL_WORD.findall(token)
    if words and sum(map(len, words)) / len(words) >= 3.5:
        return False
    n = len(token)
    return math.log2(n) - sum(c * math.log2(c) for c in Counter(token).values()) / n >= 3.8


_TOKEN_CHARS = st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=-")
                               + ["ABC", "abc", "Abc", "aB", "12", "Ab1", "XYZw"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_TOKEN_CHARS, min_size=8, max_size=120).map("".join))
@example("sk-WwTKrldIduUqMVx8VmVPymcL1eJSLARXJR6BaH9ANKAw6p5A")  # a key: random
@example("ProxyFactoryBeanDefinitionRegistry42x")  # an identifier: camel words too long
@example("getUserByIdAndOrganisationName2")
@example("ABCdefGHIjklMNOpqrSTUvwx12YZ")
def test_looks_random_keeps_its_rules(token: str) -> None:
    assert v.looks_random(token) == _looks_random_reference(token)


def test_looks_random_on_the_corpus_tokens() -> None:
    keys = ["AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "ghp_k8Jz2QmX7pLw4NvR9tYb3HcF6sDa1GeU0iOq",
            "glpat-" + "xY9z" * 6, "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0", "snake_case_identifier_name_2024_v2",
            "QmFzZTY0IGVuY29kZWQgdGV4dCBoZXJlIDEyMw==", "ThisIsAVeryLongCamelCaseClassName2Factory"]
    assert [v.looks_random(k) for k in keys] == [_looks_random_reference(k) for k in keys]
    assert v.looks_random(keys[1]) and not v.looks_random(keys[3]) and not v.looks_random(keys[4])
    assert not v.looks_random("é" + keys[1])  # not ASCII: never a _TOKEN match, not judged


# ---------------------------------------------------------------------------------- ipv6_ok
def _ipv6_by_ipaddress(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_IPV6_PIECES = st.sampled_from(["::", ":", "0", "1", "ff", "FFFF", "abcd", "12345", "g", "1.2.3.4", "255.255.255.255",
                                "01.2.3.4", "256.1.1.1", "1.2.3", ".", "%eth0", "/64", "é", "fe80", "0:0:0:0"])


@settings(max_examples=4000, deadline=None)
@given(st.one_of(st.lists(_IPV6_PIECES, max_size=14).map("".join),
                 st.text(alphabet="0123456789abcdefABCDEFg:.%/", max_size=45),
                 st.integers(0, 2**128 - 1).map(lambda n: __import__("ipaddress").IPv6Address(n).compressed),
                 st.integers(0, 2**128 - 1).map(lambda n: __import__("ipaddress").IPv6Address(n).exploded)))
@example("::ffff:1.2.3.4")
@example("1:2:3:4:5:6:1.2.3.4")
@example("1:2:3:4:5:6:7::")
@example("::1:2:3:4:5:6:7")
@example("1::2::3")
@example(":1:2:3:4:5:6:7:8")
def test_ipv6_ok_accepts_what_ipaddress_accepts(text: str) -> None:
    assert v.ipv6_ok(text) == _ipv6_by_ipaddress(text)
