"""The vLLM pre-flight: read a built `docker run ... vllm serve ...` command back and refuse it
before any SSH call if it cannot work.

It works on the COMMAND STRING, exactly what would run in the node's shell, not on the
structures that built it: `shlex.split(command)` must give back the argv (shellsafe's
invariant), and a command that the node's shell would read differently from shlex (an
unquoted `;`, `$(...)`, a glob) is refused outright.

    parse_launch_command(command) -> ParsedLaunch     docker's flags, the image, vLLM's flags
    check_launch([(node, command), ...], ...) -> Verdict
    raise_for_problems(verdict)                       InvalidInput (HTTP 400) naming every problem
    NODE_FACTS_COMMAND / parse_node_facts(output)     MemAvailable, listening ports, images, containers

Checks, in this order (docs/PREFLIGHT.md has examples of every message):

1. syntax: every command splits, is `docker run [docker flags] IMAGE vllm serve MODEL [flags]`,
   every vLLM flag exists in `vllm_args.json` (the option table of one real vLLM release; the
   closest name is suggested), has its value, and numbers parse and are in range;
2. topology: tensor x pipeline (x data) parallel equals the GPUs of the placement; multi-node
   commands agree on the model and the parallel layout, have --nnodes = node count, ranks
   0..n-1, --headless on every worker and the same --master-addr/--master-port;
3. memory: the weights fit in gpu-memory-utilization x usable memory x nodes;
4. node facts (when given): each node's MemAvailable (less a headroom) covers what vLLM will
   claim, the API port (and the master port) is free, the image is present or pullable, no
   container of the same name is running.

Pure functions: no I/O except reading the bundled flag table once. Facts about nodes are
passed in. Memory figures are in GB of 2**30 bytes (what vLLM's logs and `free -g` call GiB;
a Spark's MemTotal of 127600748 kB is 121.7 of them).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from app.errors import InvalidInput
from app.probes import SectionOutput, exit_status_problem, parse_meminfo, split_sections

GB = 2**30
DEFAULT_USABLE_MEMORY_GB = 121.0
MEMORY_HEADROOM_GB = 4.0       # kept free beyond what vLLM claims: unified-memory OOM can wedge a Spark
MAX_GPU_MEMORY_UTILIZATION = 0.95  # the highest value the pre-flight ever suggests
KV_CACHE_WARN_GB = 2.0         # less than this left per node after the weights: warn
VLLM_ARGS_PATH = Path(__file__).with_name("vllm_args.json")

# ---------------------------------------------------------------- the flag table


@dataclass(frozen=True)
class FlagSpec:
    """One option string of `vllm serve`, as vLLM's own argparse parser defines it."""

    name: str
    canonical: str              # the flag it is a spelling of: -tp -> --tensor-parallel-size
    takes_value: bool
    nargs: str | None = None    # None: one value; "?": optional value; "+": one or more
    type: str | None = None     # int, float, human_int, bool, json, str (value flags only)
    choices: tuple[str, ...] | None = None
    default: Any = None
    negatable: bool = False     # BooleanOptionalAction: --no-<name> also exists
    negation: bool = False      # this is the --no-<name> spelling
    repeatable: bool = False    # action="append"
    deprecated: bool = False
    help: bool = False


@dataclass(frozen=True)
class VllmFlagTable:
    version: str
    source: str
    allow_abbrev: bool
    flags: dict[str, FlagSpec]

    def spec(self, name: str) -> FlagSpec | None:
        return self.flags.get(name)

    def default(self, canonical: str) -> Any:
        spec = self.flags.get(canonical)
        return spec.default if spec else None


def load_vllm_flags(path: Path | str | None = None) -> VllmFlagTable:
    """The flag table in `path` (default: the bundled app/vllm_args.json)."""
    if path is None:
        return _bundled_flags()
    return _read_flags(Path(path))


@lru_cache(maxsize=1)
def _bundled_flags() -> VllmFlagTable:
    return _read_flags(VLLM_ARGS_PATH)


def _read_flags(path: Path) -> VllmFlagTable:
    data = json.loads(path.read_text(encoding="utf-8"))
    flags = {}
    for name, entry in data["flags"].items():
        choices = entry.get("choices")
        flags[name] = FlagSpec(
            name=name, canonical=entry.get("canonical", name), takes_value=bool(entry["takes_value"]),
            nargs=entry.get("nargs"), type=entry.get("type"), choices=tuple(choices) if choices else None,
            default=entry.get("default"), negatable=bool(entry.get("negatable")),
            negation=bool(entry.get("negation")), repeatable=bool(entry.get("repeatable")),
            deprecated=bool(entry.get("deprecated")), help=bool(entry.get("help")))
    return VllmFlagTable(version=str(data["vllm_version"]), source=str(data.get("source", "")),
                         allow_abbrev=bool(data.get("allow_abbrev", True)), flags=flags)


# ---------------------------------------------------------------- docker run's own flags

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

# ---------------------------------------------------------------- parsed command


@dataclass(frozen=True)
class FlagUse:
    """One vLLM flag as it appears in the command."""

    written: str                   # as written: "-tp", "--max_model_len=4096", "--no-enable-prefix-caching"
    flag: str                      # canonical name: "--tensor-parallel-size", "--enable-prefix-caching"
    value: str | list[str] | bool  # True/False for switches, a list for nargs="+" flags
    key: str | None = None         # the sub-key of a dotted JSON flag: --compilation-config.level -> "level"


