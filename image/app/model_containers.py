"""spark-control's model containers on a node: names, labels, and the commands that stop and list them.

The labels written by `launch.build_launch_command` are what lets the app rebuild its state from
the nodes after a restart: `list_containers_command()` finds every container we started, and
`parse_container_list()` reads the labels back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app import shellsafe

CONTAINER_PREFIX = "spark-control-"
LABEL_PREFIX = "spark-control."
STOP_TIMEOUT_S = 30


def container_name(model_name: str, role: str) -> str:
    name = CONTAINER_PREFIX + model_name + ("-worker" if role == "worker" else "")
    return shellsafe.validate_container_name(name)


def stop_command(container: str, timeout_s: int = STOP_TIMEOUT_S) -> str:
    """Stop gracefully (vLLM frees its memory on SIGTERM), then remove, so the name can be reused."""
    name = shellsafe.validate_container_name(container)
    return (shellsafe.quote_args(["docker", "stop", "-t", str(int(timeout_s)), name]) + " && "
            + shellsafe.quote_args(["docker", "rm", name]))


def remove_if_stopped_command(container: str) -> str:
    """`docker rm` without -f: clears an exited container left by an earlier failed run so its name
    can be reused, and never touches a running one."""
    return shellsafe.quote_args(["docker", "rm", shellsafe.validate_container_name(container)]) + " >/dev/null 2>&1; true"


def list_containers_command() -> str:
    """Every spark-control container on a node, running or not, one JSON object per line."""
    return shellsafe.quote_args(["docker", "ps", "-a", "--no-trunc", "--filter", f"label={LABEL_PREFIX}model",
                                 "--format", "{{json .}}"])


@dataclass(frozen=True)
class ManagedContainer:
    """One line of `list_containers_command()` output, with our labels read back."""

    name: str
    model: str
    served_name: str
    role: str
    placement: tuple[str, ...]
    port: int | None
    state: str   # docker's State: created, running, exited, ...
    status: str  # docker's Status: "Up 3 minutes", "Exited (1) 2 hours ago"
    image: str


def docker_ps_rows(output: str) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """(row, labels) for each line of `docker ps --format '{{json .}}'`; lines that are not a
    JSON object (a warning, a truncated line) are skipped."""
    for line in output.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield row, dict(item.partition("=")[::2] for item in str(row.get("Labels", "")).split(",") if item)


def parse_container_list(output: str) -> list[ManagedContainer]:
    """Parse `docker ps --format '{{json .}}'` lines; lines that are not our containers are skipped."""
    found = []
    for row, labels in docker_ps_rows(output):
        model = labels.get(f"{LABEL_PREFIX}model")
        if not model:
            continue
        port = labels.get(f"{LABEL_PREFIX}port", "")
        found.append(ManagedContainer(
            name=str(row.get("Names", "")), model=model, role=labels.get(f"{LABEL_PREFIX}role", ""),
            served_name=labels.get(f"{LABEL_PREFIX}served-name") or model,
            placement=tuple(p for p in labels.get(f"{LABEL_PREFIX}placement", "").split("+") if p),
            port=int(port) if port.isdigit() else None, state=str(row.get("State", "")),
            status=str(row.get("Status", "")), image=str(row.get("Image", ""))))
    return found


def inspect_command(container: str) -> str:
    """Prints e.g. `running 0` or `exited 1`; exits non-zero when the container does not exist."""
    return shellsafe.quote_args(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                 shellsafe.validate_container_name(container)])


def logs_command(container: str, *, tail: int = 200, follow: bool = False) -> str:
    argv = ["docker", "logs", "--tail", str(int(tail)), *(["--follow"] if follow else [])]
    return shellsafe.quote_args([*argv, shellsafe.validate_container_name(container)]) + " 2>&1"


# The model repos in a node's Hugging Face cache: its `models--org--name` directories.
HF_CACHE_LIST_COMMAND = 'ls -1 "${HF_HOME:-$HOME/.cache/huggingface}/hub" 2>/dev/null; true'


def parse_hf_cache_listing(text: str) -> set[str]:
    """`models--openai--gpt-oss-120b` -> `openai/gpt-oss-120b`."""
    return {line.strip().rstrip("/")[len("models--"):].replace("--", "/", 1)
            for line in text.splitlines() if line.strip().startswith("models--")}
