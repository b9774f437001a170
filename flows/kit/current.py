"""The step an executor is running in this thread: its Prefect task run, tags and report."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CurrentStep:
    """What a step adds to its own record while it runs (read back by the executor)."""

    key: str
    task_run_id: str
    tags: set[str] = field(default_factory=set)
    markdown: str | None = None
    name: str | None = None  # playbook/ACCOUNT/step, once the step knows its name
    settings: Any = None  # the playbook settings, read on first use in this step
    attempt: int = 0  # which execution of the step row this is (1, 2, ... as leased)
    # Steps it queues, when its executor adds them with its own end (one transaction);
    # None: each is added as it is queued.
    queued: list[dict[str, Any]] | None = None


_current: ContextVar[CurrentStep | None] = ContextVar("laer_current_step", default=None)


def current_step() -> CurrentStep | None:
    """The step executing in this context, if an executor runs it."""
    return _current.get()


def enter_step(step: CurrentStep) -> object:
    """Make `step` current; returns the token `leave_step` needs."""
    return _current.set(step)


def leave_step(token: object) -> None:
    """Restore what was current before `enter_step`."""
    _current.reset(token)  # type: ignore[arg-type]
