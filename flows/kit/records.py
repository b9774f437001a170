"""The rows a playbook step reads: its signal and the account as they are now."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from flows.kit.context import SignalInfo
from flows.kit.runtime import runtime
from laer_domain.model import Account
from persistence.tables import AccountRow, SignalRow

_shared: ContextVar[Session | None] = ContextVar("laer_step_reads", default=None)


@contextmanager
def shared_reads() -> Iterator[Session]:
    """One read session for the loads in this block (a step's first reads share it)."""
    with runtime().reads() as session:
        token = _shared.set(session)
        try:
            yield session
        finally:
            _shared.reset(token)


@contextmanager
def _reading() -> Iterator[Session]:
    shared = _shared.get()
    if shared is not None:
        yield shared
        return
    with runtime().reads() as session:
        yield session


# Built once, Core columns rather than ORM rows: a step reads both, every time.
_SIGNAL_COLUMNS = (SignalRow.id, SignalRow.kind, SignalRow.at, SignalRow.stage,
                   SignalRow.evidence, SignalRow.retracted_at)
_SIGNAL = select(*_SIGNAL_COLUMNS).where(SignalRow.id == bindparam("id"))
_ACCOUNT_STATE = select(AccountRow.state).where(AccountRow.id == bindparam("id"))


def _info(row: Row[Any]) -> SignalInfo:
    id_, kind, at, stage, evidence, retracted_at = row
    return SignalInfo(id_, kind, at, stage, dict(evidence), retracted_at)


def load_signal(signal_id: str) -> SignalInfo | None:
    """The stored signal that started a playbook (its kind, instant and evidence)."""
    with _reading() as session:
        row = session.execute(_SIGNAL, {"id": signal_id}).first()
        return None if row is None else _info(row)


def coalesced_signals(account_id: str, signal: SignalInfo) -> list[SignalInfo]:
    """Signals of `signal`'s kind the account got at the same instant, `signal` among them.

    One sweep can raise several (one per underused feature); the dispatcher starts one run.
    """
    with runtime().reads() as session:
        rows = session.execute(select(*_SIGNAL_COLUMNS).where(
            SignalRow.account_id == account_id, SignalRow.at == signal.at,
            SignalRow.kind == signal.kind, SignalRow.retracted_at.is_(None)))
        return [_info(r) for r in rows]


def load_account(account_id: str) -> Account | None:
    """Re-read the account so every step sees the current stage."""
    # Plain read, no row lock: a flow must never block the consumers.
    with _reading() as session:
        state = session.scalar(_ACCOUNT_STATE, {"id": account_id})
        return None if state is None else Account.model_validate(state)
