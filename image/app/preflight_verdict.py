"""What the pre-flight found: Problem, Verdict, and the one way a refusal becomes an HTTP 400.

    Problem(check, node, message)   one finding; warnings have the same shape
    Verdict                         ok, problems, warnings, the checks that ran, the parsed commands
    raise_for_problems(verdict)     InvalidInput (HTTP 400) naming every problem
    Findings                        what the checks append to while they run (deduplicated)

Also the wording shared by the checks' messages (gb, plural).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidInput
from app.launch_parse import ParsedLaunch, flag_float, flag_int


@dataclass(frozen=True)
class Problem:
    """One finding: `check` is syntax, topology, memory, port, image, container or node facts;
    node None = the plan."""

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
    raise InvalidInput(f"pre-flight refused the launch ({plural(count, 'problem')}): "
                       + "; ".join(p.message for p in verdict.problems), field="preflight")


def _summary(parsed: ParsedLaunch) -> dict[str, Any]:
    """What the dry run shows of each node's command."""
    return {"image": parsed.image, "model": parsed.model, "container": parsed.container_name,
            "port": flag_int(parsed, "--port"), "headless": parsed.headless,
            "tensor_parallel_size": flag_int(parsed, "--tensor-parallel-size"),
            "pipeline_parallel_size": flag_int(parsed, "--pipeline-parallel-size"),
            "gpu_memory_utilization": flag_float(parsed, "--gpu-memory-utilization")}


class Findings:
    """The problems and warnings of one pre-flight, each message once, prefixed with its node."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, check: str, node: str | None, message: str) -> None:
        _add_once(self.problems, check, node, message)

    def warn(self, check: str, node: str | None, message: str) -> None:
        _add_once(self.warnings, check, node, message)


def _add_once(found: list[Problem], check: str, node: str | None, message: str) -> None:
    prefixed = f"{node}: {message}" if node else message
    if all(p.message != prefixed for p in found):
        found.append(Problem(check, node, prefixed))


def gb(value: float) -> str:
    return f"{value:.1f} GB"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
