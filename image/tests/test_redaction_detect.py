"""Structured PII detection: each entity's true positives and its near misses, the allowlist,
the entity subset, overlap resolution, linear time and the span invariants (hypothesis)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.redaction.detect import ENTITIES, Detector, Span

DET = Detector(ner=False)


def found(text: str, entity: str | None = None) -> list[str]:
    return [s.text for s in DET.detect(text) if entity is None or s.entity == entity]


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        ("EMAIL", "write to jane.doe+work@mail.example.co.uk today", "jane.doe+work@mail.example.co.uk"),
        ("PHONE", "call +1 (415) 555-0132 ext. 12 now", "+1 (415) 555-0132 ext. 12"),
        ("PHONE", "or 001-415-555-0132.", "001-415-555-0132"),
        ("PHONE", "London: +44 20 7946 0958", "+44 20 7946 0958"),
        ("PHONE", "desk 415.555.0132", "415.555.0132"),
        ("PHONE", "cell (415) 555-0132 x204", "(415) 555-0132 x204"),
        ("PHONE", "UK 020 7946 0958 office", "020 7946 0958"),
        ("PHONE", "plain 4155550132 here", "4155550132"),
        ("CREDIT_CARD", "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "card 4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("CREDIT_CARD", "amex 378282246310005.", "378282246310005"),
        ("CREDIT_CARD", "then 4111 1111 1111 1111 1234 pin", "4111 1111 1111 1111"),
        ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00"),
        ("IBAN", "to GB82WEST12345698765432", "GB82WEST12345698765432"),
        ("US_SSN", "SSN 123-45-6789.", "123-45-6789"),
        ("US_SSN", "social security number: 123456789", "123456789"),
        ("US_SSN", "ITIN 912-71-3456 on the form", "912-71-3456"),  # area 9xx: an ITIN, personal data
        ("IP_ADDRESS", "host 192.168.1.10:8080", "192.168.1.10"),
        ("IP_ADDRESS", "v6 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334"),
        ("IP_ADDRESS", "mapped ::ffff:10.0.0.1 ok", "::ffff:10.0.0.1"),
        ("MAC_ADDRESS", "mac 00:1A:2B:3C:4D:5E", "00:1A:2B:3C:4D:5E"),
        ("MAC_ADDRESS", "mac 00-1a-2b-3c-4d-5e", "00-1a-2b-3c-4d-5e"),
        ("MAC_ADDRESS", "cisco 001a.2b3c.4d5e", "001a.2b3c.4d5e"),
        ("DATE_OF_BIRTH", "I was born on March 3, 1985 in Ohio", "March 3, 1985"),
        ("DATE_OF_BIRTH", "DOB: 03/04/1985", "03/04/1985"),
        ("DATE_OF_BIRTH", "date of birth 1985-03-04", "1985-03-04"),
        ("DATE_OF_BIRTH", "born 4th of July 1976", "4th of July 1976"),
        ("URL_CREDENTIALS", "dsn postgres://admin:s3cr3t@db.example.com:5432/app", "postgres://admin:s3cr3t@db.example.com:5432"),
        ("SECRET", "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
        ("SECRET", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 leaked", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"),
        ("SECRET", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("SECRET", "gcp AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
        ("SECRET", "hf hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
        ("SECRET", "gl glpat-Ab3De6Gh9Jk2Mn5Pq8St", "glpat-Ab3De6Gh9Jk2Mn5Pq8St"),
        ("SECRET", "slack xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF"),
        ("SECRET", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        ("SECRET", "password: hunter2hunter2", "hunter2hunter2"),
        ("SECRET", "random Zq8Xv3Lp0Rt7Wm2Yk5Nb9Hc4Jd6Fg1Ps", "Zq8Xv3Lp0Rt7Wm2Yk5Nb9Hc4Jd6Fg1Ps"),
        ("ADDRESS", "HQ: 1600 Amphitheatre Parkway, Mountain View, CA 94043.", "1600 Amphitheatre Parkway, Mountain View, CA 94043"),
        ("ADDRESS", "at 221B Baker Street, London NW1 6XE now", "221B Baker Street, London NW1 6XE"),
        ("ADDRESS", "ship to 42 Elm St. Apt 4B, Springfield, IL 62704", "42 Elm St. Apt 4B, Springfield, IL 62704"),
        ("ADDRESS", "office 0487 Nathan Freeway Suite 960\nNorth Brittany, MO 41837", "0487 Nathan Freeway Suite 960\nNorth Brittany, MO 41837"),
        ("ADDRESS", "postcode SW1A 1AA please", "SW1A 1AA"),
        ("ADDRESS", "Hauptstraße 5, 10115 Berlin", "Hauptstraße 5, 10115 Berlin"),
        ("ADDRESS", "PO Box 1234, Austin, TX 78701", "PO Box 1234, Austin, TX 78701"),
    ],
)
def test_true_positive(entity: str, text: str, value: str) -> None:
    assert found(text, entity) == [value]


def test_pem_private_key_block_is_one_secret() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1b2c3\nd4e5f6==\n-----END RSA PRIVATE KEY-----"
    assert found(f"here:\n{key}\nthanks", "SECRET") == [key]
    # A truncated paste (no END line) is still redacted, up to the first character that cannot
    # be part of a PEM body (fail closed: the words after it may go too).
    truncated = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nAAAA"
    assert found(f"{truncated}\n(cut) why?", "SECRET") == [truncated]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "order 1234567890123 is not a card",  # Luhn-invalid 13 digits
        "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
        "SSN 000-12-3456 has area 000",
        "SSN 666-12-3456 has area 666",
        "SSN 123-00-4567 has group 00",
        "SSN 123-45-0000 has serial 0000",
        "ip 999.1.1.1 is out of range",
        "upgrade to version 1.2.3.4 today",
        "tag v10.0.0.1 was cut",
        "time 12:30:45 and ratio 3:2",
        "see std::vector and a::b",
        "date 2024-03-15 and 15/03/2024 without a birth word",
        "timestamp 1700000000 and 3.14159265358979",
        "git sha d41d8cd98f00b204e9800998ecf8427e and 3f786850e387550fdab836ed7e6dc881de23001b",
        "identifier AbstractSingletonProxyFactoryBean2 in Java",
        "uuid 123e4567-e89b-12d3-a456-426614174000 in the log",
        "password: required",
        "walk 5 blocks down the street to the park",
        "a url https://example.com/path?q=1 without credentials",
        "call me at 555-0132",  # seven digits: not enough for a phone
    ],
)
def test_near_miss_is_left_alone(text: str) -> None:
    assert DET.detect(text) == []


def test_allowlist_is_case_insensitive_and_exact() -> None:
    det = Detector(ner=False, allowlist=["Support@Example.com"])
    assert [s.text for s in det.detect("mail support@example.com or bob@example.com")] == ["bob@example.com"]


def test_a_value_inside_an_allowlisted_one_is_still_found() -> None:
    """The finders skip a candidate inside one that outranks it (the outer wins anyway), but not
    when an allowlist is set: the outer may be dropped, and what lies inside must then be there."""
    text = "Call +1 415-555-0132 or wire to DE89 3704 0044 0532 0130 00 today"
    assert [s.text for s in Detector(ner=False).detect(text)] == ["+1 415-555-0132", "DE89 3704 0044 0532 0130 00"]
    allowed = Detector(ner=False, allowlist=["+1 415-555-0132"]).detect(text)
    assert [(s.text, s.entity) for s in allowed] == [("415-555-0132", "PHONE"), ("DE89 3704 0044 0532 0130 00", "IBAN")]


def test_covered_finds_the_span_around_each_ascending_candidate() -> None:
    from app.redaction.structured import Covered

    inside = Covered([(10, 20), (0, 5), (12, 30)])
    assert [inside(s, e) for s, e in [(0, 3), (1, 6), (10, 19), (13, 30), (25, 31), (40, 41)]] == \
        [True, False, True, True, False, False]
    assert Covered(None)(0, 1) is False


def test_entity_subset_detects_only_those() -> None:
    det = Detector(entities=["EMAIL"], ner=False)
    spans = det.detect("a@b.io, 123-45-6789, 192.168.0.1")
    assert [(s.entity, s.text) for s in spans] == [("EMAIL", "a@b.io")]


def test_unknown_entity_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        Detector(entities=["EMAIL", "SOCIAL"], ner=False)
    msg = str(err.value)
    assert "SOCIAL" in msg and all(e in msg for e in ENTITIES)


def test_overlapping_candidates_merge_into_one_span_without_leaking() -> None:
    # A URL with credentials contains an e-mail-like "pass@host": one URL_CREDENTIALS span.
    spans = DET.detect("use https://deploy:pa55word@example.com/x now")
    assert [(s.entity, s.text) for s in spans] == [("URL_CREDENTIALS", "https://deploy:pa55word@example.com")]
    # A street address followed by a MAC whose first byte reads as a state: nothing of the MAC
    # may stay outside a span, whichever entity wins the label.
    text = "Ship to 627 Hicks Ridges. Block AA-03-E7-1B-D1-0B now"
    covered = {i for s in DET.detect(text) for i in range(s.start, s.end)}
    mac = text.index("AA-03")
    assert set(range(mac, mac + 17)) <= covered


def test_detect_many_keeps_texts_apart() -> None:
    out = DET.detect_many(["mail a@b.io", "", "no pii here"])
    assert [[s.text for s in spans] for spans in out] == [["a@b.io"], [], []]


def test_structured_detection_is_linear_and_fast() -> None:
    base = (
        "Quarterly revenue grew 12% to $4.5 million in 2023; see https://docs.example.org/v2 and run "
        "pip install foo==1.2.3 (commit d41d8cd98f00b204e9800998ecf8427e). Contact help@example.com. "
    )
    one_mb = (base * (1_000_000 // len(base) + 1))[:1_000_000]
    t = time.process_time()
    DET.detect(one_mb[:100_000])
    small = time.process_time() - t
    t = time.process_time()
    spans = DET.detect(one_mb)
    big = time.process_time() - t
    assert len(spans) == one_mb.count("@")
    assert big < 2.0, f"1 MB took {big:.2f} s of CPU"
    assert big < 10 * small * 2.5, f"not linear: 100 KB {small:.3f} s, 1 MB {big:.3f} s"


@pytest.mark.parametrize(
    "adversarial",
    ["1 " * 500_000, "12 Ab " * 166_666, "a@" * 500_000, "born " * 200_000, "+1 " * 333_333,
     "-----BEGIN PRIVATE KEY-----\n" * 30_000, "a://b:c" * 140_000, "ab:" * 333_333,
     # one whitespace-free run of 40,000 keys: tokens inside keys are skipped with a pointer
     ",".join(f"sk-{i:06d}aB3dE5fG7hJ9kL1mN" for i in range(40_000)),
     # key prefixes inside one long run: each must be rejected at its first letter, not read to the
     # end of the run (that was quadratic)
     "task-" * 200_000, "-sk" * 333_333, "eyJ" * 333_333],
)
def test_adversarial_megabyte_finishes_fast(adversarial: str) -> None:
    t = time.process_time()
    DET.detect(adversarial)
    assert time.process_time() - t < 3.0


_PIECES = st.sampled_from(
    ["john@x.io", "+1 (415) 555-0132", "4111 1111 1111 1111", "123-45-6789", "10.0.0.1", "::1",
     "00:1A:2B:3C:4D:5E", "born 1/2/1990", "DE89 3704 0044 0532 0130 00", "12 Main Street", " ", "\n",
     ", ", "a", "Z9", "-", "@", ":", ".", "x://u:p@h", "AKIAIOSFODNN7EXAMPLE", "é"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=25).map("".join))
def test_spans_are_in_bounds_sorted_disjoint_and_exact(text: str) -> None:
    spans = DET.detect(text)
    prev_end = 0
    for s in spans:
        assert isinstance(s, Span) and s.entity in ENTITIES
        assert 0 <= s.start < s.end <= len(text)
        assert s.start >= prev_end
        assert s.text == text[s.start : s.end]
        prev_end = s.end


def test_keywords_spelled_with_letters_re_folds_are_still_keywords() -> None:
    # re's IGNORECASE matches "ı" (dotless i) with "i" and "ſ" (long s) with "s"; str.lower keeps
    # them, so the keyword search in the lower-case copy must fold them too.
    assert found("Bırthdate 01/02/1990, thanks", "DATE_OF_BIRTH") == ["01/02/1990"]
    assert found("my ſſn 123456789 ok", "US_SSN") == ["123456789"]


@pytest.mark.parametrize("text", ["465 wells road", "943 park road, Springfield, IL 62704", "12 main street"])
def test_lower_case_street_is_covered_whole(text: str) -> None:
    assert found(f"send it to {text} please", "ADDRESS") == [text]
