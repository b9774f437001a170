"""The database URLs laer runs on, as a pydantic type that settings classes share, and the
timeouts of its PostgreSQL sessions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator


def known_database(url: str) -> str:
    """`url` itself if it names a database laer supports (SQLite or PostgreSQL)."""
    if not url.startswith(("sqlite", "postgresql")):
        raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
    return url


DatabaseUrl = Annotated[str, AfterValidator(known_database)]


@dataclass(frozen=True)
class DbTimeouts:
    """PostgreSQL session limits: connecting (whole seconds), waiting on a lock, one statement.

    A wait past `lock_s` or a statement past `statement_s` fails with an error the consumer
    counts as an infrastructure failure (its batch is retried, no record dead-lettered).
    """

    connect_s: int = 10
    lock_s: float = 30.0
    statement_s: float = 120.0

    def options(self) -> str:
        """The libpq `options` that set the lock and statement timeouts (milliseconds)."""
        lock, statement = (max(1, round(s * 1000)) for s in (self.lock_s, self.statement_s))
        return f"-c lock_timeout={lock} -c statement_timeout={statement}"
