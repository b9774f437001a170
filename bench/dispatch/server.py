"""The Prefect side of the run-creation benchmark: its database, the deployment, its events."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

PG_ADMIN = os.environ.get("LAER_BENCH_PG", "postgresql+psycopg://laer:laer@127.0.0.1:5432/laer_test")


def prefect_database(backend: str) -> str | None:
    """A new PostgreSQL database for the server, or None for its default SQLite."""
    if backend == "sqlite":
        return None
    from sqlalchemy import create_engine, text

    name = f"laer_prefect_bench_{uuid.uuid4().hex[:6]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"create database {name}"))
    engine.dispose()
    user_pass_host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{user_pass_host}/{name}"


async def deployment() -> Any:
    """The deployment both sides create runs of: a flow that does nothing."""
    from prefect import flow

    @flow(name="bench-noop")
    def noop(account_id: str = "", signal_id: str = "") -> None:
        """Does nothing: only run creation is measured."""

    return await noop.ato_deployment(name="laer")


async def _stored_events(client: Any, prefix: str) -> int:
    """How many events whose name starts with `prefix` the server has persisted."""
    from prefect.events.filters import EventFilter, EventNameFilter

    page = await client.read_events(
        filter=EventFilter(event=EventNameFilter(prefix=[prefix])), limit=1)
    return int(page.total)


async def wait_until_stored(client: Any, runs: int, journey: int,
                            timeout_s: float = 120) -> None:
    """Until the server has stored the events of `runs` created runs and `journey` signals.

    Both measurements wait like this after each round, so each pays for storing its own
    events (a run's state event; the dispatcher's journey event) and neither for the other's.
    """
    deadline = time.monotonic() + timeout_s
    while (await _stored_events(client, "prefect.flow-run.Scheduled") < runs
           or await _stored_events(client, "laer.signal.") < journey):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect stored the events of fewer than {runs} runs "
                               f"or {journey} signals")
        await asyncio.sleep(0.1)
