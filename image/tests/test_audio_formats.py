"""The response formats and stream events (app/audio_formats.py), checked against the openai SDK's
own types (validated, not just constructed) and against the subtitle formats' rules."""

from __future__ import annotations

import json

import pytest
from openai.types.audio import (TranscriptionDiarized, TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent,
                                TranscriptionTextSegmentEvent, TranscriptionVerbose)
from openai.types.audio.transcription import Transcription

from app.audio_formats import (Transcript, UnusableTranscript, render, speaker_cues, speaker_labels, stream_events,
                               to_srt, to_vtt)
from app.audio_merge import SpeakerTurn

VERBOSE = {"task": "transcribe", "language": "en", "duration": 3725.5, "text": " Hello there. General Kenobi.",
           "words": [{"word": " Hello", "start": 0.0, "end": 0.5, "probability": 0.9},
                     {"word": " there.", "start": 0.5, "end": 1.0},
                     {"word": " General", "start": 3723.0, "end": 3724.0},
                     {"word": " Kenobi.", "start": 3724.0, "end": 3725.25}],
           "segments": [{"id": 7, "start": 0.0, "end": 1.0, "text": " Hello there.", "avg_logprob": -0.3},
                        {"start": 3723.0, "end": 3725.25, "text": " General Kenobi."},
                        {"start": None, "end": 2.0, "text": "dropped: no start"}]}
TURNS = [SpeakerTurn("SPEAKER_03", 0.0, 1.0, "Hello there.", 0, 2),
         SpeakerTurn("SPEAKER_01", 3723.0, 3725.25, "General Kenobi.", 2, 4)]


def transcript() -> Transcript:
    return Transcript.from_response(VERBOSE)


def test_a_verbose_answer_is_normalised():
    t = transcript()
    assert (t.text, t.language, t.duration) == ("Hello there. General Kenobi.", "en", 3725.5)
    assert t.words[0] == {"word": " Hello", "start": 0.0, "end": 0.5}
    # Segments renumbered in order, the engine's extra fields kept, the missing required ones filled.
    assert [(s["id"], s["start"], s["avg_logprob"]) for s in t.segments] == [(0, 0.0, -0.3), (1, 3723.0, 0.0)]
    assert t.segments[1]["tokens"] == [] and t.segments[1]["seek"] == 0


def test_a_plain_json_answer_has_no_words_and_the_duration_comes_from_the_times():
    t = Transcript.from_response({"text": "hi"})
    assert (t.text, t.words, t.segments, t.duration) == ("hi", None, [], None)
    t = Transcript.from_response({"text": "hi", "segments": [{"start": 0.0, "end": 4.5, "text": "hi"}]})
    assert t.duration == 4.5


@pytest.mark.parametrize("body", [None, [], {"words": []}, {"text": 3}])
def test_an_answer_without_text_is_refused(body):
    with pytest.raises(UnusableTranscript):
        Transcript.from_response(body)


def test_srt_numbers_cues_and_uses_commas_and_hours():
    srt = to_srt(transcript().cues())
    assert srt == ("1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
                   "2\n01:02:03,000 --> 01:02:05,250\nGeneral Kenobi.\n")


def test_vtt_has_its_header_dots_and_voice_spans_for_speakers():
    t = transcript()
    assert to_vtt(t.cues()) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello there.\n\n"
                                "01:02:03.000 --> 01:02:05.250\nGeneral Kenobi.\n")
    cues = speaker_cues(TURNS, speaker_labels(TURNS))
    assert "\n<v A>Hello there.\n" in to_vtt(cues) and "\n[B] General Kenobi.\n" in to_srt(cues)


def test_a_transcript_without_segments_is_one_cue():
    t = Transcript.from_response({"text": "just text", "duration": 2.0})
    assert to_srt(t.cues()) == "1\n00:00:00,000 --> 00:00:02,000\njust text\n"
    assert to_srt(Transcript.from_response({"text": ""}).cues()) == ""


