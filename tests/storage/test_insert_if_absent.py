"""Insert-if-absent keeps the first row of a key, on both databases, and its statement is
compiled once, not per insert (the dialects' ON CONFLICT clause alone is never cached)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from persistence.db import make_engine, upgrade
from persistence.tables import ActionRow, PlaybookStepRow
from persistence.uow import session_factory
from persistence.upsert import insert_if_absent

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _step(key: str, step: str = "day-0") -> dict[str, object]:
    return dict(idempotency_key=key, playbook="p", account_id="a", signal_id="s", step=step,
                run_name="p/a/day-0", tags=[], due_at=NOW, status="due", attempts=0,
                created_at=NOW)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_first_row_of_a_key_stays_and_the_statement_is_cached(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    key = ("idempotency_key",)
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine.Engine"):
        engine.echo = True  # the engine logs "[cached since ...]" for a reused compilation
        with sessions() as s:
            added = [insert_if_absent(s, PlaybookStepRow, _step(k, step), key)
                     for k, step in (("k1", "day-0"), ("k2", "day-0"), ("k1", "day-9"))]
            # another table and key in between: its own statement, not the one above
            assert insert_if_absent(s, ActionRow, dict(
                idempotency_key="a1", account_id="a", playbook="p", kind="task", subject="x",
                status="open", created_at=NOW, payload={}), key)
            s.commit()
        engine.echo = False
    assert added == [True, True, False]
    with sessions() as s:
        first = s.query(PlaybookStepRow).filter_by(idempotency_key="k1").one()
        assert first.step == "day-0"  # the second insert of k1 changed nothing
    cached = [r for r in caplog.records if "cached since" in r.getMessage()]
    assert len(cached) >= 2  # k2 and the second k1 reused the first compilation
    engine.dispose()
