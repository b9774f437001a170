"""What a playbook flow needs at run time: the container, its run id, the account."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.runtime import flow_run
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from laer.bootstrap import Container, container
from laer_domain.model import Account
from persistence.tables import AccountRow, PlaybookRunRow, SignalRow


def app() -> Container:
    """The process container (settings come from the worker's environment)."""
    return container()


def current_flow_run_id() -> str | None:
    """The id of the flow run executing now, if any."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def load_account(account_id: str) -> Account | None:
    """Re-read the account so every step sees the current stage."""
    # Plain read, no row lock: a flow must never block the consumers.
    with app().sessions() as session:
        row = session.get(AccountRow, account_id)
        return None if row is None else Account.model_validate(row.state)


def mark_run(state: str) -> None:
    """Record the current run's state on its playbook_runs row."""
    run_id = current_flow_run_id()
    if run_id is None:
        return
    with app().sessions() as session:
        for row in session.scalars(select(PlaybookRunRow).where(
                PlaybookRunRow.flow_run_id == run_id)):
            row.state = state
            row.updated_at = datetime.now(UTC)
        session.commit()


def load_signal(signal_id: str) -> SignalRow | None:
    """The stored signal that started a playbook (its kind, instant and evidence)."""
    with app().sessions() as session:
        return session.get(SignalRow, signal_id)


def register_follow_up(*, account_id: str, playbook: str, signal_id: str, key: str,
                       flow_run_id: str, name: str | None, state: str) -> None:
    """Record a scheduled follow-up run, so the account+playbook stays 'open' until it ends."""
    now = datetime.now(UTC)
    with app().sessions() as session:
        if session.scalar(select(PlaybookRunRow.id).where(
                PlaybookRunRow.idempotency_key == key)) is not None:
            return
        session.add(PlaybookRunRow(
            account_id=account_id, playbook=playbook, signal_id=signal_id, idempotency_key=key,
            flow_run_id=flow_run_id, flow_run_name=name, state=state, created_at=now,
            updated_at=now))
        try:
            session.commit()
        except IntegrityError:  # a retried task raced its first attempt
            session.rollback()


def tag_current_run(tags: list[str]) -> None:
    """Add account, stage and signal tags to the running flow run (shown in the Prefect UI)."""
    run_id = current_flow_run_id()
    if run_id is None:
        return
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            merged = sorted(set(run.tags) | set(tags))
            if merged != sorted(run.tags):
                client.update_flow_run(UUID(run_id), tags=merged)
    except Exception:  # tags are a convenience: never fail a playbook over them
        return