def test_speakers_are_lettered_in_order_of_appearance_unless_known():
    assert speaker_labels(TURNS) == {"SPEAKER_03": "A", "SPEAKER_01": "B"}
    assert speaker_labels(TURNS, ["SPEAKER_01"]) == {"SPEAKER_03": "A", "SPEAKER_01": "SPEAKER_01"}
    assert speaker_labels(TURNS, ["A"]) == {"SPEAKER_03": "B", "SPEAKER_01": "C"}   # a known "A" is not reused
    many = [SpeakerTurn(f"S{i}", i, i + 1, "x", i, i + 1) for i in range(28)]
    assert list(speaker_labels(many).values())[24:] == ["Y", "Z", "AA", "AB"]


def test_json_and_text_follow_the_sdk():
    body, media = render("json", transcript())
    assert media == "application/json"
    parsed = Transcription.model_validate(json.loads(body))
    assert parsed.text == "Hello there. General Kenobi." and parsed.usage.seconds == 3725.5
    assert render("text", transcript()) == ("Hello there. General Kenobi.\n", "text/plain; charset=utf-8")
    cues = speaker_cues(TURNS, speaker_labels(TURNS))
    assert render("text", transcript(), turn_cues=cues)[0] == "A: Hello there.\nB: General Kenobi.\n"


def test_verbose_json_follows_the_sdk_and_its_granularities():
    body = json.loads(render("verbose_json", transcript(), granularities=("word",))[0])
    parsed = TranscriptionVerbose.model_validate(body)
    assert [w.word for w in parsed.words] == ["Hello", "there.", "General", "Kenobi."]
    assert parsed.segments is None
    body = json.loads(render("verbose_json", transcript())[0])   # OpenAI's default: segments only
    assert "words" not in body and len(TranscriptionVerbose.model_validate(body).segments) == 2
    body = json.loads(render("verbose_json", transcript(), granularities=("word", "segment"),
                             word_speakers=["A", "A", "B", "B"])[0])
    assert [w["speaker"] for w in body["words"]] == ["A", "A", "B", "B"] and len(body["segments"]) == 2


def test_diarized_json_follows_the_sdk():
    cues = speaker_cues(TURNS, speaker_labels(TURNS))
    parsed = TranscriptionDiarized.model_validate(json.loads(render("diarized_json", transcript(), turn_cues=cues)[0]))
    assert [(s.speaker, s.text, s.start, s.end) for s in parsed.segments] == [
        ("A", "Hello there.", 0.0, 1.0), ("B", "General Kenobi.", 3723.0, 3725.25)]
    assert parsed.task == "transcribe" and parsed.usage.type == "duration"
    assert [s.id for s in parsed.segments] == ["seg_000", "seg_001"]


def _events(raw: list[bytes]) -> list[dict]:
    out = []
    for chunk in raw:
        text = chunk.decode()
        assert text.startswith("data: ") and text.endswith("\n\n")
        out.append(json.loads(text[6:]))
    return out


def test_stream_events_follow_the_sdk_and_add_up_to_the_text():
    events = _events(list(stream_events(transcript())))
    deltas = [TranscriptionTextDeltaEvent.model_validate(e) for e in events[:-1]]
    done = TranscriptionTextDoneEvent.model_validate(events[-1])
    assert "".join(d.delta for d in deltas) == done.text == "Hello there. General Kenobi."

    cues = speaker_cues(TURNS, speaker_labels(TURNS))
    events = _events(list(stream_events(transcript(), cues)))
    assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.segment"] * 2 + \
        ["transcript.text.done"]
    segments = [TranscriptionTextSegmentEvent.model_validate(e) for e in events if e["type"].endswith("segment")]
    assert [(s.speaker, s.text) for s in segments] == [("A", "Hello there."), ("B", "General Kenobi.")]
    deltas = [TranscriptionTextDeltaEvent.model_validate(e) for e in events if e["type"].endswith("delta")]
    assert [d.segment_id for d in deltas] == [s.id for s in segments]


def test_an_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError):
        render("docx", transcript())
