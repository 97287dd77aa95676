"""Service containers on a node: the `docker run` command, names, labels, and reading them back.

Built like the model launches (app/launch.py): an argv of plain strings joined with
shellsafe.quote_args. The one exception is a `~/` volume, whose `$HOME` must expand on the node:
that argument is written `"$HOME"/<quoted rest>`. Secrets never enter the argv: `-e NAME` passes
a variable by name from the node-side shell (app/nim.py fills NGC_API_KEY there from stdin).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app import shellsafe
from app.model_containers import LABEL_PREFIX, docker_ps_rows
from app.service_schema import ServiceEntry

CONTAINER_PREFIX = "sc-svc-"
SERVICE_LABEL = f"{LABEL_PREFIX}service"
_KIND_LABEL = f"{LABEL_PREFIX}service-kind"
_PORT_LABEL = f"{LABEL_PREFIX}service-port"
_STARTED_LABEL = f"{LABEL_PREFIX}service-started"


def container_name(service: str) -> str:
    return shellsafe.validate_container_name(CONTAINER_PREFIX + shellsafe.validate_service_name(service))


def run_argv(entry: ServiceEntry, *, secret_env: tuple[str, ...] = (), started: float | None = None) -> list[str]:
    """`docker run -d ...` for `entry`; `secret_env` names are passed by name only (`-e NAME`)."""
    started = time.time() if started is None else started
    argv = ["docker", "run", "-d", "--name", container_name(entry.name),
            "--label", f"{SERVICE_LABEL}={entry.name}", "--label", f"{_KIND_LABEL}={entry.kind}",
            "--label", f"{_PORT_LABEL}={entry.port}", "--label", f"{_STARTED_LABEL}={int(started)}",
            "--network", "host", "--restart", "no"]
    if entry.gpu:
        argv += ["--gpus", "all"]
    for name in entry.port_env:
        argv += ["-e", f"{shellsafe.validate_env_name(name)}={shellsafe.validate_port(entry.port)}"]
    for name, value in entry.env.items():
        argv += ["-e", f"{shellsafe.validate_env_name(name)}={shellsafe.validate_env_value(value)}"]
    for name in secret_env:
        argv += ["-e", shellsafe.validate_env_name(name)]
    for spec in entry.volumes:
        argv += ["-v", spec]
    argv.append(shellsafe.validate_image(entry.image))
    return argv + [shellsafe.validate_extra_arg(arg) for arg in entry.args]


def shell_command(argv: list[str]) -> str:
    """quote_args, except a `~/` volume source, which the node's shell expands to its $HOME."""
    parts = []
    for index, arg in enumerate(argv):
        if index and argv[index - 1] == "-v" and arg.startswith("~/"):
            shellsafe.validate_path(arg.split(":", 1)[0], field="volume")
            parts.append('"$HOME"/' + shellsafe.quote_arg(arg[2:]))
        else:
            parts.append(shellsafe.quote_arg(arg))
    return " ".join(parts)


def list_command() -> str:
    """Every service container on a node, running or not, one JSON object per line."""
    return shellsafe.quote_args(["docker", "ps", "-a", "--no-trunc", "--filter", f"label={SERVICE_LABEL}",
                                 "--format", "{{json .}}"])


@dataclass(frozen=True)
class ServiceContainer:
    """One line of `list_command()` output, with our labels read back."""

    node: str
    name: str
    service: str
    kind: str
    port: int | None
    started: float | None
    state: str   # docker's State: created, running, exited, ...
    status: str  # docker's Status: "Up 3 minutes", "Exited (1) 2 hours ago"
    image: str

    @property
    def exit_code(self) -> int | None:
        """From "Exited (1) 2 hours ago"; None while running."""
        if not self.status.startswith("Exited ("):
            return None
        code = self.status[len("Exited ("):].partition(")")[0]
        return int(code) if code.lstrip("-").isdigit() else None


def parse_list(node: str, output: str) -> list[ServiceContainer]:
    found = []
    for row, labels in docker_ps_rows(output):
        service = labels.get(SERVICE_LABEL)
        if not service:
            continue
        port, started = labels.get(_PORT_LABEL, ""), labels.get(_STARTED_LABEL, "")
        found.append(ServiceContainer(
            node=node, name=str(row.get("Names", "")), service=service, kind=labels.get(_KIND_LABEL, ""),
            port=int(port) if port.isdigit() else None, started=float(started) if started.isdigit() else None,
            state=str(row.get("State", "")), status=str(row.get("Status", "")), image=str(row.get("Image", ""))))
    return found
