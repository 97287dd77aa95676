"""Placeholders and restore: the tag grammar, normalization, whole and streamed restore (hypothesis:
identical at every split point), and the SSE restorer with per-choice and per-tool-call buffers."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from app.redaction.payload import chat_slots, completion_slots, restore_response
from app.redaction.placeholders import TAG, TagTable, format_tag, normalize
from app.redaction.restore import TextRestorer, json_string_escape, restore
from app.redaction.sse import SSERestorer

TABLE = TagTable({("PERSON", 1): "Ada Lovelace", ("PERSON", 12): "Grace Hopper", ("EMAIL", 2): "ada@example.org",
                  ("CREDIT_CARD", 1): "4111 1111 1111 1111", ("US_SSN", 3): r"078-05-1120 \1 $& (.*)"})


# -- placeholders ----------------------------------------------------------------------------------
def test_tags_are_issued_in_one_form():
    assert format_tag("PERSON", 1) == "[PERSON_1]"
    assert TAG.fullmatch("[CREDIT_CARD_12]")


def test_normalization_makes_one_value_of_its_spellings():
    assert normalize("PERSON", "  Ada\n  LOVELACE ") == normalize("PERSON", "ada lovelace")
    assert normalize("PHONE", "+1 (415) 555-0132") == normalize("PHONE", "14155550132") == "14155550132"
    assert normalize("CREDIT_CARD", "4111-1111-1111-1111") == normalize("CREDIT_CARD", "4111 1111 1111 1111")
    assert normalize("IBAN", "DE89 3704 0044") == normalize("IBAN", "de8937040044")
    assert normalize("PERSON", "Ada Lovelace") != normalize("PERSON", "Ada Byron")


# -- whole-text restore ----------------------------------------------------------------------------
def test_restore_tolerates_case_and_spacing_inside_the_tag():
    for spelling in ("[PERSON_1]", "[person_1]", "[ PERSON_1 ]", "[PERSON 1]", "[Person-1]", "[PERSON_ 1]",
                     "[\tperson 1\t]"):
        assert restore(f"Dear {spelling},", TABLE) == "Dear Ada Lovelace,", spelling
    assert restore("[credit card 1] / [Credit-Card_1]", TABLE) == "4111 1111 1111 1111 / 4111 1111 1111 1111"


def test_restore_leaves_unissued_and_malformed_tags_alone():
    text = "[PERSON_2] [PHONE_1] [FOO] [PERSON_01] [PERSON_1 [PERSON__ _1] [   PERSON_1] [x]"
    assert restore(text, TABLE) == text
    assert restore("[PERSON_1][PERSON_12]", TABLE) == "Ada LovelaceGrace Hopper"


def test_originals_are_inserted_literally_never_as_regex_replacements():
    assert restore("ssn: [US_SSN_3]", TABLE) == r"ssn: 078-05-1120 \1 $& (.*)"


def test_a_tag_is_not_a_pattern_a_tag_from_another_conversation_is_text():
    other = TagTable({("PERSON", 1): "Someone Else"})
    assert restore("[EMAIL_2] [PERSON_1]", other) == "[EMAIL_2] Someone Else"
    assert restore("[EMAIL_2]", TagTable()) == "[EMAIL_2]"


def test_json_escaping_for_tool_call_arguments():
    table = TagTable({("PERSON", 1): 'Zoë "Z" O\\Brien'})
    arguments = restore('{"name": "[PERSON_1]"}', table, json_string_escape)
    assert json.loads(arguments) == {"name": 'Zoë "Z" O\\Brien'}


# -- streamed restore ------------------------------------------------------------------------------
def in_pieces(feed, finish, data, cuts: list[int]) -> list:
    """`data` fed cut at `cuts`, then finished: what came out of each call."""
    out, at = [], 0
    for cut in sorted(cuts) + [len(data)]:
        out.append(feed(data[at:cut]))
        at = cut
    out.append(finish())
    return out


def stream(text: str, cuts: list[int], table: TagTable = TABLE) -> tuple[str, list[str]]:
    restorer = TextRestorer(table)
    pieces = in_pieces(restorer.feed, restorer.flush, text, cuts)
    return "".join(pieces), pieces


def test_streamed_restore_equals_whole_restore_at_every_split_point():
    text = "Hi [person 1], mail [EMAIL_2] or [ PERSON_12 ]; not [PERSON_2] [x] [PERSON_1"
    expected = restore(text, TABLE)
    assert "Ada Lovelace" in expected and "Grace Hopper" in expected and expected.endswith("[PERSON_1")
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert stream(text, [i, j])[0] == expected, (i, j)


def test_only_a_possible_tag_start_is_held_back():
    restorer = TextRestorer(TABLE)
    assert restorer.feed("Hello [PERS") == "Hello "
    assert restorer.pending == "[PERS"
    assert restorer.feed("ON_1] and [") == "Ada Lovelace and "
    assert restorer.feed("note]") == "[note]", "a bracket that cannot become an issued tag goes out at once"
    assert restorer.feed("[PHONE_") == "[PHONE_", "no PHONE tag was issued: nothing to wait for"
    assert restorer.feed("x [EMAIL_3") == "x [EMAIL_3", "EMAIL_3 was never issued (only EMAIL_2)"
    assert restorer.pending == ""


_FRAGMENTS = st.sampled_from([
    "[PERSON_1]", "[person 1]", "[ PERSON_12 ]", "[Person-12]", "[EMAIL_2]", "[email 2 ]", "[CREDIT_CARD_1]",
    "[credit card_1]", "[US_SSN_3]", "[PERSON_2]", "[PERSON_1", "[PERSON", "[", "]", " ", "  ", "_", "-", "1", "2",
    "PERSON", "person", "EMAIL", "credit", "card", "[[", "x", "\t", "é", "[FOO_1]", "[PERSON_123]", "\n",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(alphabet="[] _-12PERSONpersonxé", max_size=6), max_size=30),
       st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_property_streamed_equals_whole_for_random_texts_and_chunkings(fragments, cuts):
    text = "".join(fragments)
    whole = restore(text, TABLE)
    streamed, pieces = stream(text, [c for c in cuts if c <= len(text)])
    assert streamed == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=20))
def test_property_held_tail_is_at_most_one_tag(fragments):
    restorer = TextRestorer(TABLE)
    for fragment in fragments:
        restorer.feed(fragment)
        assert len(restorer.pending) <= len("[ CREDIT_CARD_12 ]"), restorer.pending
        assert restorer.pending == "" or restorer.pending.startswith("[")


# -- payload walk ----------------------------------------------------------------------------------
def test_every_text_field_of_a_chat_request_is_a_slot():
    payload = {"model": "m", "user": "u-1", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": "dev"},
        {"role": "user", "name": "nm", "content": [{"type": "text", "text": "part"},
                                                   {"type": "image_url", "image_url": {"url": "http://x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "send", "arguments": "{\"to\": \"args\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "tool out"},
    ]}
    texts = [slot.text for slot in chat_slots(payload)]
    assert texts == ["sys", "dev", "nm", "part", "{\"to\": \"args\"}", "tool out", "u-1"]


def test_completion_prompts_of_token_ids_are_refused_not_forwarded():
    assert [s.text for s in completion_slots({"prompt": ["a", "b"], "suffix": "c"})] == ["a", "b", "c"]
    try:
        completion_slots({"prompt": [1, 2, 3]})
    except Exception as exc:  # noqa: BLE001
        assert "token ids" in str(exc)
    else:
        raise AssertionError("a token-id prompt was accepted")


def test_non_streamed_answer_restored_including_tool_call_arguments():
    body = {"choices": [{"index": 0, "message": {"content": "Hi [person_1]", "tool_calls": [
        {"function": {"name": "send", "arguments": "{\"to\": \"[EMAIL_2]\"}"}}]}}]}
    out = restore_response(body, TABLE)
    assert out["choices"][0]["message"]["content"] == "Hi Ada Lovelace"
    assert json.loads(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == \
        {"to": "ada@example.org"}


# -- SSE -------------------------------------------------------------------------------------------
def sse(*chunks) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def chunk(index=0, finish=None, **delta):
    return {"id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def collect(raw: bytes) -> dict:
    """Per (choice, field) the concatenated text of an SSE answer, as a client would assemble it."""
    out: dict = {}
    assert raw.endswith(b"data: [DONE]\n\n")
    for event in raw.split(b"\n\n"):
        if not event.startswith(b"data: {"):
            continue
        for choice in json.loads(event[6:])["choices"]:
            for key, value in (choice.get("delta") or {}).items():
                if key == "content":
                    out[(choice["index"], key)] = out.get((choice["index"], key), "") + value
                if key == "tool_calls":
                    for call in value:
                        k = (choice["index"], "tool", call["index"])
                        out[k] = out.get(k, "") + call["function"].get("arguments", "")
            if "text" in choice:
                out[(choice["index"], "text")] = out.get((choice["index"], "text"), "") + choice["text"]
    return out


def run_sse(raw: bytes, cuts: list[int]) -> bytes:
    restorer = SSERestorer(TABLE)
    return b"".join(in_pieces(restorer.feed, restorer.finish, raw, cuts))


def test_sse_choices_and_tool_calls_each_have_their_own_buffer():
    raw = sse(chunk(0, content="Dear [PER"), chunk(1, content="Hi [EMA"), chunk(0, content="SON_1], hi"),
              chunk(0, tool_calls=[{"index": 0, "id": "t", "function": {"name": "send", "arguments": "{\"to\": \"[EM"}}]),
              chunk(0, tool_calls=[{"index": 1, "function": {"arguments": "{\"who\": \"[person"}}]),
              chunk(0, tool_calls=[{"index": 0, "function": {"arguments": "AIL_2]\"}"}}]),
              chunk(1, content="IL_2] bye [PERSON_1"),
              chunk(0, tool_calls=[{"index": 1, "function": {"arguments": " 12]\"}"}}]),
              chunk(0, finish="tool_calls"), chunk(1, finish="stop"))
    out = collect(run_sse(raw, []))
    assert out[(0, "content")] == "Dear Ada Lovelace, hi"
    assert out[(1, "content")] == "Hi ada@example.org bye [PERSON_1", "a tail that never completed is sent as it was"
    assert json.loads(out[(0, "tool", 0)]) == {"to": "ada@example.org"}
    assert json.loads(out[(0, "tool", 1)]) == {"who": "Grace Hopper"}


def test_sse_tail_still_held_at_the_end_goes_out_before_done():
    raw = sse(chunk(0, content="see [PERSON_1"))   # no finish_reason: the upstream just ended
    out = run_sse(raw, [])
    assert collect(out)[(0, "content")] == "see [PERSON_1"
    assert out.index(b"[PERSON_1") < out.index(b"[DONE]")


def test_sse_completions_text_is_restored():
    raw = sse({"choices": [{"index": 0, "text": "x [PERS", "finish_reason": None}]},
              {"choices": [{"index": 0, "text": "ON_1]", "finish_reason": "stop"}]})
    assert collect(run_sse(raw, []))[(0, "text")] == "x Ada Lovelace"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["Dear ", "[PERSON_1]", "[ person 12 ]", "[EMAIL_2]", "[", "]", "x", "é",
                                 "[PERSON_2]", "[credit card 1]", "\n"]), max_size=12),
       st.integers(min_value=1, max_value=7), st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_property_sse_restore_is_identical_at_every_byte_split(fragments, piece, cuts):
    text = "".join(fragments)
    deltas = [text[i:i + piece] for i in range(0, len(text), piece)]
    arguments = json.dumps({"note": text})
    raw = sse(*[chunk(0, content=d) for d in deltas],
              *[chunk(0, tool_calls=[{"index": 0, "function": {"arguments": arguments[i:i + piece]}}])
                for i in range(0, len(arguments), piece)], chunk(0, finish="stop"))
    out = collect(run_sse(raw, [c for c in cuts if c <= len(raw)]))
    assert out.get((0, "content"), "") == restore(text, TABLE)
    assert json.loads(out[(0, "tool", 0)]) == {"note": restore(text, TABLE)}
