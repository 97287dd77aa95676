"""`docker` on a simulated DGX Spark: the subset of the CLI spark-control uses.

Run as `python3 -m sparksim.docker_cli ARGS...`. Containers are local processes
(see container_supervisor), state lives under $SPARKSIM_STATE (see state.py).
Output and error texts follow Docker 27's CLI so that code written against a real
Spark parses them unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from . import docker_containers, docker_run, docker_views, images, state
from .run_config import DaemonError
from .cliflags import HelpRequested, UsageError, flags, parse
from .gotemplate import TemplateError, render

DOCKER_VERSION, API_VERSION = "27.5.1", "1.47"
_GLOBAL_VALUE_FLAGS = {"-H", "--host", "-c", "--context", "--config", "-l", "--log-level", "--tlscacert",
                       "--tlscert", "--tlskey"}


def images_cmd(argv: list[str]) -> int:
    opts, args = parse(flags(("-a --all", "all"), ("-q --quiet", "quiet"), ("--no-trunc", "no_trunc"),
                             ("--digests", "digests"), ("-f --filter", "filter", "list"),
                             ("--format", "format", "value")), argv)
    listed = sorted(images.list_images(), key=lambda i: i["created"], reverse=True)
    if args:
        wanted = images.parse_ref(args[0])
        listed = [i for i in listed if i["repository"] == wanted.repository
                  and (":" not in args[0].rsplit("/", 1)[-1] or i["tag"] == wanted.tag)]
    rows = [docker_views.image_row(i, not opts["no_trunc"]) for i in listed]
    template = "{{.ID}}" if opts["quiet"] else opts["format"]
    sys.stdout.write(docker_views.format_rows(template, rows, docker_views.IMAGES_HEADERS, docker_views.IMAGES_TABLE))
    return 0


def pull(argv: list[str]) -> int:
    opts, args = parse(flags(("-q --quiet", "quiet"), ("-a --all-tags", "all_tags"),
                             ("--platform", "platform", "value"), ("--disable-content-trust", "dct")), argv)
    if len(args) != 1:
        raise UsageError('"docker pull" requires exactly 1 argument.')
    ref = images.parse_ref(args[0])
    error = images.pull_error(args[0])
    if error:
        print(f"Error response from daemon: {error}", file=sys.stderr)
        return 1
    explicit_tag = ":" in args[0].rsplit("/", 1)[-1]
    if images.find_image(args[0]):
        lines = ([] if explicit_tag else ["Using default tag: latest"]) + [
            f"{ref.tag}: Pulling from {ref.remote_path}",
            f"Digest: sha256:{images.digest_of(f'digest:{ref}')}",
            f"Status: Image is up to date for {ref}",
        ]
    else:
        # Line by line as the layers arrive (flushed: a job reads them from a file meanwhile).
        for line in images.pull_progress(args[0], explicit_tag, images.pull_seconds()):
            if not opts["quiet"]:
                print(line, flush=True)
        images.add_image(args[0])
        lines = images.pull_done_lines(args[0])
    if not opts["quiet"]:
        print("\n".join(lines))
    print(ref.canonical)
    return 0


def rmi(argv: list[str]) -> int:
    opts, args = parse(flags(("-f --force", "force"), ("--no-prune", "no_prune")), argv)
    status = 0
    for ref in args:
        image = images.find_image(ref)
        if image is None:
            print(f"Error response from daemon: No such image: {ref}", file=sys.stderr)
            status = 1
            continue
        users = [c for c in state.all_containers() if c.config.get("image_id") == image["id"]]
        if users and not opts["force"]:
            print(f'Error response from daemon: conflict: unable to remove repository reference "{ref}" '
                  f"(must force) - container {users[0].id[:12]} is using its referenced image {image['id'][:12]}",
                  file=sys.stderr)
            status = 1
            continue
        images.remove_image(image)
        print(f"Untagged: {image['repository']}:{image['tag']}\nDeleted: sha256:{image['id']}")
    return status


def login(argv: list[str]) -> int:
    opts, args = parse(flags(("-u --username", "username", "value"), ("-p --password", "password", "value"),
                             ("--password-stdin", "password_stdin")), argv)
    registry = args[0] if args else "https://index.docker.io/v1/"
    password = opts["password"]
    if password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if opts["password_stdin"]:
        if password is not None:
            print("Error: --password and --password-stdin are mutually exclusive", file=sys.stderr)
            return 1
        if not opts["username"]:
            print("Error: Must provide --username with --password-stdin", file=sys.stderr)
            return 1
        password = sys.stdin.read().rstrip("\r\n")
    if not opts["username"] or not password:
        print("Error: Cannot perform an interactive login from a non TTY device", file=sys.stderr)
        return 1
    if "invalid" in password:  # simulator convention: lets tests exercise a rejected login
        print(f'Error response from daemon: Get "https://{registry}/v2/": unauthorized: authentication required',
              file=sys.stderr)
        return 1
    with state.locked():
        path = state.state_dir() / "logins.json"
        logins = state.read_json(path, {})
        logins[registry] = {"username": opts["username"]}  # never the password
        state.write_atomic(path, json.dumps(logins, indent=1))
    print("Login Succeeded")
    return 0


def logout(argv: list[str]) -> int:
    _, args = parse([], argv)
    registry = args[0] if args else "https://index.docker.io/v1/"
    with state.locked():
        path = state.state_dir() / "logins.json"
        logins = state.read_json(path, {})
        logins.pop(registry, None)
        state.write_atomic(path, json.dumps(logins, indent=1))
    print(f"Removing login credentials for {registry}")
    return 0


def version(argv: list[str]) -> int:
    opts, _ = parse(flags(("-f --format", "format", "value")), argv)
    common = {"Version": DOCKER_VERSION, "ApiVersion": API_VERSION, "Os": "linux", "Arch": "arm64"}
    info = {"Client": dict(common, Context="default"), "Server": dict(common, MinAPIVersion="1.24")}
    if opts["format"]:
        print(render(opts["format"], info))
        return 0
    print(f"Client: Docker Engine - Community\n Version:           {DOCKER_VERSION}\n"
          f" API version:       {API_VERSION}\n OS/Arch:           linux/arm64\n Context:           default\n\n"
          f"Server: Docker Engine - Community\n Engine:\n  Version:          {DOCKER_VERSION}\n"
          f"  API version:      {API_VERSION} (minimum version 1.24)\n  OS/Arch:          linux/arm64")
    return 0


def info(argv: list[str]) -> int:
    opts, _ = parse(flags(("-f --format", "format", "value")), argv)
    containers = state.all_containers()
    running = sum(1 for c in containers if c.status() == "running")
    data = {
        "Containers": len(containers), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(containers) - running, "Images": len(images.list_images()),
        "ServerVersion": DOCKER_VERSION, "Driver": "overlay2", "OSType": "linux", "Architecture": "aarch64",
        "OperatingSystem": "Ubuntu 24.04.3 LTS", "NCPU": 20, "MemTotal": 127600748 * 1024,
        "Runtimes": {"io.containerd.runc.v2": {}, "nvidia": {}, "runc": {}}, "DefaultRuntime": "runc",
        "Name": os.uname().nodename,
    }
    if opts["format"]:
        print(render(opts["format"], data))
        return 0
    print(f"Client: Docker Engine - Community\n Version:    {DOCKER_VERSION}\n Context:    default\n\nServer:\n"
          f" Containers: {data['Containers']}\n  Running: {running}\n  Paused: 0\n"
          f"  Stopped: {data['ContainersStopped']}\n Images: {data['Images']}\n"
          f" Server Version: {DOCKER_VERSION}\n Storage Driver: overlay2\n"
          f" Runtimes: io.containerd.runc.v2 nvidia runc\n Default Runtime: runc\n"
          f" Operating System: {data['OperatingSystem']}\n OSType: linux\n Architecture: aarch64\n"
          f" CPUs: 20\n Total Memory: 121.7GiB\n Name: {data['Name']}")
    return 0


COMMANDS = {
    "run": lambda argv: docker_run.run(argv, dict(os.environ)),
    "ps": docker_containers.ps, "logs": docker_containers.logs, "stop": docker_containers.stop,
    "kill": docker_containers.kill, "rm": docker_containers.rm, "inspect": docker_containers.inspect,
    "images": images_cmd, "pull": pull, "rmi": rmi, "login": login, "logout": logout,
    "version": version, "info": info,
}
# `docker container ls`, `docker image pull`, ... map onto the same commands.
MANAGEMENT = {
    "container": {"ls": "ps", "list": "ps", "ps": "ps", "run": "run", "logs": "logs", "stop": "stop",
                  "kill": "kill", "rm": "rm", "inspect": "inspect"},
    "image": {"ls": "images", "list": "images", "pull": "pull", "rm": "rmi", "inspect": "inspect"},
    "system": {"info": "info"},
}


def _split_global_flags(argv: list[str]) -> list[str]:
    """Global flags before the subcommand (-H, --context, --debug, ...) are accepted and ignored."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_VALUE_FLAGS else 1
    return argv[i:]


