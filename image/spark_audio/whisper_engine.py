"""faster-whisper: a CTranslate2 Whisper model loaded by path, and one transcription -> the body
of OpenAI's verbose_json (the apps derive every other format from it).

`transcribe()` is synchronous: the app runs it, and the loading, in one dedicated thread
(http_common.EngineThread), so one decode at a time; CTranslate2 already uses every core it is
given for one decode. The lock keeps that true for other callers.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("spark_audio.transcribe")


class WhisperEngine:
    def __init__(self, model_path: Path, device: str = "auto", compute_type: str = "auto",
                 cpu_threads: int = 0, beam_size: int = 5) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        started = time.monotonic()
        self.model = WhisperModel(str(model_path), device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads, local_files_only=True)
        self.device, self.beam_size = device, beam_size
        self.multilingual = bool(self.model.model.is_multilingual)
        self._lock = threading.Lock()
        self.transcribe(np.zeros(8000, dtype=np.float32), word_timestamps=True)  # first kernels here, not in a request
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s on %s in %.2f s (multilingual: %s)", model_path, device, self.load_seconds,
                 self.multilingual)

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float | None = None, word_timestamps: bool = False) -> dict[str, Any]:
        """verbose_json: {task, language, duration, text, segments, words (when asked)}."""
        options: dict[str, Any] = {"beam_size": self.beam_size, "word_timestamps": word_timestamps,
                                   "initial_prompt": prompt or None, "vad_filter": False}
        if temperature is not None:
            options["temperature"] = temperature
        with self._lock:
            pieces, info = self.model.transcribe(audio, language=language or None, **options)
            segments, words = [], []
            for piece in pieces:  # a generator: the decoding happens here, under the lock
                segments.append({
                    "id": len(segments), "seek": piece.seek,
                    "start": round(piece.start, 3), "end": round(piece.end, 3), "text": piece.text,
                    "tokens": list(piece.tokens), "temperature": piece.temperature,
                    "avg_logprob": piece.avg_logprob, "compression_ratio": piece.compression_ratio,
                    "no_speech_prob": piece.no_speech_prob})
                words += [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                          for w in piece.words or () if w.word.strip()]
        body: dict[str, Any] = {"task": "transcribe", "language": _language_name(info.language),
                                "duration": round(float(info.duration), 3),
                                "text": "".join(s["text"] for s in segments).strip(), "segments": segments}
        if word_timestamps:
            body["words"] = words
        return body


_NAMES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch",
          "pt": "portuguese", "ja": "japanese", "zh": "chinese", "ko": "korean", "ru": "russian", "pl": "polish"}


def _language_name(code: str) -> str:
    """OpenAI's verbose_json names the language ("english"); unknown codes stay codes."""
    return _NAMES.get(code, code)
