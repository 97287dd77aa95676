"""A small subset of Go's text/template, enough for `docker ... --format`.

Supported: literal text, `{{.}}`, `{{.A.B}}`, method-like fields (`{{.Label "k"}}`),
the functions docker registers (json, index, join, lower, upper, title, split,
println), pipes (`{{.Names | upper}}`), `{{if}}/{{else}}/{{end}}`, `{{range}}/{{end}}`
and the `{{-`/`-}}` trim markers. Anything else is a TemplateError whose text
follows Go's ("template parsing error: ...").
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Callable

_ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.S)
NO_VALUE = "<no value>"


class TemplateError(Exception):
    pass


def go_format(value: Any) -> str:
    """fmt.Sprint of a decoded JSON value, as Go prints it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(go_format(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _go_json(value: Any) -> str:
    if isinstance(value, dict):  # methods such as .Label are not part of the JSON object
        value = {k: v for k, v in value.items() if not callable(v)}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _go_json,
    "index": _index,
    "join": lambda items, sep: sep.join(go_format(i) for i in (items or [])),
    "lower": lambda s: go_format(s).lower(),
    "upper": lambda s: go_format(s).upper(),
    "title": lambda s: go_format(s).title(),
    "split": lambda s, sep: go_format(s).split(sep),
    "println": lambda *args: " ".join(go_format(a) for a in args) + "\n",
}


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s) tokens, applying trim markers."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2).strip()))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = template[pos:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    if "{{" in tail:
        raise TemplateError('template parsing error: template: :1: unclosed action')
    return tokens


def _parse(tokens: list[tuple[str, str]], pos: int, closers: tuple[str, ...]) -> tuple[list, int, str]:
    """Build a node list until one of `closers` (end/else); returns (nodes, next pos, closer)."""
    nodes: list = []
    while pos < len(tokens):
        kind, body = tokens[pos]
        pos += 1
        if kind == "text":
            nodes.append(("text", body))
            continue
        word = body.split(None, 1)[0] if body else ""
        if word in closers:
            return nodes, pos, word
        if word in ("if", "range"):
            inner, pos, closer = _parse(tokens, pos, ("end", "else"))
            other: list = []
            if closer == "else":
                other, pos, _ = _parse(tokens, pos, ("end",))
            nodes.append((word, body[len(word) :].strip(), inner, other))
            continue
        if word in ("end", "else"):
            raise TemplateError(f"template parsing error: template: :1: unexpected {{{{{word}}}}}")
        nodes.append(("expr", body))
    if closers:
        raise TemplateError("template parsing error: template: :1: unexpected EOF")
    return nodes, pos, ""


def _field(obj: Any, path: str, strict: bool) -> Any:
    for name in [p for p in path.split(".") if p]:
        if isinstance(obj, dict) and name in obj:
            obj = obj[name]
        elif strict:
            raise TemplateError(
                f'template: :1: executing "" at <.{name}>: can\'t evaluate field {name}'
            )
        else:
            return NO_VALUE
    return obj


def _arg(word: str, dot: Any, strict: bool) -> Any:
    if word.startswith('"') or word.startswith("`"):
        return word[1:-1]
    if word.startswith("."):
        return _field(dot, word, strict)
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    raise TemplateError(f'template parsing error: template: :1: function "{word}" not defined')


def _command(words: list[str], dot: Any, strict: bool, piped: list) -> Any:
    head, args = words[0], words[1:]
    if head in FUNCTIONS:
        values = [_arg(w, dot, strict) for w in args] + piped
        try:
            return FUNCTIONS[head](*values)
        except TypeError as exc:
            raise TemplateError(f"template: :1: wrong number of args for {head}: {exc}") from exc
    value = _arg(head, dot, strict)
    if callable(value):  # a method such as ContainerContext.Label("k")
        return value(*[_arg(w, dot, strict) for w in args], *piped)
    if args or piped:
        raise TemplateError(f"template: :1: can't give argument to non-function {head}")
    return value


def _evaluate(body: str, dot: Any, strict: bool) -> Any:
    try:
        stages = [shlex.split(stage, posix=False) for stage in body.split("|")]
    except ValueError as exc:
        raise TemplateError(f"template parsing error: template: :1: {exc}") from exc
    result: Any = None
    for number, words in enumerate(stages):
        if not words:
            raise TemplateError("template parsing error: template: :1: missing command")
        result = _command(words, dot, strict, [result] if number else [])
    return result


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", NO_VALUE) and value != [] and value != {}


def _run(nodes: list, dot: Any, strict: bool, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "expr":
            out.append(go_format(_evaluate(node[1], dot, strict)))
        elif kind == "if":
            branch = node[2] if _truthy(_evaluate(node[1], dot, strict)) else node[3]
            _run(branch, dot, strict, out)
        elif kind == "range":
            items = _evaluate(node[1], dot, strict)
            items = list(items.values()) if isinstance(items, dict) else items
            if _truthy(items):
                for item in items:
                    _run(node[2], item, strict, out)
            else:
                _run(node[3], dot, strict, out)


def render(template: str, dot: Any, strict: bool = False) -> str:
    """Execute `template` with `dot` as `.`; strict=True errors on unknown fields
    (docker's formatter contexts are Go structs), otherwise prints "<no value>"
    (docker inspect works on decoded JSON maps)."""
    nodes, _, _ = _parse(_tokens(template), 0, ())
    out: list[str] = []
    _run(nodes, dot, strict, out)
    return "".join(out)