def main(argv: list[str]) -> int:
    # Like the Go binary: a reader that goes away (`| head`, a dropped SSH channel) ends us quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = _split_global_flags(argv)
    if not argv:
        print("Usage:  docker [OPTIONS] COMMAND", file=sys.stderr)
        return 0
    command, rest = argv[0], argv[1:]
    if command in MANAGEMENT and rest and rest[0] in MANAGEMENT[command]:
        command, rest = MANAGEMENT[command][rest[0]], rest[1:]
        if command == "inspect" and argv[0] in ("container", "image"):
            rest = ["--type", argv[0], *rest]
    handler = COMMANDS.get(command)
    if handler is None:
        print(f"docker: '{command}' is not a docker command.\nSee 'docker --help'", file=sys.stderr)
        return 1
    docker_run.recover_after_crash()
    try:
        return handler(rest)
    except HelpRequested:
        print(f"Usage:  docker {command} [OPTIONS]")
        return 0
    except UsageError as exc:
        # Flag errors print bare; other usage errors say "docker: " first, as docker does.
        prefix = "" if str(exc).startswith(("unknown", "flag needs", "invalid argument")) else "docker: "
        print(f"{prefix}{exc}\nSee 'docker {command} --help'.", file=sys.stderr)
        return 125
    except DaemonError as exc:
        print(f"docker: Error response from daemon: {exc}.\nSee 'docker run --help'.", file=sys.stderr)
        return 125
    except TemplateError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
