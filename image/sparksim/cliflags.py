"""Flag parsing the way docker's CLI (spf13/pflag) does it, including its error texts.

`--flag value`, `--flag=value`, `-f value`, `-fvalue`, `-f=value`, bundled short
booleans (`-dit`), `--` to end flags. With interspersed=False (docker run) the first
positional argument ends the flags: everything after it belongs to the command.
"""

from __future__ import annotations

from typing import NamedTuple


class UsageError(Exception):
    """A command-line mistake; docker prints it plus "See 'docker <cmd> --help'." and exits 125."""


class HelpRequested(Exception):
    pass


class Flag(NamedTuple):
    names: tuple[str, ...]  # e.g. ("-e", "--env")
    dest: str
    kind: str = "bool"  # "bool", "value" (last one wins) or "list" (repeatable)


def flags(*specs: tuple) -> list[Flag]:
    """flags(("-d --detach", "detach"), ("-e --env", "env", "list"), ...)"""
    return [Flag(tuple(names.split()), dest, *rest) for names, dest, *rest in specs]


def _parse_bool(text: str, name: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise UsageError(f'invalid argument "{text}" for "{name}" flag: strconv.ParseBool: parsing "{text}": invalid syntax')


def parse(specs: list[Flag], argv: list[str], interspersed: bool = True) -> tuple[dict, list[str]]:
    by_name = {name: spec for spec in specs for name in spec.names}
    opts: dict = {s.dest: [] if s.kind == "list" else (False if s.kind == "bool" else None) for s in specs}
    positionals: list[str] = []

    def store(spec: Flag, value: str) -> None:
        if spec.kind == "list":
            opts[spec.dest].append(value)
        else:
            opts[spec.dest] = value

    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals += argv[i:]
            break
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if name == "--help" and name not in by_name:
                raise HelpRequested()
            spec = by_name.get(name)
            if spec is None:
                raise UsageError(f"unknown flag: {name}")
            if spec.kind == "bool":
                opts[spec.dest] = _parse_bool(value, name) if has_value else True
                continue
            if not has_value:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                value, i = argv[i], i + 1
            store(spec, value)
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            for position, letter in enumerate(letters):
                spec = by_name.get("-" + letter)
                if spec is None:
                    if letter == "h":
                        raise HelpRequested()
                    raise UsageError(f"unknown shorthand flag: '{letter}' in {arg}")
                if spec.kind == "bool":
                    opts[spec.dest] = True
                    continue
                value = letters[position + 1 :]
                value = value[1:] if value.startswith("=") else value
                if not value:
                    if i >= len(argv):
                        raise UsageError(f"flag needs an argument: '{letter}' in {arg}")
                    value, i = argv[i], i + 1
                store(spec, value)
                break
        else:
            positionals.append(arg)
            if not interspersed:
                positionals += argv[i:]
                break
    return opts, positionals
