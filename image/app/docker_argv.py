"""`docker ... run [docker flags] IMAGE [command]`: docker's options, the image, the container command.

docker's own flags must all be known: the image is the first argument that is not an option or
an option's value, so an unknown flag would leave the pre-flight guessing where it starts.
Short clusters (`-dit`), attached values (`-p8000:8000`, `-e=FOO`), `--flag=value` and pflag's
`--switch=true|false` are read the way docker's CLI (spf13/pflag) reads them.

    parse_docker_run(argv) -> ([(long flag, value or None)], image, container command)
"""

from __future__ import annotations

import difflib
from pathlib import Path

from app.errors import InvalidInput
from app.shell_split import shown_argv

# From `docker run --help` of Docker 28.2 (plus the hidden --net/--net-alias spellings).
_DOCKER_VALUE_FLAGS = frozenset("""
--add-host --annotation --attach --blkio-weight --blkio-weight-device --cap-add --cap-drop --cgroup-parent
--cgroupns --cidfile --cpu-count --cpu-percent --cpu-period --cpu-quota --cpu-rt-period --cpu-rt-runtime
--cpu-shares --cpus --cpuset-cpus --cpuset-mems --detach-keys --device --device-cgroup-rule --device-read-bps
--device-read-iops --device-write-bps --device-write-iops --dns --dns-option --dns-opt --dns-search --domainname
--entrypoint --env --env-file --expose --gpus --group-add --health-cmd --health-interval --health-retries
--health-start-interval --health-start-period --health-timeout --hostname --io-maxbandwidth --io-maxiops --ip
--ip6 --ipc --isolation --kernel-memory --label --label-file --link --link-local-ip --log-driver --log-opt
--mac-address --memory --memory-reservation --memory-swap --memory-swappiness --mount --name --network --net
--network-alias --net-alias --oom-score-adj --pid --pids-limit --platform --publish --pull --restart --runtime
--security-opt --shm-size --stop-signal --stop-timeout --storage-opt --sysctl --tmpfs --ulimit --user --userns
--uts --volume --volume-driver --volumes-from --workdir
""".split())
_DOCKER_BOOL_FLAGS = frozenset("""
--detach --disable-content-trust --help --init --interactive --no-healthcheck --oom-kill-disable --privileged
--publish-all --quiet --read-only --rm --sig-proxy --tty --use-api-socket
""".split())
_DOCKER_SHORT = {"a": "--attach", "c": "--cpu-shares", "e": "--env", "h": "--hostname", "l": "--label",
                 "m": "--memory", "p": "--publish", "u": "--user", "v": "--volume", "w": "--workdir",
                 "d": "--detach", "i": "--interactive", "t": "--tty", "P": "--publish-all", "q": "--quiet"}
_DOCKER_ALIASES = {"--net": "--network", "--net-alias": "--network-alias", "--dns-opt": "--dns-option"}
# `docker [global options] run`: the global options that may come before the subcommand.
_DOCKER_GLOBAL_VALUE = frozenset({"--config", "--context", "-c", "--host", "-H", "--log-level", "-l",
                                  "--tlscacert", "--tlscert", "--tlskey"})
_DOCKER_GLOBAL_BOOL = frozenset({"--debug", "-D", "--tls", "--tlsverify"})
_PFLAG_BOOLS = {"1": "true", "t": "true", "T": "true", "true": "true", "TRUE": "true", "True": "true",
                "0": "false", "f": "false", "F": "false", "false": "false", "FALSE": "false", "False": "false"}


def parse_docker_run(argv: list[str]) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    """docker's options, the image and the container command, from a `docker ... run ...` argv."""
    if not argv or Path(argv[0]).name != "docker":
        raise InvalidInput(f"not a docker command: it starts with {shown_argv(argv, 3)!s}; expected "
                           "`docker run ... <image> vllm serve <model> ...`", field="command")
    i = 1
    while i < len(argv) and argv[i].startswith("-"):  # docker's global options, rarely used
        name, eq, _ = argv[i].partition("=")
        if name in _DOCKER_GLOBAL_VALUE:
            i += 1 if eq else 2
        elif name in _DOCKER_GLOBAL_BOOL:
            i += 1
        else:
            raise InvalidInput(f"unknown docker option {argv[i]!r} before the subcommand", field="command")
    if argv[i:i + 1] == ["run"]:
        i += 1
    elif argv[i:i + 2] == ["container", "run"]:
        i += 2
    else:
        raise InvalidInput(f"not `docker run`: the docker subcommand is {shown_argv(argv[i:], 2)!r}; expected "
                           "`docker run ... <image> vllm serve <model> ...`", field="command")

    options: list[tuple[str, str | None]] = []
    while i < len(argv):
        token = argv[i]
        if token == "--":
            i += 1
            break
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            name = _DOCKER_ALIASES.get(name, name)
            if name in _DOCKER_VALUE_FLAGS:
                if not eq:
                    if i + 1 >= len(argv):
                        raise InvalidInput(f"docker flag {name} has no value (it is the last argument)",
                                           field="command")
                    i += 1
                    value = argv[i]
                options.append((name, value))
            elif name in _DOCKER_BOOL_FLAGS:
                if eq and value not in _PFLAG_BOOLS:
                    raise InvalidInput(f"docker flag {token!r}: {name} is a switch and takes true or false, "
                                       f"not {value!r}", field="command")
                options.append((name, _PFLAG_BOOLS[value] if eq else None))
            else:
                close = difflib.get_close_matches(name, sorted(_DOCKER_VALUE_FLAGS | _DOCKER_BOOL_FLAGS), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise InvalidInput(f"unknown docker run flag {name!r}: the pre-flight cannot tell where the image "
                                   f"name starts{hint}", field="command")
            i += 1
            continue
        if token.startswith("-") and token != "-":
            # pflag short options: switches may be clustered (-dit); a value option takes the rest
            # of the token (-p8000:8000, -e=FOO) or the next argument.
            j = 1
            while j < len(token):
                letter = token[j]
                long = _DOCKER_SHORT.get(letter)
                if long is None:
                    raise InvalidInput(f"unknown docker run flag -{letter} in {token!r}", field="command")
                if long in _DOCKER_VALUE_FLAGS:
                    rest = token[j + 1:]
                    if rest:
                        value = rest[1:] if rest.startswith("=") else rest
                    elif i + 1 < len(argv):
                        i += 1
                        value = argv[i]
                    else:
                        raise InvalidInput(f"docker flag -{letter} ({long}) has no value", field="command")
                    options.append((long, value))
                    break
                if token[j + 1:j + 2] == "=":
                    value = token[j + 2:]
                    if value not in _PFLAG_BOOLS:
                        raise InvalidInput(f"docker flag {token!r}: -{letter} is a switch and takes true or false",
                                           field="command")
                    options.append((long, _PFLAG_BOOLS[value]))
                    break
                options.append((long, None))
                j += 1
            i += 1
            continue
        break
    if i >= len(argv):
        raise InvalidInput("`docker run` has no image: the command ends after docker's flags", field="command")
    return options, argv[i], argv[i + 1:]
