"""What the run did, read from the store and the mailbox: executed steps, first actions,
latencies, lost and duplicated work. The arithmetic is pure; the reads are below it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bench.stats import percentile
from persistence.tables import ActionRow, OutboxRow, PlaybookRunRow, PlaybookStepRow

Pair = tuple[str, str]  # (account, playbook)


@dataclass(frozen=True)
class Executed:
    """One executed step: whose, which, when it was done and how often it was tried."""

    account_id: str
    playbook: str
    name: str
    done_at: datetime
    attempts: int = 1
    key: str = ""  # the step's own identity (its idempotency key); the name when empty


def first_done(steps: Iterable[Executed]) -> dict[Pair, datetime]:
    """The instant each (account, playbook) had its first step done."""
    first: dict[Pair, datetime] = {}
    for s in steps:
        key = (s.account_id, s.playbook)
        if key not in first or s.done_at < first[key]:
            first[key] = s.done_at
    return first


def lost(expected: set[Pair], steps: Iterable[Executed]) -> set[Pair]:
    """Expected (account, playbook) pairs with no executed step (coalesced signals of one
    pair share its run, so the pair is what must have run)."""
    return expected - set(first_done(steps))


def duplicated_steps(steps: Iterable[Executed]) -> int:
    """Extra executions: one step (its key) done more than once. Two signals of one account
    and playbook give two steps of one name, so the name is not the identity."""
    return sum(n - 1 for n in Counter(s.key or s.name for s in steps).values() if n > 1)


def extra_shown(shown: Counter[str], steps: Iterable[Executed]) -> int:
    """Runs Prefect shows beyond the steps of that name in the store (a step reported twice)."""
    stored = Counter(s.name for s in steps)
    return sum(max(0, n - stored[name]) for name, n in shown.items())


def extra_copies(ids: Counter[str]) -> int:
    """Extra copies of a message id (one delivered twice counts one)."""
    return sum(n - 1 for n in ids.values() if n > 1)


def steps_per_second(steps: Iterable[Executed], since: datetime, until: datetime) -> float:
    """Steps done in (since, until] per second of that window."""
    seconds = (until - since).total_seconds()
    done = sum(1 for s in steps if since < s.done_at <= until)
    return done / seconds if seconds > 0 else 0.0


def latencies(queued: dict[str, datetime], actions: Iterable[tuple[str, datetime]]
              ) -> list[float]:
    """Seconds from each signal's queueing to its earliest action, ascending (signals with
    no action are left out)."""
    first: dict[str, datetime] = {}
    for signal_id, at in actions:
        if signal_id in queued and (signal_id not in first or at < first[signal_id]):
            first[signal_id] = at
    return sorted((at - queued[sid]).total_seconds() for sid, at in first.items())


def p50_p99(ordered: list[float]) -> tuple[float | None, float | None]:
    """The median and the 99th percentile of an ascending list (None when empty)."""
    if not ordered:
        return None, None
    return percentile(ordered, 0.5), percentile(ordered, 0.99)


# --- reads ------------------------------------------------------------------------------------


def executed(sessions: sessionmaker[Session], prefix: str) -> tuple[str, list[Executed]]:
    """Executed steps of the run's accounts, and where they were read: `playbook_steps` (the
    in-process executor) or, when no step was ever stored there, `playbook_runs` (one
    Prefect flow run per step)."""
    like = f"{prefix}-%"
    with sessions() as s:
        if s.scalar(select(PlaybookStepRow.id).limit(1)) is not None:
            return "playbook_steps", [
                Executed(r.account_id, r.playbook, r.run_name, r.done_at, r.attempts,
                         r.idempotency_key)
                for r in s.scalars(select(PlaybookStepRow).where(
                    PlaybookStepRow.account_id.like(like), PlaybookStepRow.status == "done",
                    PlaybookStepRow.done_at.is_not(None)))
                if r.done_at is not None]
        return "playbook_runs", [
            Executed(r.account_id, r.playbook, r.flow_run_name or r.idempotency_key,
                     r.updated_at)
            for r in s.scalars(select(PlaybookRunRow).where(
                PlaybookRunRow.account_id.like(like), PlaybookRunRow.state == "Completed"))]


def done_pairs(sessions: sessionmaker[Session], prefix: str) -> set[Pair]:
    """(account, playbook) pairs of the run's accounts with a step done: a light poll (no
    ORM rows), so waiting for a burst takes little of the CPU the system under test needs."""
    with sessions() as s:
        return set(s.execute(select(PlaybookStepRow.account_id, PlaybookStepRow.playbook)
                             .where(PlaybookStepRow.account_id.like(f"{prefix}-%"),
                                    PlaybookStepRow.status == "done").distinct()).tuples())


def first_actions(sessions: sessionmaker[Session], prefix: str) -> list[tuple[str, datetime]]:
    """(signal id, created_at) of every action of the run's accounts."""
    with sessions() as s:
        return [(str((payload or {}).get("signal_id")), at) for payload, at in s.execute(
            select(ActionRow.payload, ActionRow.created_at).where(
                ActionRow.account_id.like(f"{prefix}-%")))]


def queued_at(sessions: sessionmaker[Session], signal_ids: list[str]) -> dict[str, datetime]:
    """When each signal entered the outbox."""
    out: dict[str, datetime] = {}
    with sessions() as s:
        for i in range(0, len(signal_ids), 500):
            out.update(s.execute(select(OutboxRow.signal_id, OutboxRow.created_at).where(
                OutboxRow.signal_id.in_(signal_ids[i:i + 500]))).tuples().all())
    return out
