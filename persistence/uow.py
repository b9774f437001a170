"""Unit of work: one session, one transaction, the repositories that share it."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from persistence.repository import OffsetLedger, SqlLifecycleRepository


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    """`with UnitOfWork(factory) as uow: ...; uow.commit()`; leaving without commit rolls back."""

    def __init__(self, factory: sessionmaker[Session], group_id: str = "laer-consumers") -> None:
        self._factory = factory
        self._group_id = group_id

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        self.accounts = SqlLifecycleRepository(self.session)
        self.offsets = OffsetLedger(self.session, self._group_id)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        """Commit everything done in this unit."""
        self.session.commit()
