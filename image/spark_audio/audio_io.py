"""An uploaded file -> 16 kHz mono float32 samples, which both engines take.

soundfile (libsndfile) reads WAV, FLAC and OGG without a subprocess; anything else (MP3, M4A,
WebM...) goes through PyAV (FFmpeg's libraries, a faster-whisper dependency) when it is
installed. Something neither can read is not audio: AudioError, which the apps answer with 400.
"""

from __future__ import annotations

import io

import numpy as np

SAMPLE_RATE = 16000


class AudioError(ValueError):
    pass


def decode(data: bytes) -> np.ndarray:
    if not data:
        raise AudioError("The file is empty.")
    try:
        samples = _with_soundfile(data)
    except Exception:  # noqa: BLE001 - not a format libsndfile knows: try FFmpeg's decoders
        samples = _with_av(data)
    if samples.size == 0:
        raise AudioError("The file holds no audio samples.")
    return samples


def _with_soundfile(data: bytes) -> np.ndarray:
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _with_av(data: bytes) -> np.ndarray:
    try:
        from faster_whisper.audio import decode_audio
    except ImportError:
        raise AudioError("The file is not audio this server can read (WAV, FLAC or OGG).") from None
    try:
        return decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds for garbage input
        raise AudioError(f"The file is not audio this server can read ({type(exc).__name__}): send WAV, "
                         "FLAC, OGG, MP3, M4A or WebM.") from None
