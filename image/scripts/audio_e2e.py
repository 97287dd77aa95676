#!/usr/bin/env python3
"""Live-cluster audio check: send FILE to a spark-control gateway for a diarized transcript.

    python image/scripts/audio_e2e.py URL FILE [--model whisper-1] [--language en] [--api-key KEY] [--plain]

URL is the gateway (e.g. http://spark-control:9999). Posts FILE to URL/v1/audio/transcriptions
with response_format=diarized_json (a transcription service, or Whisper on vLLM, and a
diarization service must be running: docs/AUDIO_API.md), then prints the timings (upload +
transcription + diarization + merge, as the client sees it, and the real-time factor) and the
transcript, one `speaker  [start-end]  text` line per speaker turn. With --plain it also times a
plain `json` transcription of the same file, which shows what the speakers cost. Exits 1 with
the gateway's error message when the request fails. Needs only httpx (image/.venv has it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx


def post(url: str, path: Path, data: dict[str, str], api_key: str | None) -> tuple[httpx.Response, float]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.perf_counter()
    with path.open("rb") as audio:
        response = httpx.post(f"{url.rstrip('/')}/v1/audio/transcriptions", data=data, headers=headers,
                              files={"file": (path.name, audio)}, timeout=httpx.Timeout(900.0, connect=10.0))
    return response, time.perf_counter() - started


def fail(response: httpx.Response) -> None:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    print(f"FAILED: HTTP {response.status_code}: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the spark-control gateway, e.g. http://spark-control:9999")
    parser.add_argument("file", type=Path, help="an audio file (wav, mp3, flac, ogg, m4a, webm)")
    parser.add_argument("--model", default="whisper-1")
    parser.add_argument("--language", default=None)
    parser.add_argument("--api-key", default=os.environ.get("SPARK_CONTROL_API_KEY"),
                        help="when the gateway has PROXY_API_KEYS (default: $SPARK_CONTROL_API_KEY)")
    parser.add_argument("--plain", action="store_true", help="also time a plain json transcription")
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")

    data = {"model": args.model, "response_format": "diarized_json"}
    if args.language:
        data["language"] = args.language
    size = args.file.stat().st_size
    print(f"{args.file.name}: {size / 1e6:.2f} MB -> {args.url} (model {args.model})")
    try:
        response, elapsed = post(args.url, args.file, data, args.api_key)
    except httpx.HTTPError as exc:
        print(f"FAILED: the gateway did not answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    if response.status_code != 200:
        fail(response)
    body = response.json()
    duration = body.get("duration") or 0.0
    segments = body.get("segments") or []
    speakers = sorted({s["speaker"] for s in segments})
    rtf = f", real-time factor {elapsed / duration:.3f}" if duration else ""
    print(f"diarized_json: {elapsed:.2f} s for {duration:.1f} s of audio{rtf}; "
          f"{len(segments)} turns, {len(speakers)} speakers ({', '.join(speakers) or 'none'})")
    if args.plain:
        plain = {k: v for k, v in data.items() if k != "response_format"}
        response, plain_elapsed = post(args.url, args.file, plain, args.api_key)
        if response.status_code != 200:
            fail(response)
        print(f"json (no speakers): {plain_elapsed:.2f} s; the speakers cost {elapsed - plain_elapsed:+.2f} s")
    print()
    width = max((len(s) for s in speakers), default=1)
    for segment in segments:
        print(f"{segment['speaker']:<{width}}  [{segment['start']:7.2f}-{segment['end']:7.2f}]  {segment['text']}")


if __name__ == "__main__":
    main()
