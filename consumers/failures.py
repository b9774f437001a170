"""What kind of failure an exception is: a record's own fault, or the infrastructure's.

Infrastructure failures (the database or broker unreachable, a write conflict with another
consumer) say nothing about the records: the batch is held back and retried until it passes.
Everything else raised while decoding or applying records is a record failure: the record is
found, retried a few times on its own and then dead-lettered, so it never stalls its partition.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

import psycopg
from kafka.errors import KafkaError
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    PendingRollbackError,
    ResourceClosedError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError

from persistence.batch_repository import ConcurrentUpdate

Kind = Literal["conflict", "database", "broker", "record"]

# SQLSTATE classes a record's values can cause: data exceptions (a string too long, a NUL,
# an untranslatable character), integrity violations other than a duplicate key, and
# program limits (a value too large for an index row)
_RECORD_CLASSES = ("22", "23", "54")
# retried in place at once; not 55P03 (lock timeout): a lock held that long is an outage of
# sorts, and 20 in-place waits of LAER_DB_LOCK_TIMEOUT_S each would outlast max_poll_interval,
# so it goes back to the loop as a database failure (rewound, backed off, polled meanwhile)
_CONFLICT_STATES = frozenset({"40001", "40P01", "23505"})


class DeadLetterUnsent(Exception):
    """The broker did not take a dead letter: nothing is committed, the batch is retried."""


def _driver_kind(error: BaseException, unique_violation: bool) -> Kind:
    """The kind of a database driver's error (psycopg, sqlite3), wrapped or raw."""
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str):  # PostgreSQL says exactly what went wrong
        if state in _CONFLICT_STATES:
            return "conflict"
        return "record" if state.startswith(_RECORD_CLASSES) else "database"
    if unique_violation:  # SQLite: a concurrent insert of the same key
        return "conflict"
    name = type(error).__name__
    if name == "IntegrityError":
        return "record"  # NOT NULL, FOREIGN KEY, CHECK: the values' fault
    # locked, unreachable or unopenable database; DataError: a value it cannot take
    return "record" if name in ("DataError", "NotSupportedError") else "database"


def classify(exc: BaseException) -> Kind:
    """The kind of `exc` (see the module docstring)."""
    if isinstance(exc, ConcurrentUpdate | StaleDataError):
        return "conflict"
    if isinstance(exc, DeadLetterUnsent | KafkaError):
        return "broker"
    if isinstance(exc, DBAPIError):
        return _driver_kind(exc.orig or exc, isinstance(exc, IntegrityError)
                            and "UNIQUE" in str(exc.orig))
    if isinstance(exc, psycopg.Error | sqlite3.Error):  # raised past SQLAlchemy
        return _driver_kind(exc, isinstance(exc, sqlite3.IntegrityError)
                            and "UNIQUE" in str(exc))
    if isinstance(exc, DisconnectionError | PoolTimeout | ResourceClosedError
                  | PendingRollbackError | ConnectionError):
        return "database"
    return "record"  # the rules, a value the driver could not bind, a serialiser, ...


def is_infrastructure(exc: BaseException) -> bool:
    """Whether `exc` holds the batch back (retried until it passes) rather than a record."""
    return classify(exc) != "record"


def describe(exc: BaseException) -> tuple[str, str]:
    """(qualified class name, message) of an exception, for dead-letter headers."""
    cls = type(exc)
    module = "" if cls.__module__ == "builtins" else cls.__module__ + "."
    return module + cls.__qualname__, str(exc) or repr(exc)


def retry_cause(exc: BaseException, otherwise: str) -> str:
    """The `cause` label of a failure the consumer loop retries (`otherwise` if unknown)."""
    kind = classify(exc)
    return otherwise if kind == "record" else kind
