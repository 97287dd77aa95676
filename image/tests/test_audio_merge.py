"""The word/speaker merge (app/audio_merge.py): each documented rule, then properties against a
plain O(n*m) reading of the same rules."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from app.audio_merge import (_merge_words_with_speakers, assign_speakers, merge_segments_with_speakers,
                             words_from_segments)


def w(word, start, end):
    return {"word": word, "start": start, "end": end}


def t(start, end, speaker):
    return {"start": start, "end": end, "speaker": speaker}


TWO = [t(0.0, 5.0, "A"), t(5.0, 10.0, "B")]


def test_each_word_gets_the_turn_it_falls_in():
    words = [w("hello", 0.5, 1.0), w("there", 1.1, 1.5), w("hi", 6.0, 6.4), w("back", 6.5, 7.0)]
    assert assign_speakers(words, TWO) == ["A", "A", "B", "B"]


def test_a_word_across_a_boundary_goes_to_the_larger_overlap():
    assert assign_speakers([w("x", 4.0, 5.3)], TWO) == ["A"]   # 1.0 s with A, 0.3 s with B
    assert assign_speakers([w("x", 4.8, 6.0)], TWO) == ["B"]   # 0.2 s with A, 1.0 s with B


def test_a_word_in_a_pause_gets_the_nearest_turn_and_a_tie_goes_to_the_turn_before():
    turns = [t(0.0, 2.0, "A"), t(4.0, 6.0, "B")]
    assert assign_speakers([w("x", 2.2, 2.5)], turns) == ["A"]   # 0.2 s after A, 1.5 s before B
    assert assign_speakers([w("x", 3.5, 3.8)], turns) == ["B"]   # 1.5 s after A, 0.2 s before B
    assert assign_speakers([w("x", 2.5, 3.5)], turns) == ["A"]   # 0.5 s either way
    assert assign_speakers([w("x", 9.0, 9.5)], turns) == ["B"]   # after the last turn
    assert assign_speakers([w("x", -2.0, -1.0)], [t(1.0, 2.0, "C")]) == ["C"]  # before the first


def test_overlapping_speech_is_resolved_by_overlap_then_earlier_turn_then_label():
    # B talks over A: the word lies mostly in B's turn.
    assert assign_speakers([w("x", 3.0, 4.0)], [t(0.0, 3.2, "A"), t(3.0, 6.0, "B")]) == ["B"]
    # Both cover the word whole: the turn that started first wins, whatever the order given.
    assert assign_speakers([w("x", 3.0, 4.0)], [t(2.0, 6.0, "B"), t(0.0, 5.0, "A")]) == ["A"]
    assert assign_speakers([w("x", 3.0, 4.0)], [t(0.0, 5.0, "B"), t(2.0, 6.0, "A")]) == ["B"]
    # Same turn times: the smaller label.
    assert assign_speakers([w("x", 3.0, 4.0)], [t(0.0, 5.0, "Zed"), t(0.0, 5.0, "Amy")]) == ["Amy"]


def test_one_speakers_turns_are_summed():
    # A's two short turns cover 0.6 s of the word, B's one turn 0.5 s.
    turns = [t(0.0, 1.3, "A"), t(1.2, 1.7, "B"), t(1.7, 2.0, "A")]
    assert assign_speakers([w("x", 1.0, 2.0)], turns) == ["A"]


def test_zero_length_and_untimed_words_take_the_previous_words_speaker_else_the_next():
    words = [w("um", 0.2, 0.2), w("yes", 0.5, 1.0), w("and", None, None), w("so", 6.0, 6.0),
             w("okay", 6.1, 6.6), w("right", 7.0, None)]
    # "um" is inside A's turn but zero-length: no previous word, so the next one's (A). "and" has no
    # times: the previous (A). "so" is zero-length at 6.0 (B's turn): still the previous word's (A).
    assert assign_speakers(words, TWO) == ["A", "A", "A", "A", "B", "B"]


def test_words_without_any_usable_time_still_get_a_speaker():
    assert assign_speakers([w("a", None, None), w("b", None, None)], TWO) == ["A", "A"]
    assert assign_speakers([w("a", 7.0, 7.0)], TWO) == ["B"]   # zero-length, alone: the turn at its time


def test_no_turns_means_no_speaker_and_bad_turns_are_ignored():
    words = [w("a", 0.0, 1.0)]
    assert assign_speakers(words, []) == [None]
    assert assign_speakers(words, [t(0.0, 0.0, "A"), t(None, 1.0, "B"), t(2.0, 1.0, "C")]) == [None]
    assert assign_speakers(words, [t(0.0, 0.0, "A"), t(3.0, 4.0, "D")]) == ["D"]


def test_unsorted_words_keep_their_order():
    words = [w("late", 6.0, 6.5), w("early", 1.0, 1.5), w("later", 8.0, 8.5)]
    assert assign_speakers(words, TWO) == ["B", "A", "B"]


def test_words_are_regrouped_into_speaker_turns_with_whisper_spacing_kept():
    words = [w(" I", 0.0, 0.3), w(" don", 0.3, 0.6), w("'t", 0.6, 0.8), w(" know.", 0.8, 1.2),
             w(" Me", 5.2, 5.5), w(" neither.", 5.5, 6.0), w(" Fine.", 1.5, 1.9)]
    turns = _merge_words_with_speakers(words, [t(0.0, 2.0, "A"), t(5.0, 6.5, "B")])
    assert [(x.speaker, x.text, x.first, x.last) for x in turns] == [
        ("A", "I don't know.", 0, 4), ("B", "Me neither.", 4, 6), ("A", "Fine.", 6, 7)]
    assert (turns[0].start, turns[0].end, turns[1].start, turns[1].end) == (0.0, 1.2, 5.2, 6.0)


def test_bare_words_are_joined_with_spaces():
    words = [w("Hello", 0.0, 0.4), w("there", 0.5, 0.9), w("Hi", 6.0, 6.3)]
    turns = _merge_words_with_speakers(words, TWO)
    assert [(x.speaker, x.text) for x in turns] == [("A", "Hello there"), ("B", "Hi")]


def test_a_segment_spanning_a_change_of_speaker_is_split_at_the_word_nearest_the_change():
    # vLLM's Whisper: segments only. 4 words of 5 characters over 0-8 s: 2 s each; B starts at 4 s.
    segments = [{"start": 0.0, "end": 8.0, "text": " alpha bravo charl delta"},
                {"start": 8.0, "end": 9.0, "text": " echo"}]
    turns = merge_segments_with_speakers(segments, [t(0.0, 4.0, "A"), t(4.0, 10.0, "B")])
    assert [(x.speaker, x.text, x.start, x.end) for x in turns] == [
        ("A", "alpha bravo", 0.0, 4.0), ("B", "charl delta echo", 4.0, 9.0)]


def test_segment_time_is_shared_by_characters():
    words = words_from_segments([{"start": 10.0, "end": 13.0, "text": "a bb"}])
    assert words == [w("a", 10.0, 11.0), w("bb", 11.0, 13.0)]
    assert words_from_segments([{"start": None, "end": 1.0, "text": "x y"}]) == [w("x", None, None),
                                                                                 w("y", None, None)]


def test_empty_inputs():
    assert _merge_words_with_speakers([], TWO) == []
    turns = _merge_words_with_speakers([w("a", 0.0, 1.0), w("b", 1.0, 2.0)], [])
    assert [(x.speaker, x.text) for x in turns] == [(None, "a b")]


def _long_recording(n_words: int, n_turns: int, seed: int = 3) -> tuple[list[dict], list[dict]]:
    """Words of 0.12-0.6 s with small gaps, and turns that mostly tile the recording (one in ten
    overlaps the next), three speakers in rotation."""
    rng = random.Random(seed)
    words, now = [], 0.0
    for i in range(n_words):
        length = rng.uniform(0.12, 0.6)
        words.append(w(f" w{i}", now, now + length))
        now += length + rng.choice((0.0, 0.02, 0.05, 0.3))
    step = now / n_turns
    turns = [t(k * step, (k + (1.15 if rng.random() < 0.1 else rng.uniform(0.85, 1.0))) * step, f"S{k % 3}")
             for k in range(n_turns)]
    return words, turns


def _cpu_seconds_to_merge(words: list[dict], turns: list[dict]) -> tuple[float, list]:
    started = time.process_time()
    merged = _merge_words_with_speakers(words, turns)
    return time.process_time() - started, merged


def test_the_merge_grows_linearly_so_long_recordings_stay_cheap():
    # Ten times the words and turns must cost about ten times the CPU, not a hundred (a scan of
    # every pair, WhisperX's way, is 10^11 steps at a million words). A ratio, not a time limit:
    # the absolute figures (1M words x 100k turns) are measured by bench/merge_scaling.py.
    small_words, small_turns = _long_recording(40_000, 4_000)
    words, turns = _long_recording(400_000, 40_000)
    small = min(_cpu_seconds_to_merge(small_words, small_turns)[0] for _ in range(3))
    big, merged = _cpu_seconds_to_merge(words, turns)
    assert big < 40 * small, f"not linear: 40k words {small:.3f} s, 400k words {big:.3f} s"
    assert merged[-1].last == len(words) and len(merged) > 20_000


# --- Properties, against a direct O(n*m) reading of the documented rules ---------------------

def reference(words, turns):
    valid = sorted((x["start"], x["end"], x["speaker"]) for x in turns if x["end"] > x["start"])
    if not valid:
        return [None] * len(words)

    def nearest(a, b):  # no turn overlaps [a, b]: smallest gap, the turn before on a tie, then sort order
        gaps = [((a - e, 0, k) if e <= a else (s - b, 1, k)) for k, (s, e, _) in enumerate(valid)]
        return valid[min(gaps)[2]][2]

    out = []
    for word in words:
        a, b = word["start"], word["end"]
        if a is None or b is None or b <= a:
            out.append(None)
            continue
        total, first = {}, {}
        for s, e, spk in valid:
            overlap = min(b, e) - max(a, s)
            if overlap > 0:
                total[spk] = total.get(spk, 0) + overlap
                first[spk] = min(first.get(spk, s), s)
        out.append(min(total, key=lambda x: (-total[x], first[x], x)) if total else nearest(a, b))
    if all(x is None for x in out):
        for i, word in enumerate(words):
            a, b = word["start"], word["end"]
            if a is not None and b is not None and b >= a:
                containing = [(s, spk) for s, e, spk in valid if s <= a < e]
                out[i] = min(containing)[1] if containing else nearest(a, a)
    prev = next((x for x in out if x is not None), valid[0][2])
    for i, spk in enumerate(out):
        out[i] = spk if spk is not None else prev
        prev = out[i]
    return out


# Whole-number times: summed overlaps are exact, so ties are real ties in both implementations.
time_point = st.integers(0, 60).map(float)


@st.composite
def word_lists(draw):
    items = []
    for i in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["timed", "timed", "timed", "zero", "none"]))
        start = draw(time_point)
        if kind == "none":
            items.append(w(f" w{i}", None, None))
        else:
            items.append(w(f" w{i}", start, start if kind == "zero" else start + draw(st.integers(1, 5))))
    if draw(st.booleans()):
        items.sort(key=lambda x: (x["start"] is None, x["start"] or 0.0))
    return items


turn_lists = st.lists(st.builds(lambda s, d, spk: t(s, s + d, spk), time_point, st.integers(1, 12).map(float),
                                st.sampled_from(["A", "B", "C", "SPEAKER_00"])), min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(word_lists(), turn_lists)
def test_every_word_gets_one_speaker_from_the_turns_by_the_documented_rules(words, turns):
    speakers = assign_speakers(words, turns)
    assert len(speakers) == len(words)
    assert all(s in {x["speaker"] for x in turns} for s in speakers)
    assert speakers == reference(words, turns)


@settings(max_examples=200, deadline=None)
@given(word_lists(), turn_lists)
def test_regrouping_keeps_every_word_in_order_and_the_text_whole(words, turns):
    merged = _merge_words_with_speakers(words, turns)
    assert [i for turn in merged for i in range(turn.first, turn.last)] == list(range(len(words)))
    assert " ".join(turn.text for turn in merged).split() == [x["word"].strip() for x in words]
    speakers = assign_speakers(words, turns)
    for turn in merged:
        assert set(speakers[turn.first:turn.last]) == {turn.speaker}
    assert all(a.speaker != b.speaker for a, b in zip(merged, merged[1:]))
