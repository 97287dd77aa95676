"""The arguments after `vllm serve`: the model and every flag use, read the way vLLM reads them.

vLLM's FlexibleArgumentParser is argparse plus its own spellings: `--max_model_len`
(underscores), `-O3`, `--json-flag.key value`, `--no-<switch>`, unique abbreviations. This
module mirrors it over the flag table (app.vllm_flags) and collects problems instead of
exiting, so every mistake in a command is reported at once:

    parse_serve_args(args, table) -> (model, [FlagUse], problems, warnings)
    effective_flags(uses, table)  -> ({canonical flag: value vLLM uses}, warnings)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from app.vllm_flags import VllmFlagTable, check_flag_value, resolve_flag


@dataclass(frozen=True)
class FlagUse:
    """One vLLM flag as it appears in the command."""

    written: str                   # as written: "-tp", "--max_model_len=4096", "--no-enable-prefix-caching"
    flag: str                      # canonical name: "--tensor-parallel-size", "--enable-prefix-caching"
    value: str | list[str] | bool  # True/False for switches, a list for nargs="+" flags
    key: str | None = None         # the sub-key of a dotted JSON flag: --compilation-config.level -> "level"


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


def parse_serve_args(args: list[str], table: VllmFlagTable
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

    def take_next() -> str | None:
        """The next argument, consumed as a value; None after the last one."""
        nonlocal i
        if i >= len(args):
            return None
        i += 1
        return args[i - 1]

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
        spec, warning, problem = resolve_flag(name, table)
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
            value: Any = inline if eq else take_next()
            if value is None:
                problems.append(f"{token} needs a value")
                continue
            uses.append(FlagUse(token, spec.canonical, value, key=key))
            continue
        if spec.canonical == "--model":
            warnings.append(f"{token}: vLLM {table.version} deprecates --model for vllm serve; "
                            "give the model as the first argument")
            given = inline if eq else take_next()
            if given is None:
                problems.append(f"{token} needs a value")
            else:
                take_model(given, token)
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
            bad = check_flag_value(spec, item, token)
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


def effective_flags(uses: list[FlagUse], table: VllmFlagTable) -> tuple[dict[str, Any], list[str]]:
    """{canonical flag: the value vLLM ends up with} (the last use wins, like argparse; repeatable
    flags collect a list; dotted JSON uses build a dict), and a warning for each flag given twice
    with different values."""
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
