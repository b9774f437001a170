"""The step machinery's one clock: the wall clock in production, a simulated instant in a
backtest.

Every "now" of scheduling, the step machine, delivery, action rows and the outreach gate
reads `now()`. A driver that simulates time (backtest/engine.py, PlaybookHarness in
simulated mode) enters `simulating(at)` and moves the instant with `SimClock.advance`; the
steps it runs in this thread (or context) then see that instant, and deliveries are recorded
instead of sent. Outside `simulating` nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class SimClock:
    """A simulated instant, moved forward by its driver; deliveries are recorded, not sent."""

    at: datetime
    record_only: bool = True

    def advance(self, to: datetime) -> None:
        """Move to `to` (never back: a step queued "now" must not fall due in the past)."""
        if to > self.at:
            self.at = to


_sim: ContextVar[SimClock | None] = ContextVar("laer_sim_clock", default=None)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def now() -> datetime:
    """The instant the step machinery works at: simulated if a driver set one, else UTC now."""
    sim = _sim.get()
    return datetime.now(UTC) if sim is None else sim.at


def simulated() -> SimClock | None:
    """The simulated clock of the current driver, if one runs."""
    return _sim.get()


@contextmanager
def simulating(at: datetime, *, record_only: bool = True) -> Iterator[SimClock]:
    """Run the block on a simulated clock starting at `at` (restored afterwards)."""
    clock = SimClock(_aware(at), record_only)
    token = _sim.set(clock)
    try:
        yield clock
    finally:
        _sim.reset(token)
