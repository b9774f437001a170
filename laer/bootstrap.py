"""The composition root: settings in, engines, sessions, producers and clients out.

Nothing here connects at import time; each process calls `container()` once it starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from laer.settings import Settings, load_policy, load_settings
from laer_domain.policy import Policy
from persistence.db import make_engine, upgrade
from persistence.uow import UnitOfWork, session_factory


@dataclass
class Container:
    """Everything a process needs, built lazily from one Settings object."""

    settings: Settings
    policy: Policy = field(default_factory=Policy)

    @cached_property
    def engine(self) -> Engine:
        if self.settings.database_url.startswith("sqlite:///"):
            path = self.settings.database_url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    def uow(self) -> UnitOfWork:
        """A new unit of work on the configured database."""
        return UnitOfWork(self.sessions, self.settings.kafka.group_id)

    def migrate(self) -> None:
        """Apply the Alembic migrations (idempotent)."""
        upgrade(self.engine)

    def producer(self, **overrides: Any) -> Any:
        """An idempotent kafka-python producer (acks=all)."""
        from kafka import KafkaProducer

        opts: dict[str, Any] = {**self.settings.kafka.client_options(), "acks": "all",
                                "linger_ms": 5, "client_id": "laer"}
        opts.update(overrides)
        return KafkaProducer(**opts)


_container: Container | None = None


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
        logging.getLogger("alembic").setLevel(logging.WARNING)


def container() -> Container:
    """The process-wide container (settings read and validated on first use)."""
    global _container
    if _container is None:
        settings = load_settings()
        configure_logging(settings)
        _container = Container(settings, load_policy())
    return _container


def reset_container() -> None:
    """Forget the cached container (tests change the environment between cases)."""
    global _container
    _container = None
