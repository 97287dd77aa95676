"""A transcript rendered in the OpenAI response formats, and as the OpenAI stream events.

The gateway always asks the transcription service for everything it has (verbose JSON, word
and segment times) and renders what the caller asked for here, so the formats are the same
whichever engine answered: `json`, `text`, `srt`, `vtt`, `verbose_json` and `diarized_json`,
shaped like the openai SDK's types (Transcription, TranscriptionVerbose with TranscriptionWord
and TranscriptionSegment, TranscriptionDiarized with TranscriptionDiarizedSegment) and its
stream events (transcript.text.delta, transcript.text.segment, transcript.text.done). Pure:
no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.audio_merge import SpeakerTurn

FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "diarized_json": "application/json",
                "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
                "vtt": "text/vtt; charset=utf-8"}
# What TranscriptionSegment requires and engines do not always give (vLLM gives start/end/text).
_SEGMENT_DEFAULTS = {"seek": 0, "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0,
                     "no_speech_prob": 0.0}


class UnusableTranscript(ValueError):
    """The transcription service answered 200 with something that is not a transcript."""


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Transcript:
    """What a transcription service said, normalised. `words` is None when it gives none (vLLM)."""

    text: str
    language: str | None = None
    duration: float | None = None
    words: list[dict[str, Any]] | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_response(cls, body: Any) -> "Transcript":
        """From an OpenAI-style answer: verbose_json ({text, language, duration, words, segments})
        or plain json ({text}); words and segments without usable times are dropped."""
        if not isinstance(body, Mapping) or not isinstance(body.get("text"), str):
            raise UnusableTranscript("the answer has no `text` string")
        words = None
        if isinstance(body.get("words"), list):
            words = [{"word": str(w.get("word") or ""), "start": _float(w.get("start")), "end": _float(w.get("end"))}
                     for w in body["words"] if isinstance(w, Mapping)]
        segments = []
        for i, segment in enumerate(body.get("segments") or []):
            if not isinstance(segment, Mapping):
                continue
            start, end = _float(segment.get("start")), _float(segment.get("end"))
            if start is None or end is None:
                continue
            segments.append({**_SEGMENT_DEFAULTS, **segment, "id": i, "start": start, "end": end,
                             "text": str(segment.get("text") or "")})
        duration = _float(body.get("duration"))
        if duration is None:
            ends = [s["end"] for s in segments] + [w["end"] for w in words or () if w["end"] is not None]
            duration = max(ends, default=None)
        language = body.get("language") if isinstance(body.get("language"), str) else None
        return cls(text=body["text"].strip(), language=language, duration=duration, words=words, segments=segments)

    def cues(self) -> list[dict[str, Any]]:
        """Timed pieces of text for subtitles: the segments, else one cue over the whole audio."""
        if self.segments:
            return [{"start": s["start"], "end": s["end"], "text": s["text"].strip(), "speaker": None}
                    for s in self.segments]
        if not self.text:
            return []
        return [{"start": 0.0, "end": self.duration or 0.0, "text": self.text, "speaker": None}]


def speaker_labels(turns: Sequence[SpeakerTurn], known_names: Sequence[str] = ()) -> dict[str | None, str]:
    """The diarizer's labels as the caller sees them: a label that is one of `known_speaker_names[]`
    stays; the others become A, B, C, ... in order of first appearance (OpenAI's labels)."""
    labels: dict[str | None, str] = {}
    known = set(known_names)
    letters = 0
    for turn in turns:
        if turn.speaker in labels:
            continue
        if turn.speaker in known:
            labels[turn.speaker] = turn.speaker
            continue
        name = _letters(letters)
        while name in known:
            letters += 1
            name = _letters(letters)
        labels[turn.speaker] = name
        letters += 1
    return labels


def _letters(n: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: spreadsheet columns."""
    out = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        out = chr(65 + rest) + out
    return out


def speaker_cues(turns: Sequence[SpeakerTurn], labels: Mapping[str | None, str]) -> list[dict[str, Any]]:
    return [{"start": t.start, "end": t.end, "text": t.text, "speaker": labels[t.speaker]} for t in turns if t.text]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(cues: Sequence[Mapping[str, Any]]) -> str:
    blocks = []
    for n, cue in enumerate(cues, 1):
        text = f"[{cue['speaker']}] {cue['text']}" if cue.get("speaker") else cue["text"]
        blocks.append(f"{n}\n{_timestamp(cue['start'], ',')} --> {_timestamp(cue['end'], ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Mapping[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for cue in cues:
        text = f"<v {cue['speaker']}>{cue['text']}" if cue.get("speaker") else cue["text"]  # WebVTT voice span
        blocks.append(f"{_timestamp(cue['start'], '.')} --> {_timestamp(cue['end'], '.')}\n{text}\n")
    return "\n".join(blocks)


def to_text(transcript: Transcript, cues: Sequence[Mapping[str, Any]] | None) -> str:
    """Plain text; with speakers, one `A: text` line per speaker turn."""
    if cues:
        return "".join(f"{cue['speaker']}: {cue['text']}\n" for cue in cues)
    return transcript.text + "\n"


def _usage(transcript: Transcript) -> dict[str, Any] | None:
    return {"type": "duration", "seconds": transcript.duration} if transcript.duration is not None else None


def to_verbose(transcript: Transcript, granularities: Sequence[str],
               speakers: Sequence[str | None] | None = None,
               turn_cues: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """TranscriptionVerbose. Segments by default (as OpenAI); words when asked for. With speakers
    (the `diarize` opt-in) every word carries `speaker`, and `speaker_segments` lists the turns."""
    body: dict[str, Any] = {"task": "transcribe", "language": transcript.language or "unknown",
                            "duration": transcript.duration or 0.0, "text": transcript.text}
    if "segment" in granularities or not granularities:
        body["segments"] = transcript.segments
    if "word" in granularities:
        words = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for w in transcript.words or ()]
        if speakers is not None:
            for word, speaker in zip(words, speakers):
                word["speaker"] = speaker
        body["words"] = [w for w in words if w["start"] is not None and w["end"] is not None]
    if turn_cues is not None:
        body["speaker_segments"] = [dict(cue) for cue in turn_cues]
    usage = _usage(transcript)
    if usage:
        body["usage"] = usage
    return body


def diarized_segments(cues: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "transcript.text.segment", "id": f"seg_{n:03d}", "start": cue["start"], "end": cue["end"],
             "speaker": cue["speaker"], "text": cue["text"]} for n, cue in enumerate(cues)]


def to_diarized(transcript: Transcript, cues: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """TranscriptionDiarized."""
    body: dict[str, Any] = {"task": "transcribe", "duration": transcript.duration or 0.0, "text": transcript.text,
                            "segments": diarized_segments(cues)}
    usage = _usage(transcript)
    if usage:
        body["usage"] = usage
    return body


def render(fmt: str, transcript: Transcript, *, granularities: Sequence[str] = (),
           turn_cues: Sequence[Mapping[str, Any]] | None = None,
           word_speakers: Sequence[str | None] | None = None) -> tuple[str, str]:
    """(body, media type) for a non-streamed answer. `turn_cues` (speaker turns, labelled) when
    speakers were wanted; they replace the segments as cues in srt, vtt and text."""
    cues = list(turn_cues) if turn_cues is not None else transcript.cues()
    if fmt == "json":
        body: Any = {"text": transcript.text}
        if (usage := _usage(transcript)) is not None:
            body["usage"] = usage
    elif fmt == "verbose_json":
        body = to_verbose(transcript, granularities, word_speakers, turn_cues)
    elif fmt == "diarized_json":
        body = to_diarized(transcript, cues)
    elif fmt == "text":
        return to_text(transcript, turn_cues), _MEDIA_TYPES[fmt]
    elif fmt == "srt":
        return to_srt(cues), _MEDIA_TYPES[fmt]
    elif fmt == "vtt":
        return to_vtt(cues), _MEDIA_TYPES[fmt]
    else:
        raise ValueError(f"unknown response_format {fmt!r}")
    return json.dumps(body, ensure_ascii=False), _MEDIA_TYPES[fmt]


def _event(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def stream_events(transcript: Transcript, turn_cues: Sequence[Mapping[str, Any]] | None = None) -> Iterator[bytes]:
    """The SSE body for `stream=true`: transcript.text.delta events (one per segment, or per
    speaker turn with its segment_id) whose deltas add up to the text, a transcript.text.segment
    event after each speaker turn when diarized, then transcript.text.done."""
    if turn_cues is not None:
        for n, segment in enumerate(diarized_segments(turn_cues)):
            delta = segment["text"] if n == 0 else " " + segment["text"]
            yield _event({"type": "transcript.text.delta", "delta": delta, "segment_id": segment["id"]})
            yield _event(segment)
    else:
        pieces = [s["text"] for s in transcript.segments] or [transcript.text]
        sent = False
        for piece in pieces:
            delta = piece if sent else piece.lstrip()
            if delta:
                yield _event({"type": "transcript.text.delta", "delta": delta})
                sent = True
    yield _event({"type": "transcript.text.done", "text": transcript.text})
