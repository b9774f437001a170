"""What a playbook is written in: its steps, the signal that started it and a step's context."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows.kit.delivery import Delivery, assign_task, deliver_message
from flows.kit.registry import Playbook
from laer_domain.model import Account, Contact, Role


@dataclass(frozen=True)
class SignalInfo:
    """The signal that started the playbook, as stored in the signals table."""

    id: str
    kind: str
    at: datetime
    stage: str
    evidence: dict[str, Any]
    retracted_at: datetime | None = None  # a rebuild of the account no longer raises it

    @property
    def details(self) -> dict[str, Any]:
        """The rule's observed values."""
        return dict(self.evidence.get("details") or {})


class StepContext:
    """What a step sees and can do: the account now, the signal, messages and tasks."""

    def __init__(self, playbook: Playbook, account: Account, signal: SignalInfo,
                 step: str) -> None:
        self.playbook = playbook
        self.account = account
        self.signal = signal
        self.step = step
        self.deliveries: list[Delivery] = []
        self.notes: list[str] = []
        self.retry_at: datetime | None = None  # earliest deferred message (gate clock)

    def note(self, text: str) -> None:
        """Add a line to the run's report."""
        self.notes.append(text)

    def contacts(self, roles: Sequence[str] = ()) -> list[Contact]:
        """Contacts with one of `roles` (all contacts if none has, or no roles given)."""
        chosen = [c for c in self.account.contacts if c.role in roles] if roles else []
        return chosen or list(self.account.contacts)

    def send(self, message: str, *, roles: Sequence[str] = (), promotional: bool = False,
             extra: dict[str, Any] | None = None) -> list[Delivery]:
        """Send the templated `message` to the contacts with `roles`, each through the gate."""
        contacts = self.contacts(roles)
        if not contacts:
            self.note(f"{message}: no contact to write to")
        out: list[Delivery] = []
        for contact in contacts:
            # A failed delivery is stored (retrying or failed), not raised; what still raises
            # (the database gone) fails the run, and the reconciler runs the step again.
            got = deliver_message(self.playbook.name, self.playbook.priority, self.signal.id,
                                  self.step, message, self.account, contact,
                                  promotional, extra or {})
            if got.status == "deferred" and got.due_at is not None:
                self.retry_at = min(self.retry_at or got.due_at, got.due_at)
            out.append(got)
        self.deliveries.extend(out)
        return out

    def assign(self, name: str, subject: str, *, role: Role | None = None,
               due_in_days: float = 2, details: dict[str, Any] | None = None,
               key: str | None = None) -> Delivery:
        """Create (once per `key`) a task for a person in `role` (default: the owner)."""
        key = key or f"{self.playbook.name}:{self.signal.id}:{self.step}:task:{name}"
        got = assign_task(self.playbook.name, self.signal.id, self.step, name, key,
                          self.account.id, subject, (role or self.playbook.owner).value,
                          due_in_days, details or {})
        self.deliveries.append(got)
        return got


StepAction = Callable[[StepContext], None]


@dataclass(frozen=True)
class Step:
    """One step: its name (`day-3`), when it falls due and what it does."""

    name: str
    run: StepAction
    day: float = 0.0  # playbook days after the first step
    # Optional event-time instant the step is due (e.g. term end - 60 days); overrides `day`.
    due: Callable[[Account, SignalInfo], datetime] | None = None


ExitCheck = Callable[[Account, SignalInfo, Step], "str | None"]
