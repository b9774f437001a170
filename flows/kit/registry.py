"""Playbook declarations and their discovery: one module in `flows/` is one playbook."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from laer_domain.model import Role, Stage
from laer_domain.signals import SignalKind

DEPLOYMENT_NAME = "laer"


@dataclass(frozen=True)
class Playbook:
    """What starts a playbook, who owns it and how urgent its messages are."""

    name: str
    triggers: frozenset[SignalKind]
    owner: Role
    priority: int  # higher wins at the outreach gate: renewal > rescue > onboarding > upsell
    stages: frozenset[Stage] = field(default_factory=frozenset)  # empty: any stage
    # For StageChanged triggers: which (from, to) moves count; empty means every move.
    transitions: frozenset[tuple[Stage, Stage]] = field(default_factory=frozenset)
    description: str = ""

    @property
    def deployment(self) -> str:
        """`flow-name/deployment-name`, as run_deployment expects."""
        return f"{self.name}/{DEPLOYMENT_NAME}"

    def wants(self, kind: SignalKind, stage: Stage, details: dict[str, Any]) -> bool:
        """Whether a signal of `kind`, raised in `stage` with these details, starts it."""
        if kind not in self.triggers or (self.stages and stage not in self.stages):
            return False
        if kind is SignalKind.StageChanged and self.transitions:
            move = (details.get("from"), details.get("to"))
            return any(move == (a.value, b.value) for a, b in self.transitions)
        return True


@dataclass(frozen=True)
class Discovered:
    playbook: Playbook
    flow: Any  # the Prefect flow object
    module: str
    first_step: str = "start"  # the name of the module's first STEPS entry


def discover(package: str = "flows") -> list[Discovered]:
    """Import every top-level module of `package` that declares PLAYBOOK and a flow."""
    pkg = importlib.import_module(package)
    found: list[Discovered] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "PLAYBOOK", None)
        flow = getattr(module, "FLOW", None)
        if isinstance(spec, Playbook) and flow is not None:
            steps = getattr(module, "STEPS", None) or []
            first = str(getattr(steps[0], "name", "start")) if steps else "start"
            found.append(Discovered(spec, flow, module.__name__, first))
    return sorted(found, key=lambda d: d.playbook.name)