@dataclass(frozen=True)
class ParsedLaunch:
    """`docker run [docker flags] IMAGE vllm serve MODEL [vLLM flags]`, taken apart."""

    command: str
    argv: tuple[str, ...]
    docker_options: tuple[tuple[str, str | None], ...]  # (long flag, value or None for a switch), in order
    image: str
    container_command: tuple[str, ...]   # from "vllm" on
    model: str | None
    vllm_argv: tuple[str, ...]           # everything after "vllm serve"
    uses: tuple[FlagUse, ...]
    flags: dict[str, Any]                # canonical flag -> effective value (last one wins, like argparse)
    problems: tuple[str, ...] = ()       # vLLM flag problems (unknown, missing value, bad number)
    warnings: tuple[str, ...] = ()
    vllm_version: str = ""

    def get(self, flag: str, default: Any = None) -> Any:
        return self.flags.get(flag, default)

    def docker_values(self, flag: str) -> list[str]:
        return [value for name, value in self.docker_options if name == flag and value is not None]

    def docker_value(self, flag: str) -> str | None:
        values = self.docker_values(flag)
        return values[-1] if values else None

    def has_docker_flag(self, flag: str) -> bool:
        return any(name == flag for name, _ in self.docker_options)

    @property
    def container_name(self) -> str | None:
        return self.docker_value("--name")

    @property
    def env(self) -> dict[str, str | None]:
        """-e/--env as {NAME: value}; None for `-e NAME` (passed through from the node)."""
        result: dict[str, str | None] = {}
        for item in self.docker_values("--env"):
            name, sep, value = item.partition("=")
            result[name] = value if sep else None
        return result

    @property
    def headless(self) -> bool:
        return self.flags.get("--headless") is True

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "model": self.model, "container": self.container_name,
                "docker_options": [list(option) for option in self.docker_options],
                "vllm_flags": self.flags, "problems": list(self.problems), "warnings": list(self.warnings)}


# ---------------------------------------------------------------- the shell's view of the command


def _shell_hazards(command: str) -> list[str]:
    """Where the node's shell would read `command` differently from shlex.split.

    shlex.split knows quoting but not operators, expansions or globs; a command that relies
    only on quoting (what shellsafe.quote_args produces) has none of these. `"$HOME"` is the
    one expansion a launch command may use (the Hugging Face cache mount).
    """
    found: list[str] = []
    state = None  # None (unquoted), "'" or '"'
    word_start = True
    i = 0
    while i < len(command):
        char = command[i]
        if state == "'":
            if char == "'":
                state = None
            i += 1
            continue
        if char == "\\":
            if state is None and command[i + 1:i + 2] in ("\n", "\r"):
                found.append("an unquoted backslash line continuation (the shell drops it, shlex keeps the newline)")
            i += 2
            word_start = False
            continue
        if state == '"':
            if char == '"':
                state = None
            elif char == "`":
                found.append("a backtick command substitution inside double quotes")
            elif char == "$":
                hazards, i = _dollar_hazard(command, i)
                found.extend(hazards)
                continue
            i += 1
            continue
        # unquoted
        if char in "'\"":
            state = char
            word_start = False
        elif char in " \t":
            word_start = True
        elif char in "\n\r":
            found.append("an unquoted line break (the shell would start a second command)")
        elif char in ";&|<>()":
            found.append(f"the unquoted shell operator {char!r}")
            word_start = True
        elif char == "`":
            found.append("an unquoted backtick command substitution")
        elif char == "$":
            hazards, i = _dollar_hazard(command, i)
            found.extend(hazards)
            word_start = False
            continue
        elif char in "{}":
            found.append(f"an unquoted {char!r} (bash brace expansion)")
            word_start = False
        elif char in "*?[":
            found.append(f"the unquoted glob character {char!r} (the shell would expand it to file names)")
            word_start = False
        elif char == "#" and word_start:
            found.append("an unquoted '#' (the shell would ignore the rest of the line)")
            word_start = False
        elif char == "~" and word_start:
            found.append("an unquoted '~' (the shell would expand it to a home directory; use \"$HOME\")")
            word_start = False
        else:
            word_start = False
        i += 1
    if state is not None:
        found.append(f"an unclosed {state} quote")
    return list(dict.fromkeys(found))


def _dollar_hazard(command: str, at: int) -> tuple[list[str], int]:
    """(hazards, index after the expansion) for the `$` at `at`; $HOME and ${HOME} are allowed."""
    rest = command[at + 1:]
    home = re.match(r"HOME(?![A-Za-z0-9_])|\{HOME\}", rest)
    if home:
        return [], at + 1 + home.end()
    if rest.startswith("("):
        depth, end = 0, at + 1
        while end < len(command):
            depth += {"(": 1, ")": -1}.get(command[end], 0)
            end += 1
            if depth == 0:
                break
        return ["a $(...) command substitution"], end
    match = re.match(r"\{?([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])\}?", rest)
    if match:
        return [f"the shell expansion ${match.group(1)}"], at + 1 + match.end()
    return ["a '$' the shell would interpret"], at + 1


def _split(command: str) -> list[str]:
    if not isinstance(command, str):
        raise InvalidInput(f"the launch command must be text, got {type(command).__name__}", field="command")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidInput(f"shlex cannot split the command: {exc}", field="command") from None
    hazards = _shell_hazards(command)
    if hazards:
        raise InvalidInput("the command is not a plain quoted argument list: it contains " + "; ".join(hazards)
                           + ". The node's shell would run something else than what the pre-flight reads; "
                           "build it with shellsafe.quote_args", field="command")
    return argv


# ---------------------------------------------------------------- docker run


def _shown(argv: Sequence[str], limit: int = 8) -> str:
    text = " ".join(shlex.quote(a) for a in argv[:limit])
    return text + (" ..." if len(argv) > limit else "")


