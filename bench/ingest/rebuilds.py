"""What re-sequencing costs: account rebuilds counted and timed while a measurement runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import laer_domain.service as service
from persistence import history


@dataclass
class RebuildTimes:
    """Rebuilds seen, and the seconds spent in their three parts."""

    rebuilds: int = 0
    accounts: set[str] = field(default_factory=set)  # an account can be rebuilt again later
    rebuild_s: float = 0.0  # `EventBatch._resequenced`: timeline read, replay, buffering
    replays: int = 0
    replayed_events: int = 0
    replay_s: float = 0.0  # `replay` alone: the domain rules over the sorted timeline
    store_s: float = 0.0  # the write's extra statements for rebuilt accounts

    def summary(self) -> dict[str, Any]:
        """The figures the JSON and the table carry (per rebuild and per replayed event)."""
        each = self.rebuilds or 1
        return {"rebuilds": self.rebuilds, "accounts": len(self.accounts),
                "replayed_events": self.replayed_events,
                "events_per_rebuild": round(self.replayed_events / each, 1),
                "ms_per_rebuild": round(1000 * self.rebuild_s / each, 3),
                "us_per_replayed_event": round(1e6 * self.replay_s / (self.replayed_events or 1),
                                               1),
                "store_ms_per_rebuild": round(1000 * self.store_s / each, 3)}


def _timed(original: Callable[..., Any], add: Callable[[float, tuple[Any, ...], Any], None]
           ) -> Callable[..., Any]:
    """`original`, reporting each call's seconds, positional arguments and result to `add`."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        add(time.perf_counter() - t0, args, result)
        return result
    return wrapper


@contextmanager
def timing_rebuilds() -> Iterator[RebuildTimes]:
    """Time every rebuild of this process until the block ends.

    The benchmark wraps the functions in place (the consumer has no hook for this); they
    are put back on leaving the block. A replay that fails and is retried counts twice.
    """
    times = RebuildTimes()

    def on_rebuild(seconds: float, args: tuple[Any, ...], outcome: Any) -> None:
        if outcome is not None:  # None: nothing to rebuild from, the event was applied
            times.rebuilds += 1
            times.accounts.add(args[1])  # (batch, account id, late events)
            times.rebuild_s += seconds

    def on_replay(seconds: float, _: tuple[Any, ...], result: Any) -> None:
        times.replays += 1
        times.replayed_events += len(result[1].events)
        times.replay_s += seconds

    def on_store(seconds: float, *_: Any) -> None:
        times.store_s += seconds

    saved = [(service.EventBatch, "_resequenced", on_rebuild), (service, "replay", on_replay),
             *((history, name, on_store)
               for name in ("delete_history", "stored_signals", "settle"))]
    originals = [getattr(owner, name) for owner, name, _ in saved]
    for (owner, name, add), original in zip(saved, originals, strict=True):
        setattr(owner, name, _timed(original, add))
    try:
        yield times
    finally:
        for (owner, name, _), original in zip(saved, originals, strict=True):
            setattr(owner, name, original)
