"""Container commands other than run: ps, logs, stop, kill, rm, inspect.

Each returns an exit code; per-container failures are printed the way docker's
CLI prints daemon errors ("Error response from daemon: ...") and give exit 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

from . import docker_views, images, logfile, state
from .cliflags import UsageError, flags, parse
from .gotemplate import render


def _daemon_error(message: str) -> None:
    print(f"Error response from daemon: {message}", file=sys.stderr)


def _signal_number(name: str) -> int:
    name = name.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))
    except AttributeError as exc:
        raise UsageError(f"invalid signal: {name}") from exc


def _signal_group(container: state.Container, signum: int) -> None:
    """Signal every process of the container (its main process leads its own group)."""
    if container.process_alive():
        try:
            os.killpg(container.pid(), signum)
        except OSError:
            pass


def _wait_stopped(container: state.Container, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while container.status() in ("running", "restarting"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_container(container: state.Container, timeout: float, signum: int = signal.SIGTERM) -> None:
    """docker stop: the stop signal, `timeout` seconds of grace, then SIGKILL."""
    if container.status() not in ("running", "restarting"):
        return
    container.write("stop_requested", 1)  # so no restart policy brings it back
    _signal_group(container, signum)
    if _wait_stopped(container, timeout):
        return
    _signal_group(container, signal.SIGKILL)
    if not _wait_stopped(container, 5) or container.exit_code() is None:
        # The supervisor is gone too: record what docker would report for a SIGKILL.
        container.write("finished_at", time.time())
        container.write("exit_code", 137)


# ---- ps -------------------------------------------------------------------------------

PS_FLAGS = flags(
    ("-a --all", "all"), ("-q --quiet", "quiet"), ("--no-trunc", "no_trunc"), ("-s --size", "size"),
    ("-l --latest", "latest"), ("-f --filter", "filter", "list"), ("--format", "format", "value"),
    ("-n --last", "last", "value"),
)
_PS_FILTERS = ("name", "id", "status", "label", "ancestor", "exited")


def _matches(container: state.Container, key: str, value: str) -> bool:
    if key == "name":
        return re.search(value.lstrip("/"), container.name) is not None
    if key == "id":
        return container.id.startswith(value)
    if key == "status":
        return container.status() == value
    if key == "exited":
        return container.status() == "exited" and str(container.effective_exit_code()) == value
    if key == "ancestor":
        return images.parse_ref(container.config["image"]) == images.parse_ref(value) or (
            ":" not in value and images.parse_ref(container.config["image"]).repository == value
        )
    label_key, has_value, label_value = value.partition("=")
    labels = container.config.get("labels", {})
    return label_key in labels and (not has_value or labels[label_key] == label_value)


def ps(argv: list[str]) -> int:
    opts, args = parse(PS_FLAGS, argv)
    if args:
        raise UsageError('"docker ps" accepts no arguments.')
    wanted: dict[str, list[str]] = {}
    for spec in opts["filter"]:
        key, _, value = spec.partition("=")
        if key not in _PS_FILTERS:
            _daemon_error(f"invalid filter '{key}'")
            return 1
        wanted.setdefault(key, []).append(value)
    containers = state.all_containers()
    if not (opts["all"] or "status" in wanted or "exited" in wanted or opts["latest"] or opts["last"]):
        containers = [c for c in containers if c.status() in ("running", "restarting")]
    containers = [c for c in containers if all(any(_matches(c, k, v) for v in vs) for k, vs in wanted.items())]
    if opts["latest"] or opts["last"]:
        containers = containers[: 1 if opts["latest"] else int(opts["last"])]
    trunc = not opts["no_trunc"]
    if opts["quiet"]:
        template = "{{.ID}}"
    else:
        template = opts["format"]
    rows = [docker_views.ps_row(c, trunc) for c in containers]
    sys.stdout.write(docker_views.format_rows(template, rows, docker_views.PS_HEADERS, docker_views.PS_TABLE))
    return 0


# ---- logs / stop / kill / rm ----------------------------------------------------------

LOGS_FLAGS = flags(
    ("-f --follow", "follow"), ("-t --timestamps", "timestamps"), ("--details", "details"),
    ("-n --tail", "tail", "value"), ("--since", "since", "value"), ("--until", "until", "value"),
)


def logs(argv: list[str]) -> int:
    opts, args = parse(LOGS_FLAGS, argv)
    if len(args) != 1:
        raise UsageError('"docker logs" requires exactly 1 argument.')
    container = state.find_container(args[0])
    if container is None:
        _daemon_error(f"No such container: {args[0]}")
        return 1
    entries, offset = logfile.read_entries(container)
    tail = opts["tail"] or "all"
    if tail != "all":
        try:
            count = int(tail)
        except ValueError:
            count = -1
        entries = entries[-count:] if count > 0 else ([] if count == 0 else entries)
    logfile.print_entries(entries, opts["timestamps"])
    if opts["follow"]:
        logfile.follow(container, offset, opts["timestamps"], lambda: container.status() in ("running", "restarting"))
    return 0


def stop(argv: list[str]) -> int:
    opts, args = parse(flags(("-t --time", "time", "value"), ("-s --signal", "signal", "value")), argv)
    if not args:
        raise UsageError('"docker stop" requires at least 1 argument.')
    signum = _signal_number(opts["signal"] or "TERM")
    status = 0
    for ref in args:
        container = state.find_container(ref)
        if container is None:
            _daemon_error(f"No such container: {ref}")
            status = 1
            continue
        stop_container(container, float(opts["time"] or 10), signum)
        print(ref)
    return status


def kill(argv: list[str]) -> int:
    opts, args = parse(flags(("-s --signal", "signal", "value")), argv)
    if not args:
        raise UsageError('"docker kill" requires at least 1 argument.')
    signum = _signal_number(opts["signal"] or "KILL")
    status = 0
    for ref in args:
        container = state.find_container(ref)
        if container is None:
            _daemon_error(f"No such container: {ref}")
            status = 1
        elif container.status() != "running":
            _daemon_error(f"cannot kill container: {ref}: container {container.id} is not running")
            status = 1
        else:
            if signum == signal.SIGKILL:
                container.write("stop_requested", 1)
                _signal_group(container, signum)
            elif container.process_alive():
                os.kill(container.pid(), signum)  # like docker: to the main process only
            print(ref)
    return status


def rm(argv: list[str]) -> int:
    opts, args = parse(flags(("-f --force", "force"), ("-v --volumes", "volumes"), ("-l --link", "link")), argv)
    if not args:
        raise UsageError('"docker rm" requires at least 1 argument.')
    status = 0
    for ref in args:
        container = state.find_container(ref)
        if container is None:
            _daemon_error(f"No such container: {ref}")
            status = status if opts["force"] else 1  # docker rm -f: reported, not an error
            continue
        if container.status() in ("running", "restarting"):
            if not opts["force"]:
                _daemon_error(
                    f'cannot remove container "/{container.name}": container is running: '
                    "stop the container before removing or force remove"
                )
                status = 1
                continue
            stop_container(container, 0, signal.SIGKILL)
        with state.locked():
            container.remove()
        print(ref)
    return status


# ---- inspect --------------------------------------------------------------------------


def inspect(argv: list[str]) -> int:
    opts, args = parse(flags(("-f --format", "format", "value"), ("-s --size", "size"),
                             ("--type", "type", "value")), argv)
    if not args:
        raise UsageError('"docker inspect" requires at least 1 argument.')
    found, status = [], 0
    for ref in args:
        container = state.find_container(ref) if opts["type"] in (None, "container") else None
        image = images.find_image(ref) if container is None and opts["type"] in (None, "image") else None
        if container is None and image is None:
            print(f"Error: No such object: {ref}", file=sys.stderr)
            status = 1
            continue
        found.append(docker_views.inspect_container(container) if container else docker_views.inspect_image(image))
    if opts["format"]:
        for obj in found:
            print(render(opts["format"], obj))
    else:
        print(json.dumps(found, indent=4, ensure_ascii=False))
    return status
