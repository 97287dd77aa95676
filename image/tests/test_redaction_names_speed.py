"""The shortcuts that keep person-name NER cheap (names.py) must not change what is found: the
fused token-vector function against thinc's own forward, NER on a window of a long sentence,
sentences cut at blanked structured values, and NER skipped for words of a name the request
already holds (and that skip never cached for the next request)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from app.redaction import names as names_mod
from app.redaction.detect import Detector


def persons(spans: list) -> list[str]:
    return [s.text for s in spans if s.entity == "PERSON"]


SENTENCES = [
    "Please draft a follow-up email to Kimberly Murphy about the invoice.",
    "I had a call with Patrizia Casini yesterday and they sounded worried.",
    "Ask Schroeder to confirm.",
    "What should I tell Geißler about it?",
    "Write a short bio for our new hire Ursula van der Dussen.",
    "Plan a 7-day trip to San Francisco and Lake Tahoe in October.",
    "Is it safe to upgrade Kubernetes from 10.9 to the next minor release?",
    "x",
    "Dear Alcides Adán, thank you for your application to the Berlin office of Siemens AG.",
]


def test_fused_token_vectors_are_bit_identical_to_thinc() -> None:
    finder = Detector()._names
    assert finder is not None
    nlp = finder._model()
    fused = nlp.get_pipe("ner").model.get_ref("tok2vec")
    assert fused._func.__qualname__.startswith("_fuse_tok2vec"), "fused forward not installed"
    # A second copy of the model, as spaCy loads it: thinc's layer-by-layer forward.
    reference = importlib.import_module(names_mod.MODEL_PACKAGE).load(
        exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
    )
    ref_t2v = reference.get_pipe("ner").model.get_ref("tok2vec")
    assert not ref_t2v._func.__qualname__.startswith("_fuse_tok2vec")
    for batch in ([SENTENCES[0]], SENTENCES[:4], SENTENCES):  # one doc, several (padding between docs)
        docs = [nlp.make_doc(s) for s in batch]
        assert np.array_equal(fused.predict(docs), ref_t2v.predict(docs))
    ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(SENTENCES)]
    assert ents == [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in reference.pipe(SENTENCES)]
    assert any(ents)


LONG = (
    "Before the quarterly planning session starts next week we should collect the open questions "
    "from every team, and then {} will walk everyone through the revised budget numbers that "
    "finance approved on the last call, so please make sure the slides are shared in advance."
)


@pytest.mark.parametrize("name", ["Schroeder", "Okafor", "Delahaye"])
def test_name_in_the_middle_of_a_long_sentence_is_found(name: str) -> None:
    # NER reads only a few words around the name; the result must be the whole sentence's.
    text = LONG.format(name)
    assert persons(Detector().detect(text)) == [name]


def test_name_just_after_a_blanked_value_is_found() -> None:
    # The IBAN is blanked out before NER; the sentence restarts after it ("Did Lamb ...").
    spans = Detector().detect("IBAN: DE89 3704 0044 0532 0130 00 Did Lamb reply yet?")
    assert [(s.entity, s.text) for s in spans] == [("IBAN", "DE89 3704 0044 0532 0130 00"), ("PERSON", "Lamb")]


def test_surname_of_a_known_name_is_redacted_and_the_next_request_still_finds_it() -> None:
    d = Detector()
    out = d.detect_many(["Forward the contract to Beverley Lamb once legal approves it.", "Did Lamb reply yet?"])
    assert [persons(s) for s in out] == [["Beverley Lamb"], ["Lamb"]]
    # NER was skipped for "Did Lamb reply yet?" above (Lamb was known); a request holding only
    # that sentence must still find Lamb, not reuse a cached "no name here".
    assert persons(d.detect("Did Lamb reply yet?")) == ["Lamb"]
    # A candidate that is not known still gets NER in the same sentence.
    out = d.detect_many(["Forward the contract to Beverley Lamb.", "Did Lamb and Okafor reply yet?"])
    assert persons(out[1]) == ["Lamb", "Okafor"]


def test_places_and_lone_products_are_not_people_but_names_next_to_them_are() -> None:
    d = Detector()
    for text in (
        "Plan a 7-day trip to San Francisco and Lake Tahoe in October.",
        "Recommend 4 museums in New York City for a rainy Sunday.",
        "Is it safe to upgrade Kubernetes from 10.9 to the next minor release?",
        "Explain the CAP theorem with an example from Cassandra.",
    ):
        assert persons(d.detect(text)) == [], text
    # "Claude" alone is a product, but next to another capitalised word NER still reads it.
    assert persons(d.detect("Claude Garnier will present the roadmap at Thursday's all-hands.")) == ["Claude Garnier"]


def test_an_allowlisted_name_does_not_excuse_ner_for_its_surname() -> None:
    finder = Detector()._names
    assert finder is not None
    texts = ["Forward the contract to Beverley Lamb once legal approves it.", "Did Lamb reply yet?"]
    assert finder.person_names(texts) == ["Beverley Lamb"]  # "Lamb" alone: known, no NER needed
    # The caller will drop "Beverley Lamb": NER must then read "Did Lamb reply yet?" itself.
    assert finder.person_names(texts, allowlist=frozenset({"beverley lamb"})) == ["Beverley Lamb", "Lamb"]


def test_the_detector_passes_its_allowlist_so_a_lone_surname_is_still_redacted() -> None:
    d = Detector(allowlist=["Beverley Lamb"])
    spans = d.detect_many(["Forward the contract to Beverley Lamb once legal approves it.", "Did Lamb reply yet?"])
    assert persons(spans[0]) == [] and persons(spans[1]) == ["Lamb"]
