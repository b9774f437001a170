"""Replacing an account's history after a rebuild: the SQL both repositories run.

A late event rebuilds its account (`laer_domain.resequence`). Its stage changes, health
changes and timeline rows are deleted and written again from the rebuild, and its signals
are settled against the stored ones (signal ids are deterministic): a stored signal the
rebuild no longer raises is retracted (`signals.retracted_at`; a pending outbox row becomes
`retracted`, which the dispatcher never picks up), one it raises again stays stored (never
queued twice; a retracted one is restored, its outbox row pending again if it never ran;
changed evidence is updated), and a new one is inserted by the caller like any new signal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from laer_domain.signals import Signal
from persistence.bulk import chunks
from persistence.tables import (
    AppliedEventRow,
    HealthChangeRow,
    OutboxRow,
    SignalRow,
    StageChangeRow,
)


@dataclass(frozen=True)
class StoredSignal:
    """What settling needs of a stored signal."""

    retracted: bool
    stage: str
    evidence: dict[str, Any]


def stored_signals(session: Session, account_ids: Iterable[str]) -> dict[str, StoredSignal]:
    """The stored signals of these accounts, retracted ones included, by id."""
    found: dict[str, StoredSignal] = {}
    for part in chunks(sorted(set(account_ids))):
        for signal_id, retracted_at, stage, evidence in session.execute(
                select(SignalRow.id, SignalRow.retracted_at, SignalRow.stage,
                       SignalRow.evidence).where(SignalRow.account_id.in_(part))):
            found[signal_id] = StoredSignal(retracted_at is not None, stage, evidence)
    return found


def delete_history(session: Session, account_ids: Iterable[str]) -> None:
    """Delete the stage changes, health changes and timeline rows of these accounts."""
    for part in chunks(sorted(set(account_ids))):
        for table in (StageChangeRow, HealthChangeRow, AppliedEventRow):
            session.execute(delete(table).where(table.account_id.in_(part)))


def settle(session: Session, stored: Mapping[str, StoredSignal], raised: Mapping[str, Signal],
           now: datetime) -> None:
    """Retract, restore and refresh stored signals of rebuilt accounts (see the module doc).

    `stored` holds the rebuilt accounts' stored signals, `raised` (by id, the first of each)
    the signals the rebuild raised; signals in `raised` but not `stored` are the caller's.
    """
    retract = sorted(i for i, s in stored.items() if not s.retracted and i not in raised)
    restore_signals(session, [i for i, s in stored.items() if s.retracted and i in raised])
    refresh: list[dict[str, Any]] = []
    for signal_id, known in stored.items():
        signal = raised.get(signal_id)
        if signal is None:
            continue
        evidence = signal.evidence.model_dump(mode="json")
        if (signal.stage.value, evidence) != (known.stage, known.evidence):
            refresh.append({"id": signal_id, "stage": signal.stage.value, "evidence": evidence})
    for part in chunks(retract):
        session.execute(update(SignalRow).where(SignalRow.id.in_(part))
                        .values(retracted_at=now))
        session.execute(update(OutboxRow).where(OutboxRow.signal_id.in_(part),
                                                OutboxRow.status == "pending")
                        .values(status="retracted"))
    if refresh:  # ORM bulk UPDATE by primary key
        session.execute(update(SignalRow), refresh)


def restore_signals(session: Session, signal_ids: list[str]) -> None:
    """Signals raised again after a retraction: in force again, queued again if never run."""
    for part in chunks(sorted(signal_ids)):
        session.execute(update(SignalRow).where(SignalRow.id.in_(part))
                        .values(retracted_at=None))
        session.execute(update(OutboxRow).where(OutboxRow.signal_id.in_(part),
                                                OutboxRow.status == "retracted")
                        .values(status="pending"))
