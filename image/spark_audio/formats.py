"""OpenAI's non-JSON transcription formats, rendered from segments `{start, end, text}`. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Mapping[str, Any]]) -> str:
    return "".join(f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{str(s['text']).strip()}\n\n"
                   for i, s in enumerate(segments, 1))


def vtt(segments: Sequence[Mapping[str, Any]]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{str(s['text']).strip()}\n\n"
                                  for s in segments)
