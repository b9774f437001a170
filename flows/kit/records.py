"""The rows a playbook run reads and writes: its signal, the account, its playbook_runs rows."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from flows.kit.context import SignalInfo
from flows.kit.runtime import current_flow_run_id, runtime
from laer_domain.model import Account
from persistence.tables import AccountRow, PlaybookRunRow, SignalRow
from persistence.upsert import insert_if_absent


def _info(row: SignalRow) -> SignalInfo:
    return SignalInfo(row.id, row.kind, row.at, row.stage, dict(row.evidence), row.retracted_at)


def load_signal(signal_id: str) -> SignalInfo | None:
    """The stored signal that started a playbook (its kind, instant and evidence)."""
    with runtime().sessions() as session:
        row = session.get(SignalRow, signal_id)
        return None if row is None else _info(row)


def coalesced_signals(account_id: str, signal: SignalInfo) -> list[SignalInfo]:
    """Signals of `signal`'s kind the account got at the same instant, `signal` among them.

    One sweep can raise several (one per underused feature); the dispatcher starts one run.
    """
    with runtime().sessions() as session:
        rows = session.scalars(select(SignalRow).where(
            SignalRow.account_id == account_id, SignalRow.at == signal.at,
            SignalRow.kind == signal.kind, SignalRow.retracted_at.is_(None)))
        return [_info(r) for r in rows]


def load_account(account_id: str) -> Account | None:
    """Re-read the account so every step sees the current stage."""
    # Plain read, no row lock: a flow must never block the consumers.
    with runtime().sessions() as session:
        row = session.get(AccountRow, account_id)
        return None if row is None else Account.model_validate(row.state)


def mark_run(state: str) -> None:
    """Record the current run's state on its playbook_runs row."""
    run_id = current_flow_run_id()
    if run_id is None:
        return
    with runtime().sessions() as session:
        for row in session.scalars(select(PlaybookRunRow).where(
                PlaybookRunRow.flow_run_id == run_id)):
            row.state = state
            row.updated_at = datetime.now(UTC)
        session.commit()


def register_follow_up(*, account_id: str, playbook: str, signal_id: str, key: str,
                       flow_run_id: str, name: str | None, state: str) -> None:
    """Record a scheduled follow-up run, so the account+playbook stays 'open' until it ends."""
    now = datetime.now(UTC)
    with runtime().sessions() as session:
        insert_if_absent(session, PlaybookRunRow, dict(
            account_id=account_id, playbook=playbook, signal_id=signal_id, idempotency_key=key,
            flow_run_id=flow_run_id, flow_run_name=name, state=state, created_at=now,
            updated_at=now), key=("idempotency_key",))
        session.commit()
