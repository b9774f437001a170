"""Consumers as real `laer consume` processes on a real broker, on SQLite and PostgreSQL.

PostgreSQL tests use their own database (`laer_consumers_test`, created by
deployments/local/postgres.sh), never the one the other suites reset.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from laer.local.kafka import LocalKafka
from laer.local.processes import ManagedProcess
from laer.publish import encode, topic_for
from persistence.db import make_engine, upgrade
from persistence.tables import ConsumerOffsetRow
from persistence.uow import session_factory
from tests.conftest import reset_postgres
from tests.consumers.workload import Round

CONSUMERS_PG = os.environ.get(
    "LAER_TEST_CONSUMERS_POSTGRES_URL",
    "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_consumers_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'laer.db'}"
    else:
        try:
            reset_postgres(CONSUMERS_PG)
        except Exception as exc:
            pytest.fail(f"PostgreSQL database for the consumer tests is not reachable ({exc}); "
                        "run deployments/local/postgres.sh", pytrace=False)
        url = CONSUMERS_PG
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of each kind, for ingestion without a broker (`offline`)."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def wait_for_topics(bootstrap: str, topics: list[str], timeout: float = 30) -> None:
    """Until the broker's metadata lists every partition of the new topics, with a leader."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            consumer.topics()  # fresh metadata: a new partition may lack a leader at first
            cluster = consumer._client.cluster
            if all(len(consumer.partitions_for_topic(t) or ()) == 4 for t in topics) and all(
                    cluster.leader_for_partition(TopicPartition(t, p)) not in (None, -1)
                    for t in topics for p in range(4)):
                return
            time.sleep(0.2)
        raise AssertionError(f"topics {topics} never appeared in the metadata")
    finally:
        consumer.close()


@dataclass
class Harness:
    """Fresh topics and group on a broker, a database, and `laer consume` children."""

    broker: LocalKafka
    db_url: str
    home: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    produced: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = {f: f"laer.{f}.{self.suffix}" for f in ("billing", "usage", "support")}
        self.dlq = f"laer.dlq.{self.suffix}"
        self.group = f"laer-test-{self.suffix}"
        self.broker.create_topics([*self.topics.values(), self.dlq], partitions=4)
        wait_for_topics(self.broker.bootstrap, [*self.topics.values(), self.dlq])
        self.engine: Engine = make_engine(self.db_url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
        env.update({
            "LAER_DATABASE_URL": self.db_url,
            "LAER_STATE_DIR": str(self.home / "state"),
            "LAER_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "LAER_KAFKA__BILLING_TOPIC": self.topics["billing"],
            "LAER_KAFKA__USAGE_TOPIC": self.topics["usage"],
            "LAER_KAFKA__SUPPORT_TOPIC": self.topics["support"],
            "LAER_KAFKA__DLQ_TOPIC": self.dlq,
            "LAER_KAFKA__GROUP_ID": self.group,
            # the broker's minimum: a killed member's partitions move within 6 s
            "LAER_CONSUMER__SESSION_TIMEOUT_MS": "6000",
            "LAER_CONSUMER__HEARTBEAT_INTERVAL_MS": "1000",
            "LAER_CONSUMER__POLL_TIMEOUT_MS": "200",
            "LAER_CONSUMER__MAX_POLL_RECORDS": "250",
            "PYTHONPATH": os.getcwd(),
        })
        env.update(self.extra_env)
        return env

    def settings(self) -> Any:
        from laer.settings import KafkaSettings, Settings

        return Settings(database_url=self.db_url, kafka=KafkaSettings(
            bootstrap_servers=self.broker.bootstrap, billing_topic=self.topics["billing"],
            usage_topic=self.topics["usage"], support_topic=self.topics["support"],
            dlq_topic=self.dlq, group_id=self.group))

    def start(self, name: str = "consume") -> ManagedProcess:
        proc = ManagedProcess(name, ["consume"], self.env, self.home / "logs").start()
        self.processes[name] = proc
        return proc

    def wait_assigned(self, proc: ManagedProcess, times: int = 1, timeout: float = 60) -> None:
        """Until `proc`'s log shows its `times`-th non-empty assignment (the loop is running)."""
        self.wait_for(lambda: proc.log_path.read_text().count("partitions assigned: [(") >= times,
                      timeout, f"{proc.name} owning partitions")

    def producer(self) -> KafkaProducer:
        if self._producer is None:
            # retries over ~10 s: a busy broker may elect a new partition's leader late
            self._producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all",
                                           linger_ms=5, retries=40, retry_backoff_ms=250,
                                           reconnect_backoff_ms=200)
        return self._producer

    def produce(self, events: Round, rate: float | None = None) -> None:
        """Send (event, mode) pairs, optionally paced at `rate` per second; waits for acks."""
        producer = self.producer()
        futures = []
        started = time.monotonic()
        for n, (event, mode) in enumerate(events):
            key, value, headers = encode(event, mode)
            futures.append(producer.send(topic_for(event, self.topics), key=key, value=value,
                                         headers=headers))
            if rate:
                ahead = started + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
        for fut in futures:
            fut.get(timeout=60)
        with self._lock:
            self.produced += len(futures)

    def produce_raw(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: list[tuple[str, bytes]] | None = None) -> tuple[int, int]:
        """Send one record; returns its (partition, offset)."""
        meta = self.producer().send(topic, key=key, value=value,
                                    headers=headers or []).get(timeout=30)
        with self._lock:
            self.produced += 1
        return meta.partition, meta.offset

    def consumed(self) -> int:
        """Records covered by the offsets stored in the database."""
        with self.sessions() as s:
            return int(s.scalar(
                select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0)).where(
                    ConsumerOffsetRow.group_id == self.group,
                    ConsumerOffsetRow.topic.in_(list(self.topics.values())))) or 0)

    def wait_consumed(self, timeout: float = 120.0, expect_alive: bool = True) -> None:
        self.wait_for(lambda: self.consumed() >= self.produced, timeout,
                      f"{self.produced} records consumed", expect_alive)

    def wait_progress(self, before: int, what: str, more_than: int = 0,
                      timeout: float = 60) -> None:
        """Until the stored offsets cover more than `before + more_than` records."""
        self.wait_for(lambda: self.consumed() > before + more_than, timeout, what)

    def wait_for(self, probe: Callable[[], Any], timeout: float, what: str,
                 expect_alive: bool = True) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = probe()
            except Exception:
                value = None
            if value:
                return value
            if expect_alive:
                for p in self.processes.values():
                    if p.process is None or p.alive():
                        continue
                    if p.process.returncode not in (0, -9):  # 0: stopped by us; -9: killed
                        pytest.fail(f"{p.name} exited {p.process.returncode} waiting for {what}:"
                                    f"\n{p.tail()}")
            time.sleep(0.25)
        logs = "\n".join(f"--- {p.name}\n{p.tail(30)}" for p in self.processes.values())
        pytest.fail(f"timed out after {timeout}s waiting for {what} "
                    f"(consumed {self._safe_consumed()}/{self.produced})\n{logs}")

    def _safe_consumed(self) -> int | str:
        try:
            return self.consumed()
        except Exception as exc:
            return f"? ({exc.__class__.__name__})"

    def close(self) -> dict[str, int | None]:
        codes = {name: p.stop() for name, p in self.processes.items()}
        if self._producer is not None:
            self._producer.close()
        self.engine.dispose()
        return codes


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[[LocalKafka, str], Harness]]:
    made: list[Harness] = []

    def make(broker: LocalKafka, url: str) -> Harness:
        h = Harness(broker, url, tmp_path / f"h{len(made)}")
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