def _parse_docker(argv: list[str]) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    """docker's options, the image and the container command, from a `docker ... run ...` argv."""
    if not argv or Path(argv[0]).name != "docker":
        raise InvalidInput(f"not a docker command: it starts with {_shown(argv, 3)!s}; expected "
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
        raise InvalidInput(f"not `docker run`: the docker subcommand is {_shown(argv[i:], 2)!r}; expected "
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


# ---------------------------------------------------------------- vllm serve

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse reads these as values, not options
_UNDERSCORED_NAME = re.compile(r"(?<=--)[^.]*")        # vLLM's FlexibleArgumentParser turns _ into - here


def _looks_like_option(token: str, table: VllmFlagTable) -> bool:
    """argparse's rule (_parse_optional): known names first, then negative numbers and spaces are values."""
    if not token.startswith("-") or token == "-":
        return False
    name = token.partition("=")[0]
    if token in table.flags or name in table.flags:
        return True
    if name.startswith("--") and any(flag.startswith(name) for flag in table.flags):
        return True  # an abbreviation
    # no option of vllm serve looks like a negative number, so "-1" is a value
    return not _NEGATIVE_NUMBER.match(token) and " " not in token


def _resolve(name: str, table: VllmFlagTable) -> tuple[FlagSpec | None, str | None, str | None]:
    """(spec, warning, problem) for an option name: exact, then argparse's unique-prefix rule."""
    spec = table.spec(name)
    if spec is not None:
        return spec, None, None
    if name.startswith("--") and table.allow_abbrev and len(name) > 2:
        matches = sorted({table.flags[f].name for f in table.flags if f.startswith(name) and f.startswith("--")})
        if len(matches) == 1:
            full = table.flags[matches[0]]
            return full, (f"{name} is an abbreviation that vLLM {table.version} reads as {full.name}; "
                          f"write the full name"), None
        if len(matches) > 1:
            shown = ", ".join(matches[:6]) + (", ..." if len(matches) > 6 else "")
            return None, None, f"{name} is ambiguous in vLLM {table.version}: it could be {shown}"
    return None, None, _unknown_flag(name, table)


def _unknown_flag(name: str, table: VllmFlagTable) -> str:
    message = f"{name} is not a vLLM {table.version} flag"
    if name.startswith("--no-"):
        base = table.spec("--" + name[5:])
        if base is not None and not base.negatable:
            kind = "is off unless given" if not base.takes_value else "takes a value"
            return f"{message}: {base.name} cannot be negated ({base.name} {kind})"
    candidates = [f for f in table.flags if f.startswith("--") == name.startswith("--")]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"{message}; did you mean {close[0]}?" if close else message


def _check_value(spec: FlagSpec, value: str, written: str) -> str | None:
    """None if argparse would accept `value` for `spec`, else why not."""
    shown = f"{written.split('=', 1)[0]} {shlex.quote(value)}"
    try:
        if spec.type == "int":
            number: Any = int(value)
        elif spec.type == "human_int":
            number = _human_int(value)
        elif spec.type == "float":
            number = float(value)
            if not math.isfinite(number):
                return f"{shown}: {spec.canonical} must be a finite number"
        else:
            number = value
    except ValueError:
        kind = {"int": "a whole number", "human_int": "a whole number such as 32768, 32k or 32K",
                "float": "a number"}[spec.type or "int"]
        return f"{shown}: {spec.canonical} takes {kind}"
    if spec.choices is not None and str(number) not in spec.choices:
        return f"{shown}: {spec.canonical} must be one of {', '.join(spec.choices)}"
    return None


def _human_int(value: str) -> int:
    """vLLM's human_readable_int: 32768, 32k (x1000), 32K (x1024); decimals only with k/m/g."""
    text = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if match:
        number, suffix = match.groups()
        if suffix in "kmg":
            return int(float(number) * {"k": 10**3, "m": 10**6, "g": 10**9}[suffix])
        if suffix in "KMG":
            return int(number) * {"K": 2**10, "M": 2**20, "G": 2**30}[suffix]
    return int(text)


def _parse_vllm(args: list[str], table: VllmFlagTable
                ) -> tuple[str | None, list[FlagUse], list[str], list[str]]:
    """The model and the flag uses of `vllm serve` arguments, mirroring vLLM's parser."""
    model: str | None = None
    uses: list[FlagUse] = []
    problems: list[str] = []
    warnings: list[str] = []
    positional_only = False
    i = 0

    def take_model(value: str, written: str) -> None:
        nonlocal model
        if model is not None:
            problems.append(f"the model is given twice ({model!r} and {value!r} from {written})")
        else:
            model = value

    while i < len(args):
        token = args[i]
        i += 1
        if token == "--" and not positional_only:
            positional_only = True  # argparse: everything after a bare -- is positional
            continue
        if positional_only or not _looks_like_option(token, table):
            if model is None:
                take_model(token, "the first argument")
            else:
                problems.append(f"unexpected argument {token!r}: vllm serve takes one model ({model!r}) and "
                                "flags; is a flag missing before it, or does a flag take no value?")
            continue

        # -O3, -O=3, -O 3: compilation mode shorthand (FlexibleArgumentParser)
        if token.startswith("-O") and not token.startswith("-O."):
            if token == "-O":
                if i < len(args) and args[i] in ("0", "1", "2", "3"):
                    uses.append(FlagUse(token, "--compilation-config", args[i], key="mode"))
                    i += 1
                    continue
            else:
                uses.append(FlagUse(token, "--compilation-config", token[3:] if token[2] == "=" else token[2:],
                                    key="mode"))
                continue

        name, eq, inline = token.partition("=")
        if name.startswith("--"):
            name = _UNDERSCORED_NAME.sub(lambda m: m.group(0).replace("_", "-"), name, count=1)
        key = None
        if "." in name:  # --json-flag.key value (and key+ to append to a list)
            name, _, key = name.partition(".")
            key = key.rstrip("+")
        spec, warning, problem = _resolve(name, table)
        if problem:
            problems.append(problem)
            # Its value (if any) must not be mistaken for the model: skip one non-option token
            # when the unknown flag was followed by one and the model is already known.
            if not eq and i < len(args) and not _looks_like_option(args[i], table) and model is not None:
                i += 1
            continue
        assert spec is not None
        if warning:
            warnings.append(warning)
        if spec.help:
            problems.append(f"{token}: vllm serve would print its help and exit instead of serving")
            continue
        if key is not None:
            if spec.type != "json":
                problems.append(f"{token}: {spec.canonical} is not a JSON flag, so it has no sub-keys")
                continue
            if eq:
                value: Any = inline
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                problems.append(f"{token} needs a value")
                continue
            uses.append(FlagUse(token, spec.canonical, value, key=key))
            continue
        if spec.canonical == "--model":
            warnings.append(f"{token}: vLLM {table.version} deprecates --model for vllm serve; "
                            "give the model as the first argument")
            if eq:
                take_model(inline, token)
            elif i < len(args):
                take_model(args[i], token)
                i += 1
            else:
                problems.append(f"{token} needs a value")
            continue
        if not spec.takes_value:
            if eq:
                problems.append(f"{token}: {spec.name} is a switch and takes no value")
                continue
            uses.append(FlagUse(token, spec.canonical, not spec.negation))
            continue
        if eq:
            value = [inline] if spec.nargs == "+" else inline
        elif spec.nargs == "+":
            value = []
            while i < len(args) and not _looks_like_option(args[i], table):
                value.append(args[i])
                i += 1
            if not value:
                problems.append(f"{token} needs at least one value"
                                + (f" (it is followed by {args[i]})" if i < len(args) else ""))
                continue
        elif i < len(args) and not _looks_like_option(args[i], table):
            value = args[i]
            i += 1
        elif spec.nargs == "?":
            value = True
        else:
            after = f" (it is followed by {args[i]})" if i < len(args) else " (it is the last argument)"
            problems.append(f"{token} needs a value{after}")
            continue
        bad = None
        for item in value if isinstance(value, list) else ([value] if isinstance(value, str) else []):
            bad = _check_value(spec, item, token)
            if bad:
                problems.append(bad)
                break
        if bad:
            continue
        uses.append(FlagUse(token, spec.canonical, value))

    for use in uses:
        spec = table.spec(use.flag)
        if spec is not None and spec.deprecated:
            warnings.append(f"{use.written} is deprecated in vLLM {table.version}")
    return model, uses, problems, list(dict.fromkeys(warnings))


def _effective_flags(uses: list[FlagUse], table: VllmFlagTable) -> tuple[dict[str, Any], list[str]]:
    flags: dict[str, Any] = {}
    warnings: list[str] = []
    seen: dict[str, list[FlagUse]] = {}
    for use in uses:
        spec = table.spec(use.flag)
        if use.key is not None:
            current = flags.get(use.flag)
            sub = current if isinstance(current, dict) else {}
            sub[use.key] = use.value
            flags[use.flag] = sub
            continue
        if spec is not None and spec.repeatable:
            flags.setdefault(use.flag, []).append(use.value)
            continue
        seen.setdefault(use.flag, []).append(use)
        flags[use.flag] = use.value
    for flag, flag_uses in seen.items():
        values = [u.value for u in flag_uses]
        if len(flag_uses) > 1 and len({json.dumps(v) for v in values}) > 1:
            shown = ", ".join(f"{u.written} {u.value!r}" if not isinstance(u.value, bool) else u.written
                              for u in flag_uses)
            warnings.append(f"{flag} is given {len(flag_uses)} times ({shown}); vLLM uses the last one")
    return flags, warnings


def parse_launch_command(command: str, *, strict: bool = True,
                         table: VllmFlagTable | None = None) -> ParsedLaunch:
    """Take a `docker run ... <image> vllm serve <model> [flags]` command string apart.

    Raises InvalidInput when the command cannot be split, is not `docker run ... vllm serve`,
    or has a docker flag the parser does not know. With `strict` (the default) it also raises
    on vLLM flag problems (unknown flag, missing value, bad number); with strict=False they are
    returned in `ParsedLaunch.problems`.
    """
    table = table or load_vllm_flags()
    argv = _split(command)
    options, image, container = _parse_docker(argv)
    entrypoint = [v for name, v in options if name == "--entrypoint"]
    run = ([entrypoint[-1]] if entrypoint and entrypoint[-1] else []) + container
    if len(run) < 2 or Path(run[0]).name != "vllm" or run[1] != "serve":
        got = _shown(run, 4) if run else "nothing (the image's default command)"
        raise InvalidInput(f"the container command must be `vllm serve <model> ...`, got {got} after image "
                           f"{image!r}", field="command")
    vllm_args = run[2:]
    model, uses, problems, warnings = _parse_vllm(vllm_args, table)
    flags, repeat_warnings = _effective_flags(uses, table)
    if model is None:
        default = table.default("--model")
        message = "no model: `vllm serve` has no model argument" + (
            f" and would serve its default {default}" if default else "")
        greedy = [u for u in uses if isinstance(u.value, list) and len(u.value) > 1]
        if greedy:
            message += (f" ({greedy[0].written} takes every value up to the next flag, so it swallowed "
                        f"{shlex.quote(greedy[0].value[-1])}; put the model first)")
        problems.insert(0, message)
    if "--config" in flags:
        warnings.append(f"--config {flags['--config']!r}: the flags inside that file are not checked")
    parsed = ParsedLaunch(command=command, argv=tuple(argv), docker_options=tuple(options), image=image,
                          container_command=tuple(run), model=model, vllm_argv=tuple(vllm_args), uses=tuple(uses),
                          flags=flags, problems=tuple(problems), warnings=tuple(warnings + repeat_warnings),
                          vllm_version=table.version)
    if strict and parsed.problems:
        raise InvalidInput("; ".join(parsed.problems), field="command")
    return parsed


# ---------------------------------------------------------------- facts about a node


@dataclass
class NodeFacts:
    """What the pre-flight needs to know about a node, gathered by NODE_FACTS_COMMAND."""

    mem_available_bytes: int | None = None
    listening_ports: set[int] = field(default_factory=set)
    images_present: set[str] = field(default_factory=set)
    can_pull: bool | None = None          # None: unknown (the gatherer cannot tell without pulling)
    running_containers: list[str] = field(default_factory=list)
    stopped_containers: list[str] = field(default_factory=list)
    port_owners: dict[int, str] = field(default_factory=dict)   # what holds a port, when known
    listeners: list[tuple[str, int]] = field(default_factory=list)  # (local address, port)
    mem_total_bytes: int | None = None
    ports_source: str | None = None       # "ss" or "/proc/net/tcp"
    problems: list[str] = field(default_factory=list)  # what could not be gathered, and why

    def to_dict(self) -> dict[str, Any]:
        return {"mem_available_bytes": self.mem_available_bytes, "mem_total_bytes": self.mem_total_bytes,
                "listening_ports": sorted(self.listening_ports), "port_owners": self.port_owners,
                "images_present": sorted(self.images_present), "can_pull": self.can_pull,
                "running_containers": self.running_containers, "stopped_containers": self.stopped_containers,
                "ports_source": self.ports_source, "problems": self.problems}


_FACT_SECTIONS: dict[str, str] = {
    "meminfo": "cat /proc/meminfo",
    # ss is iproute2; without it (or with an ss too old for -H) read the kernel's tables.
    "ports": "{ command -v ss >/dev/null 2>&1 && ss -Htlnp 2>/dev/null; } || "
             "{ cat /proc/net/tcp && { cat /proc/net/tcp6 2>/dev/null || true; }; }",
    "images": "_sc_t docker images --format '{{.Repository}}:{{.Tag}}'",
    "containers": "_sc_t docker ps -a --format '{{.Names}}|{{.State}}|{{.Label \"spark-control.port\"}}'",
}

_FACTS_PRELUDE = """\
# spark-control pre-flight facts: memory, listening TCP ports, docker images and containers.
_sc_t() { if command -v timeout >/dev/null 2>&1; then timeout 8 "$@"; else "$@"; fi; }
"""


def build_node_facts_script() -> str:
    """One POSIX sh script printing each fact in a probes-style section. No user values."""
    lines = [_FACTS_PRELUDE]
    for name, command in _FACT_SECTIONS.items():
        lines.append(f"printf '@@spark-control:{name}@@\\n'")
        lines.append(f"{{ {command}; }} </dev/null 2>&1")
        lines.append("printf '\\n@@spark-control:rc=%s@@\\n' \"$?\"")
    return "\n".join(lines) + "\n"


NODE_FACTS_SCRIPT = build_node_facts_script()
NODE_FACTS_COMMAND = "sh -c " + shlex.quote(NODE_FACTS_SCRIPT)

_SS_USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')
_PROC_TCP_LINE = re.compile(r"\s*\d+:\s+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})\s+\S+\s+([0-9A-Fa-f]{2})\s")


def _split_host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    host = host.split("%", 1)[0]  # 127.0.0.53%lo, fe80::1%eth0
    return (host or "*"), int(port)


def _proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host (little-endian) order
    fixed = b"".join(raw[k:k + 4][::-1] for k in range(0, len(raw), 4))
    address = ipaddress.ip_address(fixed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def parse_listening_ports(text: str, *, problems: list[str] | None = None
                          ) -> tuple[list[tuple[str, int]], dict[int, str], str | None]:
    """`ss -Htln[p]` or /proc/net/tcp{,6} output -> ([(address, port)], {port: owner}, source)."""
    problems = problems if problems is not None else []
    listeners: list[tuple[str, int]] = []
    owners: dict[int, str] = {}
    source = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("State", "sl ")):
            continue
        proc = _PROC_TCP_LINE.match(line)
        if proc:
            source = source or "/proc/net/tcp"
            if proc.group(3).upper() != "0A":  # 0A = TCP_LISTEN
                continue
            try:
                listeners.append((_proc_address(proc.group(1)), int(proc.group(2), 16)))
            except ValueError:
                problems.append(f"unreadable /proc/net/tcp line {stripped[:120]!r}")
            continue
        parts = stripped.split()
        if parts[0] in ("LISTEN", "UNCONN", "ESTAB") and len(parts) >= 5:
            source = source or "ss"
            if parts[0] != "LISTEN":
                continue
            local = _split_host_port(parts[3])
            if local is None:
                problems.append(f"unreadable ss line {stripped[:120]!r}")
                continue
            listeners.append(local)
            user = _SS_USERS.search(stripped)
            if user:
                owners.setdefault(local[1], f"process {user.group(1)} (pid {user.group(2)})")
            continue
        problems.append(f"unreadable line {stripped[:120]!r}")
    return listeners, owners, source


def parse_node_facts(text: str) -> NodeFacts:
    """NODE_FACTS_COMMAND output -> NodeFacts. Never raises: what is missing is in `problems`."""
    facts = NodeFacts()
    sections = split_sections(text or "")
    if not sections:
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "(no output)")
        facts.problems.append(f"no fact sections in the node's output: {first[:200]}")
        return facts

    def body(name: str, tool: str) -> str | None:
        section = sections.get(name)
        if section is None:
            facts.problems.append(f"{name} unchecked: no output (the facts script did not reach this section)")
            return None
        # probes words the failure ("docker not found on the node", "... permission denied (add the
        # SSH user to the 'docker' group)") from the tool's name.
        failure = exit_status_problem(SectionOutput(tool, section.output, section.exit_status))
        if failure:
            facts.problems.append(f"{name} unchecked: {failure}")
            return None
        return section.output

    meminfo = body("meminfo", "meminfo")
    if meminfo is not None:
        try:
            memory = parse_meminfo(meminfo)
            facts.mem_available_bytes, facts.mem_total_bytes = memory.available_bytes, memory.total_bytes
        except ValueError as exc:
            facts.problems.append(f"meminfo unchecked: {exc}")

    ports = body("ports", "ss (and /proc/net/tcp)")
    if ports is not None:
        line_problems: list[str] = []
        listeners, owners, source = parse_listening_ports(ports, problems=line_problems)
        facts.listeners, facts.port_owners, facts.ports_source = listeners, owners, source
        facts.listening_ports = {port for _, port in listeners}
        facts.problems.extend(f"ports: {p}" for p in line_problems)

    images = body("images", "docker")
    if images is not None:
        for line in images.splitlines():
            line = line.strip()
            if line and not line.startswith("<none>"):
                facts.images_present.add(line)

    containers = body("containers", "docker")
    if containers is not None:
        for line in containers.splitlines():
            if not line.strip():
                continue
            name, _, rest = line.strip().partition("|")
            state, _, port = rest.partition("|")
            if state == "running":
                facts.running_containers.append(name)
                if port.isdigit():
                    facts.port_owners[int(port)] = f"container {name}"  # better than a process name
            else:
                facts.stopped_containers.append(name)
    return facts


def normalize_image(reference: str) -> str:
    """The form `docker images --format '{{.Repository}}:{{.Tag}}'` prints for an image reference."""
    ref = reference.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        ref += ":latest"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    return ref


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Problem:
    """One finding: `check` is syntax, topology, memory, port, image or container; node None = the plan."""

    check: str
    node: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "node": self.node, "message": self.message}


