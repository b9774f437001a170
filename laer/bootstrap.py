"""The composition root: settings in; engines, sessions, producers and each part's wiring out.

Nothing here connects, or imports a heavy library, at import time: every builder imports what
it builds when first asked, so a read-side command loads SQLAlchemy and the tables, never
Alembic, Kafka or Prefect. Each process calls `container()` once it starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from laer.settings import Settings, load_policy, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from consumers.dlq import DeadLetterSink
    from consumers.runner import ConsumerLoop
    from dispatch.dispatcher import Dispatcher
    from flows.kit.executor import StepExecutor
    from laer.local.kafka import LocalKafka
    from laer_domain.policy import Policy
    from persistence.uow import UnitOfWork


@dataclass
class Container:
    """Everything a process needs, built lazily from one Settings object."""

    settings: Settings
    policy: Policy  # read with the settings: a bad LAER_POLICY_* stops every command at start

    @property
    def safe_database_url(self) -> str:
        """The database URL with its password masked, for anything printed or logged."""
        from sqlalchemy.engine import make_url

        return make_url(self.settings.database_url).render_as_string(hide_password=True)

    @cached_property
    def engine(self) -> Engine:
        from persistence.db import make_engine

        if self.settings.database_url.startswith("sqlite:///"):
            path = self.settings.database_url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
        return make_engine(self.settings.database_url, self.settings.db_timeouts())

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from persistence.uow import session_factory

        return session_factory(self.engine)

    def uow(self) -> UnitOfWork:
        """A new unit of work on the configured database."""
        from persistence.uow import UnitOfWork

        return UnitOfWork(self.sessions, self.settings.kafka.group_id)

    def migrate(self) -> None:
        """Apply the Alembic migrations (idempotent)."""
        from persistence.db import upgrade

        upgrade(self.engine)

    def producer(self, **overrides: Any) -> Any:
        """An idempotent kafka-python producer (acks=all)."""
        from kafka import KafkaProducer

        opts: dict[str, Any] = {**self.settings.kafka.client_options(), "acks": "all",
                                "linger_ms": 5, "client_id": "laer"}
        opts.update(overrides)
        return KafkaProducer(**opts)

    def consumer_loop(self, dead_letters: DeadLetterSink) -> ConsumerLoop:
        """The ingesting consumer, sending what it cannot apply to `dead_letters`."""
        from consumers.runner import ConsumerLoop

        return ConsumerLoop(self.settings.kafka, self.settings.consumer, self.sessions,
                            self.policy, dead_letters)

    def dispatcher(self) -> Dispatcher:
        """The dispatcher, starting every discovered playbook."""
        from dispatch.dispatcher import Dispatcher
        from flows.kit.registry import discover

        found = discover()
        return Dispatcher(self.sessions, [d.playbook for d in found], self.settings.prefect,
                          first_steps={d.playbook.name: d.first_step for d in found},
                          emit_events=prefect_api_configured())

    def executor(self, threads: int = 4, batch: int = 50, lease_s: float = 300.0,
                 report: bool = True) -> StepExecutor:
        """A step executor for every discovered playbook, reporting steps to Prefect."""
        from flows.kit.executor import ExecutorOptions, StepExecutor
        from flows.kit.prefect_report import StepReporter
        from flows.kit.registry import discover
        from flows.kit.runtime import runtime

        reporter = StepReporter() if report and prefect_api_configured() else None
        return StepExecutor(runtime().sessions, {d.playbook.name: d for d in discover()},
                            ExecutorOptions(batch=batch, threads=threads, lease_s=lease_s),
                            reporter=reporter)

    def local_kafka(self) -> LocalKafka:
        """The local single-node broker under the state directory, on the configured port."""
        from laer.local.kafka import LocalKafka

        port = int(self.settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
        return LocalKafka(self.settings.state_dir.resolve() / "kafka", port=port)


def prefect_api_configured() -> bool:
    """Whether PREFECT_API_URL names a server (without one, Prefect would start a temporary
    server of its own in this process: journey events and step reports are then left out)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_handler(log_format: str) -> logging.Handler:
    """A stderr handler writing plain lines, or one JSON object per line for `json`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            LOG_FORMAT, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def configure_logging(settings: Settings) -> None:
    """Root logging as the settings ask, like `logging.basicConfig`: a process whose logging
    is set up already (a Prefect flow run, pytest) keeps its handlers and level."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(log_handler(settings.log_format))
        root.setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO is per-connection
        logging.getLogger("httpx").setLevel(logging.WARNING)  # ... and httpx's per request
        logging.getLogger("alembic").setLevel(logging.WARNING)


_container: Container | None = None


def container() -> Container:
    """The process-wide container (settings read and validated on first use)."""
    global _container
    if _container is None:
        settings = load_settings()
        configure_logging(settings)
        _container = Container(settings, load_policy())
    return _container

