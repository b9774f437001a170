"""What a backtest did, counted as it runs, and its input validated and put in event-time
order."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from laer_domain.events import CloudEvent, InvalidEvent, parse_event
from laer_domain.resequence import event_key


@dataclass
class BacktestStats:
    """What a backtest did, updated as it runs (the progress bar reads it)."""

    events: int = 0  # read from the input
    done: int = 0  # handled so far (applied, duplicate, parked, invalid or failed)
    statuses: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)  # by reason
    failures: list[str] = field(default_factory=list)
    signals: int = 0
    runs_started: int = 0
    runs_coalesced: int = 0
    steps: Counter[str] = field(default_factory=Counter)  # by end state
    sweeps: int = 0
    batches: int = 0  # transactions of input events
    first: datetime | None = None
    last: datetime | None = None
    now: datetime | None = None  # the simulated instant
    pending_steps: int = 0  # still queued at the end (due after the horizon)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    phases: defaultdict[str, float] = field(  # CPU seconds by phase
        default_factory=lambda: defaultdict(float))
    phases_wall: defaultdict[str, float] = field(  # wall seconds by phase
        default_factory=lambda: defaultdict(float))
    statements: Counter[str] = field(default_factory=Counter)  # SQL statements by phase
    _in: list[str] = field(default_factory=list)  # the phases open now, innermost last

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the CPU and wall time of the block under `name`."""
        began, wall = time.process_time(), time.perf_counter()
        self._in.append(name)
        try:
            yield
        finally:
            self._in.pop()
            self.phases[name] += time.process_time() - began
            self.phases_wall[name] += time.perf_counter() - wall

    def count_statement(self) -> None:
        """One SQL statement sent, by whichever phase is open."""
        self.statements[self._in[-1] if self._in else "other"] += 1

    def elapsed_or_now(self) -> float:
        """Seconds the run took, or has taken so far."""
        return self.elapsed_s or time.perf_counter() - self.started

    @property
    def events_per_s(self) -> float:
        """Input events handled per second of wall time."""
        return self.done / self.elapsed_s if self.elapsed_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values for summary.json."""
        return {
            "events": self.events, "handled": self.done, "statuses": dict(self.statuses),
            "invalid": dict(self.invalid), "failures": self.failures[:50],
            "signals": self.signals, "runs_started": self.runs_started,
            "runs_coalesced": self.runs_coalesced, "steps": dict(self.steps),
            "sweeps": self.sweeps, "batches": self.batches, "pending_steps": self.pending_steps,
            "first_event": self.first.isoformat() if self.first else None,
            "last_event": self.last.isoformat() if self.last else None,
            "simulated_until": self.now.isoformat() if self.now else None,
            "elapsed_s": round(self.elapsed_s, 3), "cpu_s": round(self.cpu_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_s_by_phase": {k: round(v, 3) for k, v in sorted(self.phases.items())},
            "wall_s_by_phase": {k: round(v, 3) for k, v in sorted(self.phases_wall.items())},
            "statements_by_phase": dict(sorted(self.statements.items())),
        }


Input = Mapping[str, Any] | CloudEvent | InvalidEvent


def parse_input(raw_events: Iterable[Input], stats: BacktestStats) -> list[CloudEvent]:
    """Validate every input event (bad ones are counted by reason) and sort by event time.

    An input is a wire-shaped event, an event already decoded (from a topic), or the reason
    a record could not be decoded.
    """
    events: list[CloudEvent] = []
    for raw in raw_events:
        stats.events += 1
        if isinstance(raw, CloudEvent):
            events.append(raw)
            continue
        if isinstance(raw, InvalidEvent):
            stats.invalid[raw.reason] += 1
            stats.statuses["invalid"] += 1
            stats.done += 1
            continue
        try:
            events.append(parse_event(raw))  # history: no "too far in the future" check
        except InvalidEvent as exc:
            stats.invalid[exc.reason] += 1
            stats.statuses["invalid"] += 1
            stats.done += 1
        except Exception as exc:  # noqa: BLE001 - a malformed envelope: bad input too
            stats.invalid[type(exc).__name__] += 1
            stats.statuses["invalid"] += 1
            stats.done += 1
    events.sort(key=event_key)
    if events:
        stats.first, stats.last = events[0].time, events[-1].time
    return events
