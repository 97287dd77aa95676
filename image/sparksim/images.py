"""Images on a simulated node: references, the local list (images.json), and the
rule table that says how a container of a given image really runs here.

EXTENSION POINT: `RULES` below. A rule matches "repository:tag" with a glob and may
name a resolver ("module:function", imported lazily inside the container
supervisor) that turns the container's argv (what the user asked docker to run)
into the local argv to exec. Rules can also be added without editing this file:
list modules in $SPARKSIM_IMAGE_PLUGINS (comma-separated); each is imported by
the supervisor and may call `register_rule(...)`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from typing import Callable, Iterator, NamedTuple

from . import state


class ImageRef(NamedTuple):
    repository: str  # as docker prints it: "ubuntu", "nvcr.io/nvidia/vllm"
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def remote_path(self) -> str:
        """The path docker prints in "<tag>: Pulling from <path>"."""
        first = self.repository.split("/", 1)[0]
        if "." in first or ":" in first or first == "localhost":
            return self.repository.split("/", 1)[1] if "/" in self.repository else self.repository
        return self.repository if "/" in self.repository else f"library/{self.repository}"

    @property
    def canonical(self) -> str:
        """What `docker pull` prints last: docker.io/library/ubuntu:latest."""
        first = self.repository.split("/", 1)[0]
        if "." in first or ":" in first or first == "localhost":
            return str(self)
        return f"docker.io/{self.remote_path}:{self.tag}"


def parse_ref(ref: str) -> ImageRef:
    ref = ref.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    if ref.startswith("library/"):
        ref = ref[len("library/") :]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = ref.rsplit(":", 1)
        return ImageRef(repository, tag)
    return ImageRef(ref, "latest")


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- the rule table -----------------------------------------------------------------


class ImageRule:
    def __init__(
        self,
        pattern: str,  # glob on "repository:tag"
        size: int = 100_000_000,  # bytes, what `docker images` shows
        default_cmd: list[str] | None = None,  # the image's CMD; None: sleep forever
        resolver: str | Callable[[list[str], dict], list[str]] | None = None,  # None: exec argv as is
    ):
        self.pattern, self.size, self.resolver = pattern, size, resolver
        self.default_cmd = default_cmd or ["sleep", "infinity"]

    def local_argv(self, argv: list[str], config: dict) -> list[str]:
        if self.resolver is None:
            return argv
        resolve = self.resolver
        if isinstance(resolve, str):
            import importlib

            module_name, _, function_name = resolve.partition(":")
            resolve = getattr(importlib.import_module(module_name), function_name)
        return resolve(argv, config)


RULES: list[ImageRule] = [
    # vLLM images: `vllm serve ...` (and `python3 -m vllm.entrypoints.openai.api_server ...`) run
    # the simulated vLLM server (sparksim/vllm_server.py, tokens from llama.cpp); other commands
    # (bash, sleep, ...) run as is.
    ImageRule("nvcr.io/nvidia/vllm:*", size=21_400_000_000, resolver="sparksim.vllm_server:resolve"),
    # NVIDIA NIMs: the entrypoint needs NGC_API_KEY and serves the sim vLLM server with NIM's health
    # paths (sparksim/nim_runner.py).
    ImageRule("nvcr.io/nim/*", size=14_800_000_000, default_cmd=["/opt/nim/start_server.sh"],
              resolver="sparksim.nim_runner:resolve"),
    # spark_embed (image/spark_embed/Dockerfile, built on a Spark as spark-control/spark-embed, or any
    # tag ending in spark-embed): the real embeddings app under the sim venv (sparksim/spark_embed_runner.py).
    ImageRule("*spark-embed:*", size=9_870_000_000,
              default_cmd=["sh", "-c", 'exec uvicorn spark_embed.app:app --host 0.0.0.0 --port "${PORT:-8001}"'],
              resolver="sparksim.spark_embed_runner:resolve"),
    # Audio services (sparksim/audio_runner.py): speaches' server runs spark_audio's faster-whisper app
    # (Whisper tiny.en, word timestamps); spark-diarize runs spark_audio's resemblyzer diarizer.
    ImageRule("ghcr.io/speaches-ai/speaches:*", size=7_430_000_000, default_cmd=["uvicorn", "--factory",
              "speaches.main:create_app"], resolver="sparksim.audio_runner:resolve_transcription"),
    ImageRule("*spark-diarize:*", size=6_120_000_000,
              default_cmd=["sh", "-c", 'exec uvicorn spark_audio.diarize_app:app --host 0.0.0.0 --port "${PORT:-8002}"'],
              resolver="sparksim.audio_runner:resolve_diarizer"),
    ImageRule("*"),  # generic: run CMD as a local process, or sleep when there is none
]


def register_rule(rule: ImageRule) -> None:
    """Put `rule` ahead of the built-in ones (first match wins)."""
    RULES.insert(0, rule)


def _load_plugins() -> None:
    import importlib

    for module_name in filter(None, os.environ.get("SPARKSIM_IMAGE_PLUGINS", "").split(",")):
        importlib.import_module(module_name.strip())


def rule_for(image: str) -> ImageRule:
    name = str(parse_ref(image))
    return next(rule for rule in RULES if fnmatch.fnmatchcase(name, rule.pattern))


def container_argv(config: dict) -> list[str]:
    """What the container runs in docker's terms: entrypoint + cmd, else the image's CMD."""
    entrypoint, cmd = config.get("entrypoint") or [], config.get("cmd") or []
    if not entrypoint and not cmd:
        return list(rule_for(config["image"]).default_cmd)
    return entrypoint + cmd


def local_argv(config: dict) -> list[str]:
    """What the supervisor actually execs on the simulated node."""
    _load_plugins()
    return rule_for(config["image"]).local_argv(container_argv(config), config)


# ---- the local image list -----------------------------------------------------------


def _images_path():
    return state.state_dir() / "images.json"


def list_images() -> list[dict]:
    return state.read_json(_images_path(), [])


def find_image(ref: str) -> dict | None:
    wanted = parse_ref(ref)
    for image in list_images():
        if (image["repository"], image["tag"]) == (wanted.repository, wanted.tag):
            return image
    if len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref.removeprefix("sha256:")):
        prefix = ref.removeprefix("sha256:")
        return next((i for i in list_images() if i["id"].startswith(prefix)), None)
    return None


def pull_error(ref: str) -> str | None:
    """docker's daemon message when `ref` cannot be pulled, or None if it can."""
    wanted = parse_ref(ref)
    unpullable_file = state.state_dir() / "unpullable"
    listed = unpullable_file.read_text().split() if unpullable_file.exists() else []
    listed_refs = {str(parse_ref(line)) for line in listed}
    if "doesnotexist" in ref or str(wanted) in listed_refs or wanted.repository in listed:
        return (
            f"pull access denied for {wanted.repository}, repository does not exist or may "
            "require 'docker login': denied: requested access to the resource is denied"
        )
    return None


