"""Where a model runs: an ordered set of nodes, the head first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app import shellsafe
from app.errors import InvalidInput
from app.settings import NodeConfig


@dataclass(frozen=True)
class Placement:
    """The nodes a model runs on, head first."""

    nodes: tuple[NodeConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise InvalidInput("a placement needs at least one node", field="placement")
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise InvalidInput(f"placement {'+'.join(names)} names a node twice", field="placement")
        for name in names:
            shellsafe.validate_service_name(name, field="placement node name")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    @property
    def head(self) -> NodeConfig:
        return self.nodes[0]

    @property
    def label(self) -> str:
        return "+".join(self.names)

    def __len__(self) -> int:
        return len(self.nodes)


def resolve_placement(spec: str, nodes: Sequence[NodeConfig]) -> Placement:
    """`spark2`, `spark1+spark2` (or `spark1,spark2`), `both` (first two nodes) or `all`."""
    by_name = {node.name: node for node in nodes}
    text = spec.strip().lower() if isinstance(spec, str) else spec
    if text == "all":
        return Placement(tuple(nodes))
    if text == "both":
        if len(nodes) < 2:
            raise InvalidInput(f"placement 'both' needs two nodes; configured: {', '.join(by_name) or 'none'}",
                               field="placement")
        return Placement(tuple(nodes[:2]))
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"Invalid placement {spec!r}: use a node name, name+name, 'both' or 'all'",
                           field="placement")
    chosen = []
    for name in text.replace(",", "+").split("+"):
        if name not in by_name:
            raise InvalidInput(f"unknown node {name!r} in placement {spec!r}; configured: {', '.join(by_name)}",
                               field="placement")
        chosen.append(by_name[name])
    return Placement(tuple(chosen))
