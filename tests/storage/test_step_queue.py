"""The step queue's hot statements, on both databases: a claim is one statement, a step's
end adds the steps it queued in its own transaction, a new row comes back from its INSERT."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from persistence.steps import claim_due, enqueue_step, finish_step, step_values
from persistence.tables import ActionRow, PlaybookRunRow, PlaybookStepRow
from persistence.uow import session_factory
from persistence.upsert import insert_new_row

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _step(key: str, step: str, due: datetime) -> dict[str, Any]:
    return dict(key=key, playbook="p", account_id="a", signal_id="s", step=step, due_at=due,
                tags=["b", "a", "a"], run_name=f"p/a/{step}", now=NOW)


def _statements(engine: Engine) -> list[str]:
    """The statements `engine` runs from now on (BEGINs left out)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_claim_is_one_statement_earliest_first(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions() as s:
        for key, due in (("k2", NOW - timedelta(minutes=1)), ("k1", NOW - timedelta(minutes=2)),
                         ("k3", NOW + timedelta(minutes=1))):  # k3 is not due yet
            assert enqueue_step(s, **_step(key, key, due))
        s.commit()
    seen = _statements(engine)
    claimed = claim_due(sessions, "me", 10, lease_s=60.0, now=NOW)
    assert len(seen) == 1, seen
    assert [(c.key, c.attempts, c.tags) for c in claimed] == [("k1", 1, ("a", "b")),
                                                              ("k2", 1, ("a", "b"))]
    assert claim_due(sessions, "other", 10, lease_s=60.0, now=NOW) == []  # leased
    later = NOW + timedelta(minutes=2)  # the lease ran out, and k3 is due
    assert [(c.key, c.attempts) for c in claim_due(sessions, "other", 10, 60.0, later)] == [
        ("k1", 2), ("k2", 2), ("k3", 1)]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_steps_end_adds_what_it_queued_first_even_with_its_lease_lost(
        engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions() as s:
        enqueue_step(s, **_step("k1", "start", NOW))
        s.add(PlaybookRunRow(account_id="a", playbook="p", signal_id="s", idempotency_key="r",
                             state="Running", created_at=NOW, updated_at=NOW))
        s.commit()
    (step,) = claim_due(sessions, "me", 10, lease_s=60.0, now=NOW)
    nxt = step_values(**_step("k2", "day-3", NOW + timedelta(days=3)))
    assert finish_step(sessions, step, "me", status="done", now=NOW, queued=[nxt, nxt])
    with sessions() as s:
        rows = list(s.execute(select(PlaybookStepRow.idempotency_key, PlaybookStepRow.status)
                              .order_by(PlaybookStepRow.id)).tuples())
        # the queued step was there before the run's state was settled: still Running
        assert s.scalar(select(PlaybookRunRow.state)) == "Running"
    assert rows == [("k1", "done"), ("k2", "due")]
    (again,) = claim_due(sessions, "me", 10, lease_s=60.0, now=NOW + timedelta(days=3))
    lost = step_values(**_step("k3", "day-9", NOW + timedelta(days=9)))
    assert not finish_step(sessions, again, "someone-else", status="done", queued=[lost])
    with sessions() as s:
        assert s.scalar(select(PlaybookStepRow.status).where(
            PlaybookStepRow.idempotency_key == "k3")) == "due"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_new_row_comes_back_from_its_insert_loaded(engine: Engine) -> None:
    sessions = session_factory(engine)
    values = dict(idempotency_key="a1", account_id="a", playbook="p", kind="task",
                  subject="x", status="open", created_at=NOW, payload={"n": 1})
    key = ("idempotency_key",)
    seen = _statements(engine)
    with sessions() as s:
        row = insert_new_row(s, ActionRow, values, key)
        assert row is not None and row.id is not None and row.attempts == 0
        assert row.payload == {"n": 1} and row.created_at == NOW
        row.status = "done"  # a loaded row: the change is written as an UPDATE
        s.commit()
        assert insert_new_row(s, ActionRow, {**values, "subject": "y"}, key) is None
        s.commit()
    assert [q.split()[0] for q in seen] == ["INSERT", "UPDATE", "INSERT"]
    with sessions() as s:
        stored = s.scalars(select(ActionRow)).one()
        assert (stored.status, stored.subject, stored.payload) == ("done", "x", {"n": 1})
