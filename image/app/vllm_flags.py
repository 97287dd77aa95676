"""The flag table of `vllm serve`: which options exist, their spellings, and which values they take.

It is read from `vllm_args.json`, the option table of one real vLLM release's argparse parser
(docs/PREFLIGHT.md, "Updating the flag list"). This module owns:

    load_vllm_flags(path=None) -> VllmFlagTable   the bundled table is read once
    resolve_flag(name, table)                      exact name, then argparse's unique-prefix rule,
                                                   else "did you mean ...?"
    check_flag_value(spec, value, written)         would argparse accept this value?
    human_int(value)                               vLLM's 32k / 32K integers

No I/O except reading the table file.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

VLLM_ARGS_PATH = Path(__file__).with_name("vllm_args.json")


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


# ---------------------------------------------------------------- names


def resolve_flag(name: str, table: VllmFlagTable) -> tuple[FlagSpec | None, str | None, str | None]:
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


# ---------------------------------------------------------------- values


def check_flag_value(spec: FlagSpec, value: str, written: str) -> str | None:
    """None if argparse would accept `value` for `spec`, else why not."""
    shown = f"{written.split('=', 1)[0]} {shlex.quote(value)}"
    try:
        if spec.type == "int":
            number: Any = int(value)
        elif spec.type == "human_int":
            number = human_int(value)
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


def human_int(value: str) -> int:
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
