"""Read a launch command string as the node's shell will: split it, or refuse it.

The pre-flight reads `shlex.split(command)`; the node's shell runs `command` itself. The two agree
only for a plain quoted argument list (what shellsafe.quote_args produces), so any operator,
expansion or glob the shell would act on is refused here instead of being misread:

    split_command(command) -> argv       InvalidInput naming every hazard
    shell_hazards(command) -> [reason]   where the shell and shlex would disagree
    shown_argv(argv, limit)              the first arguments, quoted, for a message
"""

from __future__ import annotations

import re
import shlex
from typing import Sequence

from app.errors import InvalidInput


def shell_hazards(command: str) -> list[str]:
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


def split_command(command: str) -> list[str]:
    """The argv of `command`, if the node's shell would read it exactly as shlex.split does."""
    if not isinstance(command, str):
        raise InvalidInput(f"the launch command must be text, got {type(command).__name__}", field="command")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidInput(f"shlex cannot split the command: {exc}", field="command") from None
    hazards = shell_hazards(command)
    if hazards:
        raise InvalidInput("the command is not a plain quoted argument list: it contains " + "; ".join(hazards)
                           + ". The node's shell would run something else than what the pre-flight reads; "
                           "build it with shellsafe.quote_args", field="command")
    return argv


def shown_argv(argv: Sequence[str], limit: int = 8) -> str:
    """The first `limit` arguments, shell-quoted, for an error message."""
    text = " ".join(shlex.quote(a) for a in argv[:limit])
    return text + (" ..." if len(argv) > limit else "")
