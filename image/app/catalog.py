"""The model catalog: the bundled models.yaml (or MODELS_YAML), then MODELS_OVERRIDES merged over it.

Layering, in order:
1. The base file: `image/app/models.yaml`, or the file named by MODELS_YAML, which replaces it.
2. MODELS_OVERRIDES, same shape: `defaults` deep-merge into the base defaults; each entry under
   `models` either adds a model, deep-merges into the model of that name (mappings merge, lists
   and scalars replace), replaces it whole (`replace: true`), or removes it (`name: null`).
3. Every entry = `defaults` deep-merged with the entry. Inside a mapping, `null` removes the key,
   so the built-in default applies (for optional vLLM settings: the flag is left out).

Every problem is a ConfigError naming the file, the model and the field. The base file is
checked on its own first, so a problem found after merging is blamed on MODELS_OVERRIDES.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from app.errors import ConfigError, NotFound
from app.model_schema import CatalogDefaults, ModelEntry

BUNDLED_MODELS_YAML = Path(__file__).resolve().parent / "models.yaml"
_TOP_LEVEL_KEYS = ("defaults", "models")
_SHOWN_INPUT_LIMIT = 60


@dataclass(frozen=True)
class _Source:
    label: str  # "bundled catalog", "MODELS_YAML", "MODELS_OVERRIDES"
    path: Path

    def __str__(self) -> str:
        return f"{self.label} {self.path}"

    def error(self, message: str, *, model: str | None = None, field: str | None = None) -> ConfigError:
        return located_error(str(self), message, kind="model", name=model, field=field)


def located_error(where: str, message: str, *, kind: str, name: str | None = None,
                  field: str | None = None) -> ConfigError:
    """A configuration file's mistake, named: "<file>: <kind> 'x', field y: <what is wrong>"."""
    if name is not None:
        where += f": {kind} {name!r}"
    if field is not None:
        where += f", field {field}" if name is not None else f": field {field}"
    return ConfigError(f"{where}: {message}", field=field)


