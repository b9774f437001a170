"""A whole running system: consumer, dispatcher and served playbooks as real processes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kafka import KafkaProducer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from laer.local.kafka import LocalKafka
from laer.local.prefect_server import LocalPrefectServer, prefect_env
from laer.local.processes import ManagedProcess
from laer.local.smtp import LocalSmtp
from laer.publish import Mode, publish
from persistence.db import make_engine, upgrade
from persistence.uow import session_factory
from tests.conftest import reset_postgres

T = TypeVar("T")


@dataclass
class Stack:
    env: dict[str, str]
    database_url: str
    topics: dict[str, str]  # family -> topic
    dlq_topic: str
    bootstrap: str
    sessions: sessionmaker[Session]
    processes: dict[str, ManagedProcess]
    log_dir: Path
    smtp: LocalSmtp

    def produce(self, events: list[Mapping[str, Any]], mode: Mode = "structured") -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            publish(producer, events, self.topics, mode)
        finally:
            producer.close()

    def produce_raw(self, topic: str, key: bytes | None, value: bytes,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            producer.send(topic, key=key, value=value, headers=headers or []).get(timeout=30)
        finally:
            producer.close()

    def wait_for(self, probe: Callable[[], T | None], timeout: float = 120.0,
                 what: str = "condition") -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = probe()
            except OperationalError:  # the test's read lost a busy SQLite lock: ask again
                value = None
            if value:
                return value
            for p in self.processes.values():
                if not p.alive():
                    pytest.fail(f"{p.name} died while waiting for {what}:\n{p.tail()}")
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.tail(20)}" for p in self.processes.values())
        pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def cli(self, *args: str) -> Any:
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "laer.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=120)
        return done


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          kafka_broker: LocalKafka, prefect_server: LocalPrefectServer) -> Iterator[Stack]:
    """Consumer + dispatcher + `laer serve`, on fresh topics and a fresh database."""
    home = tmp_path_factory.mktemp("stack")
    if request.param == "sqlite":
        db_url = f"sqlite:///{home / 'laer.db'}"
    else:
        db_url = request.getfixturevalue("postgres_url")
        reset_postgres(db_url)
    suffix = uuid.uuid4().hex[:6]
    topics = {f: f"laer.{f}.{suffix}" for f in ("billing", "usage", "support")}
    dlq = f"laer.dlq.{suffix}"
    kafka_broker.create_topics([*topics.values(), dlq], partitions=4)
    engine = make_engine(db_url)
    upgrade(engine)
    from tests.conftest import free_port

    smtp = LocalSmtp(home / "mail.mbox", port=free_port())
    smtp.start()
    env = prefect_env(home / "prefect-client", api_url=prefect_server.api_url)
    env.update({
        "LAER_DATABASE_URL": db_url,
        "LAER_STATE_DIR": str(home / "state"),
        "LAER_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "LAER_KAFKA__BILLING_TOPIC": topics["billing"],
        "LAER_KAFKA__USAGE_TOPIC": topics["usage"],
        "LAER_KAFKA__SUPPORT_TOPIC": topics["support"],
        "LAER_KAFKA__DLQ_TOPIC": dlq,
        "LAER_KAFKA__GROUP_ID": f"laer-test-{suffix}",
        "LAER_PREFECT__DISPATCH_INTERVAL_S": "0.5",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "LAER_SMTP__PORT": str(smtp.port),
        "LAER_PLAYBOOK_DAY_SECONDS": "3600",
        "PYTHONPATH": os.getcwd(),
    })
    log_dir = home / "logs"
    procs = {name: ManagedProcess(name, [name], env, log_dir).start()
             for name in ("serve", "consume", "dispatch")}
    stack = Stack(env, db_url, topics, dlq, kafka_broker.bootstrap, session_factory(engine),
                  procs, log_dir, smtp)
    yield stack
    codes = {name: p.stop() for name, p in procs.items()}
    smtp.stop()
    engine.dispose()
    for name, code in codes.items():
        if name == "consume":  # a clean shutdown on SIGTERM is part of the contract
            assert code == 0, f"consumer exited {code} on SIGTERM:\n{procs[name].tail()}"


def jsonl(text: str) -> Any:
    return json.loads(text)
