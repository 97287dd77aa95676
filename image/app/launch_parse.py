"""A launch command taken apart: `docker run [docker flags] IMAGE vllm serve MODEL [vLLM flags]`.

    parse_launch_command(command) -> ParsedLaunch    InvalidInput if it is not docker run ... vllm serve
    flag_value / flag_int / flag_float(parsed, flag)  the value vLLM would use, default included

The string is split by app.shell_split, docker's part read by app.docker_argv, vLLM's part by
app.vllm_argv against the flag table (app.vllm_flags). ParsedLaunch is what the checks
(app.validate) read.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.docker_argv import parse_docker_run
from app.errors import InvalidInput
from app.shell_split import shown_argv, split_command
from app.vllm_argv import FlagUse, effective_flags, parse_serve_args
from app.vllm_flags import VllmFlagTable, human_int, load_vllm_flags


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


def parse_launch_command(command: str, *, strict: bool = True,
                         table: VllmFlagTable | None = None) -> ParsedLaunch:
    """Take a `docker run ... <image> vllm serve <model> [flags]` command string apart.

    Raises InvalidInput when the command cannot be split, is not `docker run ... vllm serve`,
    or has a docker flag the parser does not know. With `strict` (the default) it also raises
    on vLLM flag problems (unknown flag, missing value, bad number); with strict=False they are
    returned in `ParsedLaunch.problems`.
    """
    table = table or load_vllm_flags()
    argv = split_command(command)
    options, image, container = parse_docker_run(argv)
    entrypoint = [v for name, v in options if name == "--entrypoint"]
    run = ([entrypoint[-1]] if entrypoint and entrypoint[-1] else []) + container
    if len(run) < 2 or Path(run[0]).name != "vllm" or run[1] != "serve":
        got = shown_argv(run, 4) if run else "nothing (the image's default command)"
        raise InvalidInput(f"the container command must be `vllm serve <model> ...`, got {got} after image "
                           f"{image!r}", field="command")
    vllm_args = run[2:]
    model, uses, problems, warnings = parse_serve_args(vllm_args, table)
    flags, repeat_warnings = effective_flags(uses, table)
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


def flag_value(parsed: ParsedLaunch, flag: str) -> Any:
    """The value vLLM would use for `flag`: the command's, else the bundled flag table's default."""
    table = load_vllm_flags()
    value = parsed.flags.get(flag)
    return table.default(flag) if value is None else value


def flag_int(parsed: ParsedLaunch, flag: str) -> int | None:
    """flag_value as a whole number (32k reads as 32000); None if unset or not a number."""
    value = flag_value(parsed, flag)
    try:
        return human_int(str(value)) if value is not None else None
    except ValueError:
        return None


def flag_float(parsed: ParsedLaunch, flag: str) -> float | None:
    """flag_value as a number; None if unset or not a number."""
    value = flag_value(parsed, flag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