@dataclass
class Verdict:
    ok: bool
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    vllm_version: str = ""
    checked: list[str] = field(default_factory=list)      # the checks that ran, in order
    parsed: dict[str, ParsedLaunch] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "vllm_version": self.vllm_version, "checked": self.checked,
                "problems": [p.to_dict() for p in self.problems],
                "warnings": [w.to_dict() for w in self.warnings],
                "nodes": {node: _summary(parsed) for node, parsed in self.parsed.items()}}


def raise_for_problems(verdict: Verdict) -> None:
    """InvalidInput (HTTP 400) with every problem's message, if the verdict refuses the launch."""
    if verdict.ok:
        return
    count = len(verdict.problems)
    raise InvalidInput(f"pre-flight refused the launch ({count} problem{'s' if count != 1 else ''}): "
                       + "; ".join(p.message for p in verdict.problems), field="preflight")


def _summary(parsed: ParsedLaunch) -> dict[str, Any]:
    return {"image": parsed.image, "model": parsed.model, "container": parsed.container_name,
            "port": _int(parsed, "--port"), "headless": parsed.headless,
            "tensor_parallel_size": _int(parsed, "--tensor-parallel-size"),
            "pipeline_parallel_size": _int(parsed, "--pipeline-parallel-size"),
            "gpu_memory_utilization": _float(parsed, "--gpu-memory-utilization")}


