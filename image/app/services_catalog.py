"""The services catalog: the bundled services.yaml, then SERVICES_OVERRIDES merged over it.

Same rules as the model catalog (app/catalog.py, docs/MODELS.md), same YAML reader and merge:
each entry under `services` in SERVICES_OVERRIDES adds a service, deep-merges into the service of
that name (mappings merge, lists and scalars replace), replaces it whole (`replace: true`), or
removes it (`name: null`). Every problem is a ConfigError naming the file, the service and the
field; the bundled file is checked on its own first, so a problem found after merging is blamed
on SERVICES_OVERRIDES.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

# The model catalog's YAML reader and merge rules, shared so both files behave alike.
from app.catalog import _deep_merge, _describe, _suggest, _type_name, load_yaml_file, located_error
from app.errors import ConfigError, NotFound
from app.service_schema import ServiceEntry

BUNDLED_SERVICES_YAML = Path(__file__).resolve().parent / "services.yaml"
_TOP_LEVEL_KEYS = ("services",)


def _error(source: str, message: str, *, service: str | None = None, field: str | None = None) -> ConfigError:
    return located_error(source, message, kind="service", name=service, field=field)


class ServicesCatalog:
    """The loaded services, by name (catalog order: bundled, then added by SERVICES_OVERRIDES)."""

    def __init__(self, entries: list[ServiceEntry], sources: list[str]) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self.sources = tuple(sources)

    def __iter__(self) -> Iterator[ServiceEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self, kind: str | None = None) -> list[ServiceEntry]:
        return [e for e in self._entries.values() if kind is None or e.kind == kind]

    def get(self, name: str) -> ServiceEntry:
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NotFound(f"unknown service {name!r}: {hint}known services: {', '.join(self.names()) or 'none'} "
                       "(add one with SERVICES_OVERRIDES, docs/SERVICES.md)", field="service")


def load_services_catalog(settings) -> ServicesCatalog:
    """Read the bundled services.yaml and `settings.services_overrides`."""
    base = f"bundled services catalog {BUNDLED_SERVICES_YAML}"
    services = _read(BUNDLED_SERVICES_YAML, base, allow_empty=False)
    entries = {name: _build(name, raw, base) for name, raw in services.items()}
    sources = [base]
    if getattr(settings, "services_overrides", None):
        path = Path(settings.services_overrides)
        over = f"SERVICES_OVERRIDES {path}"
        sources.append(over)
        for name, raw in _read(path, over, allow_empty=True).items():
            if raw is None:
                services.pop(name, None)
                entries.pop(name, None)
                continue
            raw = dict(raw)
            replace = raw.pop("replace", False)
            if not isinstance(replace, bool):
                raise _error(over, f"replace must be true or false, got {replace!r}", service=name, field="replace")
            services[name] = raw if replace or name not in services else _deep_merge(services[name], raw,
                                                                                     keep_none=True)
            entries[name] = _build(name, services[name], over)
    _check_ports(list(entries.values()), sources[-1])
    return ServicesCatalog(list(entries.values()), sources)


def _read(path: Path, source: str, *, allow_empty: bool) -> dict:
    """The `services:` mapping of one file, after checking its shape."""
    data = load_yaml_file(path, lambda message: _error(source, message))
    if data is None and allow_empty:
        return {}
    if not isinstance(data, dict):
        raise _error(source, f"the top level must be a mapping with `services:`, got {_type_name(data)}")
    unknown = [str(key) for key in data if key not in _TOP_LEVEL_KEYS]
    if unknown:
        raise _error(source, f"unknown top-level key {unknown[0]!r}{_suggest(unknown[0], _TOP_LEVEL_KEYS)}; "
                             f"allowed: {', '.join(_TOP_LEVEL_KEYS)}")
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise _error(source, f"must be a mapping of service name to settings, got {_type_name(services)}",
                     field="services")
    if not services and not allow_empty:
        raise _error(source, "no services: the file needs a `services:` mapping with at least one entry")
    for name, raw in services.items():
        if not isinstance(name, str):
            raise _error(source, f"service names must be text, got {name!r}", field="services")
        if raw is None and allow_empty:
            continue  # `name: null` in SERVICES_OVERRIDES removes the service
        if not isinstance(raw, dict):
            raise _error(source, f"the entry must be a mapping of settings, got {_type_name(raw)}", service=name)
    return dict(services)


def _build(name: str, raw: dict, source: str) -> ServiceEntry:
    if "name" in raw and raw["name"] != name:
        raise _error(source, f"{raw['name']!r} differs from the catalog key; leave `name` out", service=name,
                     field="name")
    try:
        return ServiceEntry.model_validate({**_deep_merge({}, raw, keep_none=False), "name": name})
    except ValidationError as exc:
        field, message = _describe(exc, ServiceEntry)
        raise _error(source, message, service=name, field=field) from None


def _check_ports(entries: list[ServiceEntry], source: str) -> None:
    """Every service uses the host network: two on the same node and port would fight over it."""
    taken: dict[tuple[str, int], str] = {}
    for entry in entries:
        other = taken.setdefault((entry.node, entry.port), entry.name)
        if other != entry.name:
            raise _error(source, f"{entry.port} on {entry.node} is already the port of service {other!r}; "
                                 "pick another port", service=entry.name, field="port")
