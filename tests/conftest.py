"""Session-wide real services: a Kafka broker, PostgreSQL and a Prefect API server.

A service that cannot start fails the run with its name; nothing is skipped for lack of one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from laer.local.kafka import LocalKafka, LocalServiceError
from laer.local.ports import free_port
from laer.local.postgres import reset_postgres
from laer.local.prefect_server import LocalPrefectServer

DEFAULT_PG = "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_test"


def started_broker(home: Path) -> LocalKafka:
    """A started broker in `home` on a free port; a failure to start fails the test run."""
    broker = LocalKafka(home, port=free_port())
    try:
        broker.start()
    except LocalServiceError as exc:
        broker.stop()
        pytest.fail(f"Kafka could not start: {exc}", pytrace=False)
    return broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node KRaft broker for the whole session."""
    broker = started_broker(tmp_path_factory.mktemp("kafka"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL database (created by deployments/local/postgres.sh)."""
    url = os.environ.get("LAER_TEST_POSTGRES_URL", DEFAULT_PG)
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {url}: {exc}. "
                    "Run deployments/local/postgres.sh (as root) first.", pytrace=False)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'laer.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    """A real Prefect API server (SQLite-backed) with a private PREFECT_HOME."""
    server = LocalPrefectServer(tmp_path_factory.mktemp("prefect"), port=free_port())
    try:
        server.start()
    except LocalServiceError as exc:
        pytest.fail(f"Prefect could not start: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, groups and account ids."""
    return uuid.uuid4().hex[:8]