def _raw(parsed: ParsedLaunch, flag: str) -> Any:
    table = load_vllm_flags()
    value = parsed.flags.get(flag)
    return table.default(flag) if value is None else value


def _int(parsed: ParsedLaunch, flag: str) -> int | None:
    value = _raw(parsed, flag)
    try:
        return _human_int(str(value)) if value is not None else None
    except ValueError:
        return None


def _float(parsed: ParsedLaunch, flag: str) -> float | None:
    value = _raw(parsed, flag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _ceil2(value: float) -> float:
    """Round up to two decimals (a utilization that is enough, never one that is just short)."""
    return math.ceil(round(value * 100, 6)) / 100


def _gb(value: float) -> str:
    return f"{value:.1f} GB"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class _Findings:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, check: str, node: str | None, message: str) -> None:
        prefixed = f"{node}: {message}" if node else message
        if all(p.message != prefixed for p in self.problems):
            self.problems.append(Problem(check, node, prefixed))

    def warn(self, check: str, node: str | None, message: str) -> None:
        prefixed = f"{node}: {message}" if node else message
        if all(w.message != prefixed for w in self.warnings):
            self.warnings.append(Problem(check, node, prefixed))


def check_launch(plan_commands: Sequence[tuple[str, str]], *, gpus_per_node: int = 1,
                 usable_memory_gb_per_node: float = DEFAULT_USABLE_MEMORY_GB, model_size_gb: float | None = None,
                 node_facts: dict[str, NodeFacts] | None = None,
                 memory_headroom_gb: float = MEMORY_HEADROOM_GB) -> Verdict:
    """Pre-flight a launch plan: [(node name, command)], head first. Never raises on a bad plan.

    Without node_facts only the command itself is checked (no SSH needed); with node_facts
    ({node name: NodeFacts}) memory, ports, images and containers on the nodes are checked too.
    """
    table = load_vllm_flags()
    found = _Findings()
    checked = ["syntax"]
    parsed: dict[str, ParsedLaunch] = {}
    commands = list(plan_commands)
    if not commands:
        found.problem("syntax", None, "the launch plan has no commands")
    names = [node for node, _ in commands]
    for node in {n for n in names if names.count(n) > 1}:
        found.problem("topology", node, "appears more than once in the placement")

    # 1. syntax
    for node, command in commands:
        try:
            result = parse_launch_command(command, strict=False, table=table)
        except InvalidInput as exc:
            found.problem("syntax", node, exc.message)
            continue
        parsed[node] = result
        for message in result.problems:
            found.problem("syntax", node, message)
        for message in result.warnings:
            found.warn("syntax", node, message)
        _check_ranges(node, result, found)
        _check_docker_side(node, result, found, multi_node=len(commands) > 1)

    # 2-4 read the flags' values: they run once every command has passed 1.
    if not commands or found.problems:
        return Verdict(ok=False, problems=found.problems, warnings=found.warnings, vllm_version=table.version,
                       checked=checked, parsed=parsed)
    checked.append("topology")
    _check_topology(commands, parsed, gpus_per_node, found, table)
    if model_size_gb is not None:
        checked.append("memory")
        _check_weights(parsed, model_size_gb, usable_memory_gb_per_node, found)
    if node_facts is not None:
        checked.append("node facts")
        for node, result in parsed.items():
            facts = node_facts.get(node)
            if facts is None:
                found.warn("node facts", node, "no facts were gathered for this node: memory, port and image "
                                                "were not checked there")
                continue
            _check_node(node, result, facts, usable_memory_gb_per_node, memory_headroom_gb, model_size_gb,
                        len(commands), is_head=(node == names[0]), found=found)
    return Verdict(ok=not found.problems, problems=found.problems, warnings=found.warnings,
                   vllm_version=table.version, checked=checked, parsed=parsed)


