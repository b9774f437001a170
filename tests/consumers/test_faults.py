"""The broker restarts and the database goes away mid-stream: nothing lost, nothing doubled."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from laer.local.kafka import LocalKafka
from tests.conftest import free_port, started_broker
from tests.consumers.conftest import Harness
from tests.consumers.test_effectively_once import assert_exact
from tests.consumers.test_metrics import scrape
from tests.consumers.workload import reference, workload

pytestmark = [pytest.mark.kafka]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module alone: these tests stop and start it."""
    broker = started_broker(tmp_path_factory.mktemp("own-kafka"))
    yield broker
    broker.stop()


@contextlib.contextmanager
def database_outage(url: str) -> Iterator[None]:
    """The database refuses every connection inside the block."""
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'alter database "{name}" allow_connections false'))
            conn.execute(text("select pg_terminate_backend(pid) from pg_stat_activity "
                              "where datname = :n and pid <> pg_backend_pid()"), {"n": name})
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'alter database "{name}" allow_connections true'))
            admin.dispose()
        return
    # SQLite: wait for the writer to finish a transaction, then put a directory where the
    # database file was; every new connection fails until the file is put back.
    import sqlite3

    path = Path(url.removeprefix("sqlite:///"))
    away = path.with_name(path.name + ".away")
    lite = sqlite3.connect(path, timeout=30, isolation_level=None)
    lite.execute("begin immediate")
    os.rename(path, away)
    path.mkdir()
    lite.rollback()
    lite.close()  # checkpoints the WAL into the moved file
    try:
        yield
    finally:
        path.rmdir()
        os.rename(away, path)


def database_retries(port: int) -> float:
    """What the consumer counted of attempts that failed for the database's sake."""
    return scrape(port).get(("laer_consumer_retries_total", (("cause", "database"),)), 0.0)


def test_broker_restart_and_database_outage_lose_and_double_nothing(
        own_broker: LocalKafka, db_url: str, harness_factory: Any) -> None:
    rounds = workload(80, seed=9, prefix="fault")
    expected = reference(rounds)
    h: Harness = harness_factory(own_broker, db_url)
    port = free_port()
    h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(port)
    proc = h.start()
    h.wait_assigned(proc)
    for i, events in enumerate(rounds):
        if i == 2:  # the broker goes down half-way through a round
            half = len(events) // 2
            before = h.consumed()
            h.produce(events[:half], rate=800.0)
            h.wait_progress(before, "progress before the restart")
            own_broker.stop()
            time.sleep(3)
            own_broker.start()
            h.produce(events[half:])
        elif i == 3:  # the database goes away, and the round streams in meanwhile
            producer = threading.Thread(target=h.produce, args=(events, 200.0))
            before = database_retries(port)
            with database_outage(db_url):
                h.engine.dispose()
                producer.start()
                # the outage is over once the consumer has met it (its batches, offset reads
                # and parked-event sweeps count failed attempts), however slow the machine
                h.wait_for(lambda before=before: database_retries(port) > before, 180,
                           "the consumer to count a failed attempt on the database")
                assert proc.alive(), proc.tail()
            h.engine.dispose()
            producer.join()
        else:
            h.produce(events)
        h.wait_consumed(timeout=120)
    assert_exact(h, expected)
    assert h.close()["consume"] == 0