def add_image(ref: str) -> dict:
    wanted = parse_ref(ref)
    record = {
        "repository": wanted.repository,
        "tag": wanted.tag,
        "id": digest_of(f"image:{wanted}"),
        "created": time.time(),
        "size": rule_for(ref).size,
    }
    with state.locked():
        images = [i for i in list_images() if (i["repository"], i["tag"]) != (wanted.repository, wanted.tag)]
        images.append(record)
        state.write_atomic(_images_path(), json.dumps(images, indent=1))
    return record


def remove_image(image: dict) -> None:
    with state.locked():
        images = [i for i in list_images() if (i["repository"], i["tag"]) != (image["repository"], image["tag"])]
        state.write_atomic(_images_path(), json.dumps(images, indent=1))


def pull_seconds() -> float:
    """How long a simulated pull takes to download: $SPARKSIM_STATE/pull_seconds (a test writes it
    on a node), else $SPARKSIM_PULL_DELAY, else 0."""
    path = state.state_dir() / "pull_seconds"
    text = path.read_text().strip() if path.exists() else os.environ.get("SPARKSIM_PULL_DELAY", "")
    try:
        return max(0.0, float(text or 0))
    except ValueError:
        return 0.0


def _layers(wanted: ImageRef) -> list[str]:
    """Fake layer ids, stable per image; more for a bigger image (a NIM has dozens, here up to 12)."""
    count = min(12, 3 + rule_for(str(wanted)).size // 2_000_000_000)
    return [digest_of(f"layer:{wanted}:{n}")[:12] for n in range(count)]


def pull_progress(ref: str, explicit_tag: bool, seconds: float = 0.0) -> Iterator[str]:
    """docker's pull output without a terminal, up to the last layer, spread over `seconds`.

    Without a TTY the CLI drops every message that carries a progress bar (moby's
    jsonmessage.Display: "disable progressbar in non-terminal"), so there are no "Downloading"
    or "Extracting" lines and no byte counts: per layer "Pulling fs layer", "Waiting" (beyond
    the daemon's 3 concurrent downloads), "Verifying Checksum", "Download complete", then
    "Pull complete" once extracted. Killed meanwhile, nothing is registered (the caller adds
    the image after the last layer)."""
    wanted = parse_ref(ref)
    layers = _layers(wanted)
    if not explicit_tag:
        yield "Using default tag: latest"
    yield f"{wanted.tag}: Pulling from {wanted.remote_path}"
    yield from (f"{layer}: Pulling fs layer" for layer in layers)
    yield from (f"{layer}: Waiting" for layer in layers[3:])
    step = seconds / len(layers)
    for layer in layers:
        time.sleep(step * 0.8)
        yield f"{layer}: Verifying Checksum"
        yield f"{layer}: Download complete"
        time.sleep(step * 0.2)
        yield f"{layer}: Pull complete"


def pull_done_lines(ref: str) -> list[str]:
    """What docker prints once the image is registered."""
    wanted = parse_ref(ref)
    return [f"Digest: sha256:{digest_of(f'digest:{wanted}')}", f"Status: Downloaded newer image for {wanted}"]


def pull_lines(ref: str, explicit_tag: bool) -> list[str]:
    """The whole output of an instant pull (no waiting)."""
    return [*pull_progress(ref, explicit_tag), *pull_done_lines(ref)]