def _check_ranges(node: str, parsed: ParsedLaunch, found: _Findings) -> None:
    """The numeric flags whose range vLLM would reject (or that cannot work on a Spark)."""
    def written(flag: str) -> str:
        uses = [u for u in parsed.uses if u.flag == flag and u.key is None]
        return uses[-1].written.split("=", 1)[0] if uses else flag

    util = parsed.flags.get("--gpu-memory-utilization")
    if util is not None:
        value = float(util)
        if not 0 < value <= 1:
            found.problem("syntax", node, f"{written('--gpu-memory-utilization')} {util}: "
                                          f"--gpu-memory-utilization must be in (0, 1], e.g. 0.8")
    for flag, low, what in (("--max-model-len", 1, "a positive number of tokens, e.g. 32768 or 32k"),
                            ("--tensor-parallel-size", 1, "at least 1"), ("--pipeline-parallel-size", 1, "at least 1"),
                            ("--data-parallel-size", 1, "at least 1"), ("--nnodes", 1, "at least 1"),
                            ("--node-rank", 0, "0 or more")):
        raw = parsed.flags.get(flag)
        if raw is not None and _human_int(str(raw)) < low:
            found.problem("syntax", node, f"{written(flag)} {raw}: {flag} must be {what}")
    for flag in ("--port", "--master-port", "--data-parallel-rpc-port"):
        raw = parsed.flags.get(flag)
        if raw is not None and not 1 <= int(raw) <= 65535:
            found.problem("syntax", node, f"{written(flag)} {raw}: {flag} must be a TCP port from 1 to 65535")


