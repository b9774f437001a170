"""Storage tests' database: migrated, on SQLite and on PostgreSQL (see `database_url`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from persistence.db import make_engine, upgrade


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of each kind."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()