def load_yaml_file(path: Path, fail: Callable[[str], ConfigError]) -> Any:
    """One configuration file, parsed (duplicate keys refused); a missing or unreadable file and
    a YAML syntax error become `fail(message)`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the file: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise fail(f"YAML syntax error{at}: {problem}") from None


class Catalog:
    """The loaded models, looked up by name, served name or alias."""

    def __init__(self, entries: list[ModelEntry], sources: list[str]) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self.sources = tuple(sources)
        self._index: dict[str, str] = {}
        for entry in entries:
            for name in entry.all_names:
                self._index.setdefault(name.casefold(), entry.name)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in self._index

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[ModelEntry]:
        """The models in catalog order (bundled order, then models added by MODELS_OVERRIDES)."""
        return list(self._entries.values())

    def resolve_alias(self, name: str) -> str:
        """The catalog name for a name, served name or alias (case-insensitive); NotFound otherwise."""
        if isinstance(name, str) and name.casefold() in self._index:
            return self._index[name.casefold()]
        known = sorted(self._index)
        close = difflib.get_close_matches(str(name).casefold(), known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NotFound(f"unknown model {name!r}: {hint}known models: {', '.join(self.names())}", field="model")

    def get(self, name_or_alias: str) -> ModelEntry:
        return self._entries[self.resolve_alias(name_or_alias)]


def load_catalog(settings) -> Catalog:
    """Read the catalog named by `settings.models_yaml` / `settings.models_overrides`."""
    base = _Source("MODELS_YAML", Path(settings.models_yaml)) if settings.models_yaml else \
        _Source("bundled catalog", BUNDLED_MODELS_YAML)
    defaults, models = _read_catalog_file(base, allow_empty=False)
    if not models:
        raise base.error("no models: the file needs a `models:` mapping with at least one entry")
    _check_defaults(defaults, base)
    entries = {name: _build_entry(name, defaults, raw, base) for name, raw in models.items()}
    blame = dict.fromkeys(entries, base)
    sources = [str(base)]

    if getattr(settings, "models_overrides", None):
        over = _Source("MODELS_OVERRIDES", Path(settings.models_overrides))
        sources.append(str(over))
        over_defaults, over_models = _read_catalog_file(over, allow_empty=True)
        if over_defaults:
            defaults = _deep_merge(defaults, over_defaults, keep_none=False)
            _check_defaults(defaults, over)
        for name, raw in over_models.items():
            if raw is None:
                models.pop(name, None)
                continue
            raw = dict(raw)
            replace = raw.pop("replace", False)
            if not isinstance(replace, bool):
                raise over.error(f"replace must be true or false, got {replace!r}", model=name, field="replace")
            models[name] = raw if replace or name not in models else _deep_merge(models[name], raw, keep_none=True)
        entries = {}
        for name, raw in models.items():
            # An entry the overrides did not touch can still fail because the defaults changed.
            source = over if name in over_models or over_defaults else base
            entries[name] = _build_entry(name, defaults, raw, source)
            blame[name] = over if name in over_models else base
    _check_unique_names(list(entries.values()), blame)
    return Catalog(list(entries.values()), sources)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_catalog_file(source: _Source, *, allow_empty: bool) -> tuple[dict, dict]:
    """(defaults, models) of one file, after checking its top-level shape."""
    data = load_yaml_file(source.path, source.error)
    if data is None:
        if allow_empty:
            return {}, {}
        raise source.error("the file is empty; it needs a `models:` mapping")
    if not isinstance(data, dict):
        raise source.error(f"the top level must be a mapping with `defaults:` and `models:`, "
                           f"got {_type_name(data)}")
    unknown = [str(key) for key in data if key not in _TOP_LEVEL_KEYS]
    if unknown:
        raise source.error(f"unknown top-level key {unknown[0]!r}{_suggest(unknown[0], _TOP_LEVEL_KEYS)}; "
                           f"allowed: {', '.join(_TOP_LEVEL_KEYS)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise source.error(f"must be a mapping, got {_type_name(defaults)}", field="defaults")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise source.error(f"must be a mapping of model name to settings, got {_type_name(models)}", field="models")
    for name, raw in models.items():
        if not isinstance(name, str):
            raise source.error(f"model names must be text, got {name!r}", field="models")
        if raw is None and allow_empty:
            continue  # `name: null` in MODELS_OVERRIDES removes the model
        if not isinstance(raw, dict):
            raise source.error(f"the entry must be a mapping of settings, got {_type_name(raw)}", model=name)
    return defaults, dict(models)


def _check_defaults(defaults: dict, source: _Source) -> None:
    try:
        CatalogDefaults.model_validate(defaults)
    except ValidationError as exc:
        field, message = _describe(exc, CatalogDefaults)
        raise source.error(message, field=f"defaults.{field}") from None


def _build_entry(name: str, defaults: dict, raw: dict, source: _Source) -> ModelEntry:
    if "name" in raw and raw["name"] != name:
        raise source.error(f"{raw['name']!r} differs from the catalog key; leave `name` out", model=name,
                           field="name")
    try:
        return ModelEntry.model_validate({**_deep_merge(defaults, raw, keep_none=False), "name": name})
    except ValidationError as exc:
        field, message = _describe(exc, ModelEntry)
        raise source.error(message, model=name, field=field) from None


def _check_unique_names(entries: list[ModelEntry], blame: dict[str, _Source]) -> None:
    """Names, served names and aliases must not collide across models (case-insensitive)."""
    owner = {entry.name.casefold(): entry.name for entry in entries}
    # Register untouched bundled entries first, so a clash is blamed on the file that introduced it.
    ordered = sorted(entries, key=lambda e: blame[e.name].label == "MODELS_OVERRIDES")
    for entry in ordered:
        others = [("served_model_name", entry.served_model_name)] if entry.served_model_name != entry.name else []
        others += [(f"aliases[{i}]", alias) for i, alias in enumerate(entry.aliases)]
        for field, value in others:
            taken = owner.setdefault(value.casefold(), entry.name)
            if taken != entry.name:
                raise blame[entry.name].error(
                    f"{value!r} is already a name, served name or alias of model {taken!r}",
                    model=entry.name, field=field)


def _deep_merge(base: dict, over: dict, *, keep_none: bool) -> dict:
    """Mappings merge key by key; anything else replaces. None deletes the key unless keep_none."""
    merged = dict(base)
    for key, value in over.items():
        if value is None and not keep_none:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, keep_none=keep_none)
        elif isinstance(value, dict) and not keep_none:
            merged[key] = _deep_merge({}, value, keep_none=False)  # drop nested None markers
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, root: type[BaseModel]) -> tuple[str, str]:
    """(field path, message) for a pydantic error: the first problem, then how many more."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        if not field:  # a whole-entry check: its message starts with the field it is about
            field, _, message = message.partition(": ") if ": " in message else ("(entry)", "", message)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, loc[:-1])
            message = f"unknown key {loc[-1]!r}{_suggest(str(loc[-1]), allowed)}; allowed: {', '.join(allowed)}"
        elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], dict):
            message += f" (got {_shown(err['input'])})"
        problems.append((field, message))
    field, message = problems[0]
    if len(problems) > 1:
        message += "; also " + "; ".join(f"{f}: {m}" for f, m in problems[1:])
    return field, message


def _allowed_keys(root: type[BaseModel], path: list) -> list[str]:
    cls = root
    for part in path:
        annotation = cls.model_fields[part].annotation if part in cls.model_fields else None
        nested = [arg for arg in getattr(annotation, "__args__", (annotation,))
                  if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if not nested:
            return []
        cls = nested[0]
    return [name for name in cls.model_fields if not (cls is ModelEntry and name == "name")]


def _suggest(word: str, allowed) -> str:
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_INPUT_LIMIT else text[: _SHOWN_INPUT_LIMIT - 3] + "..."


def _type_name(value: object) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false",
            type(None): "nothing (null)"}.get(
        type(value), type(value).__name__)
