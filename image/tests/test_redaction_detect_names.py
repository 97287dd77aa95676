"""Person names with the real spaCy model: NER, conversation-wide propagation, allowlist, and
the fail-closed error when the model cannot be loaded."""

from __future__ import annotations

import pytest

from app.redaction import names as names_mod
from app.redaction.detect import DetectionFailed, Detector


@pytest.fixture(scope="module")
def det() -> Detector:
    return Detector()


def persons(spans: list) -> list[str]:
    return [s.text for s in spans if s.entity == "PERSON"]


def test_ner_finds_a_full_name(det: Detector) -> None:
    assert persons(det.detect("Please draft a follow-up email to Kimberly Murphy about the invoice.")) == [
        "Kimberly Murphy"
    ]


def test_name_found_once_is_redacted_in_every_message(det: Detector) -> None:
    texts = [
        "My colleague Samantha Cooper will join the call.",
        "Did cooper reply yet? And what about SAMANTHA?",  # other case, surname alone
        "Nothing personal in this one.",
    ]
    out = det.detect_many(texts)
    assert persons(out[0]) == ["Samantha Cooper"]
    assert persons(out[1]) == ["cooper", "SAMANTHA"]
    assert out[2] == []


def test_propagation_respects_word_boundaries_and_common_words(det: Detector) -> None:
    out = det.detect_many(["Will Turner signed the lease.", "I will check Turnerville and the will of Turner."])
    # "will" (a common word) only matches capitalised; "Turnerville" is another word.
    assert persons(out[1]) == ["Turner"]


def test_non_english_names_that_the_small_model_calls_org(det: Detector) -> None:
    assert persons(det.detect("I had a call with Patrizia Casini yesterday.")) == ["Patrizia Casini"]


def test_products_and_places_are_not_people(det: Detector) -> None:
    for text in (
        "Explain how Git rebase differs from merge.",
        "Why does my Docker build fail at step 3?",
        "What is the population of Los Angeles compared to San Diego?",
        "Is the Golden Gate Bridge longer than the Brooklyn Bridge?",
        "Compare Microsoft Azure and Google Cloud for hosting a Django app.",
    ):
        assert persons(det.detect(text)) == [], text


def test_allowlisted_name_is_never_returned(det: Detector) -> None:
    d = Detector(allowlist=["Ada Lovelace", "lovelace"])
    texts = ["Ada Lovelace wrote the first program.", "Lovelace was right."]
    assert [persons(s) for s in d.detect_many(texts)] == [[], []]


def test_title_marks_a_name(det: Detector) -> None:
    assert "Okonkwo" in " ".join(persons(det.detect("The results were sent to Dr. Okonkwo this morning.")))


def test_names_and_structured_values_together(det: Detector) -> None:
    spans = det.detect("Reach Adrian Park at adrian.park@example.com or +1 (415) 555-0132.")
    assert [(s.entity, s.text) for s in spans] == [
        ("PERSON", "Adrian Park"),
        ("EMAIL", "adrian.park@example.com"),
        ("PHONE", "+1 (415) 555-0132"),
    ]


def test_ner_off_or_person_excluded_returns_no_person(det: Detector) -> None:
    text = "Kimberly Murphy lives at 42 Elm Street."
    assert persons(Detector(ner=False).detect(text)) == []
    assert persons(Detector(entities=["ADDRESS"]).detect(text)) == []


def test_missing_model_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A model package that cannot be imported must raise DetectionFailed, never return "no PII".
    monkeypatch.setattr(names_mod, "MODEL_PACKAGE", "no_such_spacy_model_pkg")
    d = Detector()
    with pytest.raises(DetectionFailed, match="no_such_spacy_model_pkg"):
        d.detect("Kimberly Murphy")


def test_concurrent_first_use_from_threads_gives_identical_results() -> None:
    from concurrent.futures import ThreadPoolExecutor

    d = Detector()  # fresh instance: its sentence cache is empty, every thread races the NER path
    texts = [f"Message {i}: Kimberly Murphy met Adrian Park at 42 Elm Street, call 415.555.0132." for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(d.detect, texts))
    expected = [("PERSON", "Kimberly Murphy"), ("PERSON", "Adrian Park"), ("ADDRESS", "42 Elm Street"), ("PHONE", "415.555.0132")]
    assert all([(s.entity, s.text) for s in r] == expected for r in results)


def test_words_inside_structured_values_are_not_people(det: Detector) -> None:
    text = "Ship it to 0487 Nathan Freeway Suite 960, North Brittany, MO 41837 or mail nathan.freeway@example.com"
    assert [(s.entity, s.text) for s in det.detect(text)] == [
        ("ADDRESS", "0487 Nathan Freeway Suite 960, North Brittany, MO 41837"),
        ("EMAIL", "nathan.freeway@example.com"),
    ]