def _check_docker_side(node: str, parsed: ParsedLaunch, found: _Findings, *, multi_node: bool) -> None:
    if not (parsed.has_docker_flag("--gpus") or parsed.docker_value("--runtime") == "nvidia"):
        found.warn("syntax", node, "docker run has no --gpus (nor --runtime nvidia): the container may see no GPU")
    if multi_node and parsed.docker_value("--network") != "host":
        found.warn("topology", node, "a multi-node launch without --network host: the nodes reach each other "
                                     "only through host networking")


def _check_topology(commands: list[tuple[str, str]], parsed: dict[str, ParsedLaunch], gpus_per_node: int,
                    found: _Findings, table: VllmFlagTable) -> None:
    nodes = [node for node, _ in commands]
    count = len(nodes)
    gpus = count * gpus_per_node
    head = parsed[nodes[0]]
    placement = "+".join(nodes)

    # Every node must run the same engine layout.
    agree = ["--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size", "--nnodes",
             "--master-addr", "--master-port", "--revision", "--quantization", "--dtype", "--kv-cache-dtype",
             "--max-model-len", "--distributed-executor-backend"]
    for node in nodes[1:]:
        other = parsed[node]
        if other.model != head.model:
            found.problem("topology", node, f"serves model {other.model!r} but {nodes[0]} serves {head.model!r}; "
                                            "every node of a launch must serve the same model")
        if normalize_image(other.image) != normalize_image(head.image):
            found.problem("topology", node, f"runs image {other.image} but {nodes[0]} runs {head.image}; mixed vLLM "
                                            "versions cannot form one engine")
        for flag in agree:
            mine, theirs = _raw(other, flag), _raw(head, flag)
            if str(mine) != str(theirs):
                found.problem("topology", node, f"{flag} {mine} differs from {nodes[0]}'s {flag} {theirs}; every "
                                                "node must agree")

    tp = _int(head, "--tensor-parallel-size") or 1
    pp = _int(head, "--pipeline-parallel-size") or 1
    dp = _int(head, "--data-parallel-size") or 1
    world = tp * pp * dp
    if world != gpus:
        product = f"--tensor-parallel-size {tp} x --pipeline-parallel-size {pp}"
        if dp != 1:
            product += f" x --data-parallel-size {dp}"
        fits = [f"--tensor-parallel-size {gpus // p} --pipeline-parallel-size {p}"
                for p in (1, count) if gpus % p == 0 and (p == 1 or count > 1)]
        hint = " or ".join(dict.fromkeys(fits))
        more = (f", or place it on {world // gpus_per_node} nodes" if world % gpus_per_node == 0
                and world // gpus_per_node != count else "")
        per_node = _plural(gpus_per_node, "GPU")
        found.problem("topology", None, f"{product} = {world} GPUs, but placement {placement} has "
                                        f"{_plural(gpus, 'GPU')} ({_plural(count, 'node')} x {per_node}); "
                                        f"use {hint}{more}")

    if count == 1:
        nnodes = _int(head, "--nnodes") or 1
        if nnodes != 1:
            found.problem("topology", nodes[0], f"--nnodes {nnodes} but the placement has 1 node; drop --nnodes "
                                                f"or place the model on {nnodes} nodes")
        if head.headless:
            found.problem("topology", nodes[0], "--headless on a single node: nothing would serve the API")
        return

    ranks: dict[int, str] = {}
    for position, node in enumerate(nodes):
        result = parsed[node]
        if "--nnodes" not in result.flags:
            found.problem("topology", node, f"no --nnodes: a {count}-node launch needs --nnodes {count} on every node")
        elif _int(result, "--nnodes") != count:
            found.problem("topology", node, f"--nnodes {_int(result, '--nnodes')} but the placement ({placement}) has "
                                            f"{count} nodes; use --nnodes {count}")
        if "--node-rank" not in result.flags and position > 0:
            found.problem("topology", node, f"no --node-rank: vLLM would take rank 0, the same as {nodes[0]}; "
                                            f"use --node-rank {position}")
        rank = _int(result, "--node-rank") or 0
        if rank in ranks:
            found.problem("topology", node, f"--node-rank {rank} is also {ranks[rank]}'s; ranks must be "
                                            f"0..{count - 1}, each once")
        elif not 0 <= rank < count:
            found.problem("topology", node, f"--node-rank {rank} is outside 0..{count - 1} for {count} nodes")
        ranks.setdefault(rank, node)
        if rank == 0 and result.headless:
            found.problem("topology", node, "--node-rank 0 with --headless: the rank-0 node serves the API and "
                                            "must not be headless")
        if rank > 0 and not result.headless:
            found.problem("topology", node, f"--node-rank {rank} without --headless: every worker node needs "
                                            "--headless (only rank 0 serves the API)")
        if "--master-addr" not in result.flags:
            default = table.default("--master-addr")
            found.problem("topology", node, f"no --master-addr: vLLM would use its default {default}, which the "
                                            "other nodes cannot reach; use the rank-0 node's fabric address")
    if ranks.get(0) not in (None, nodes[0]):
        found.warn("topology", None, f"rank 0 is {ranks[0]}, not the first node of the placement ({nodes[0]})")


def _check_weights(parsed: dict[str, ParsedLaunch], size_gb: float, usable_gb: float, found: _Findings) -> None:
    count = len(parsed)
    head = next(iter(parsed.values()))
    util = _float(head, "--gpu-memory-utilization") or 0.9
    budget = util * usable_gb * count
    where = f"{_plural(count, 'node')}"
    if size_gb > budget:
        options = []
        needed_util = _ceil2(size_gb / (usable_gb * count))
        if needed_util <= MAX_GPU_MEMORY_UTILIZATION:
            options.append(f"raise --gpu-memory-utilization to at least {needed_util:.2f}")
        nodes_now = math.ceil(size_gb / (min(util, MAX_GPU_MEMORY_UTILIZATION) * usable_gb))
        nodes_max = math.ceil(size_gb / (MAX_GPU_MEMORY_UTILIZATION * usable_gb))
        if nodes_now > count:
            options.append(f"place it on {nodes_now} nodes")
        if count < nodes_max < nodes_now:
            options.append(f"on {nodes_max} nodes with --gpu-memory-utilization "
                           f"{_ceil2(size_gb / (usable_gb * nodes_max)):.2f}")
        advice = " or ".join(options) or "pick a smaller (more quantized) model"
        found.problem("memory", None, f"the weights need {_gb(size_gb)} but --gpu-memory-utilization {util:g} x "
                                      f"{_gb(usable_gb)} usable x {where} = {_gb(budget)}; {advice}")
        return
    left = (budget - size_gb) / count
    if left < KV_CACHE_WARN_GB:
        found.warn("memory", None, f"the weights ({_gb(size_gb)}) leave only {_gb(left)} per node for the KV "
                                   f"cache within --gpu-memory-utilization {util:g}; vLLM may refuse to start "
                                   "('No available memory for the cache blocks')")


def _check_node(node: str, parsed: ParsedLaunch, facts: NodeFacts, usable_gb: float, headroom_gb: float,
                size_gb: float | None, count: int, *, is_head: bool, found: _Findings) -> None:
    for message in facts.problems:
        found.warn("node facts", node, f"could not check everything: {message}")

    # memory: vLLM claims gpu_memory_utilization x total at start and refuses to start with less free
    util = _float(parsed, "--gpu-memory-utilization") or 0.9
    if facts.mem_available_bytes is not None:
        available = facts.mem_available_bytes / GB
        claim = util * usable_gb
        if claim + headroom_gb > available:
            best = math.floor((available - headroom_gb) / usable_gb * 100) / 100
            floor = size_gb / (usable_gb * count) if size_gb is not None else 0.0
            if best > 0 and best >= floor:
                advice = f"lower --gpu-memory-utilization to at most {best:.2f}, or free memory on {node}"
            else:
                advice = f"free memory on {node} (stop what runs there)"
            if facts.running_containers:
                advice += f"; running containers: {', '.join(facts.running_containers[:5])}"
            found.problem("memory", node, f"{_gb(available)} available (MemAvailable), but --gpu-memory-utilization "
                                          f"{util:g} x {_gb(usable_gb)} = {_gb(claim)} plus {_gb(headroom_gb)} "
                                          f"headroom = {_gb(claim + headroom_gb)} is needed; {advice}")

    # ports: the API port on nodes that serve it; the master port on the rank-0 node
    host = parsed.flags.get("--host")
    ports = []
    if not parsed.headless:
        ports.append(("--port", _int(parsed, "--port")))
    if count > 1 and (_int(parsed, "--node-rank") or 0) == 0:
        ports.append(("--master-port", _int(parsed, "--master-port")))
    for flag, port in ports:
        if port is None or not _port_taken(facts, port, host):
            continue
        owner = facts.port_owners.get(port)
        held = f" (held by {owner})" if owner else ""
        free = _free_port_hint(facts, port)
        found.problem("port", node, f"{flag} {port} is already listening{held}; stop what holds it or use "
                                    f"{flag} {free}")

    # image
    wanted = normalize_image(parsed.image)
    if "@" in parsed.image:
        found.warn("image", node, f"image {parsed.image} is pinned by digest; its presence cannot be confirmed "
                                  "from `docker images`")
    elif wanted not in {normalize_image(i) for i in facts.images_present}:
        if facts.can_pull is False:
            found.problem("image", node, f"image {parsed.image} is not on the node and cannot be pulled there; "
                                         f"pull or load it on {node} first (docker pull {parsed.image})")
        elif not any(p.startswith("images unchecked") for p in facts.problems):
            found.warn("image", node, f"image {parsed.image} is not on the node yet: docker will pull it before "
                                      "starting (several GB; the launch waits for it)")

    # container name
    name = parsed.container_name
    if name and name in facts.running_containers:
        found.problem("container", node, f"a container named {name} is already running; stop it first "
                                         f"(docker stop {name}) or swap to this model")
    elif name and name in facts.stopped_containers:
        found.warn("container", node, f"a stopped container named {name} exists: it must be removed "
                                      f"(docker rm {name}) before docker run can reuse the name")


_WILDCARDS = {"*", "0.0.0.0", "::", ""}


def _port_taken(facts: NodeFacts, port: int, host: Any) -> bool:
    if port not in facts.listening_ports:
        return False
    if not isinstance(host, str) or host in _WILDCARDS or not facts.listeners:
        return True  # binding every address conflicts with any listener on the port
    return any(p == port and (address in _WILDCARDS or address == host) for address, p in facts.listeners)


def _free_port_hint(facts: NodeFacts, port: int) -> str:
    candidate = port + 1
    while candidate in facts.listening_ports and candidate < 65535:
        candidate += 1
    return str(candidate)


__all__ = [
    "FlagSpec", "FlagUse", "NODE_FACTS_COMMAND", "NODE_FACTS_SCRIPT", "NodeFacts", "ParsedLaunch", "Problem",
    "Verdict", "VllmFlagTable", "build_node_facts_script", "check_launch", "load_vllm_flags", "normalize_image",
    "parse_launch_command", "parse_listening_ports", "parse_node_facts", "raise_for_problems",
]

