"""The first slice end to end: Kafka -> consumer -> database -> dispatcher -> Prefect -> action."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from kafka import KafkaConsumer
from sqlalchemy import func, select

from laer_domain.events import make_event
from persistence.tables import (
    AccountRow,
    ActionRow,
    AppliedEventRow,
    ConsumerOffsetRow,
    PlaybookRunRow,
    PlaybookStepRow,
    SignalRow,
    StageChangeRow,
)
from tests.e2e.conftest import Stack

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def landing_events(account: str) -> list[dict[str, Any]]:
    start = make_event("laer.billing.subscription_started", account, T0, {
        "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
        "term_start": "2026-01-05", "term_end": "2027-01-05",
        "contacts": [{"email": f"owner@{account}.example", "name": "Ada", "role": "buyer",
                      "channels": ["email"], "timezone": "Europe/Berlin"}],
    }, source="billing-system")
    paid = make_event("laer.billing.invoice_paid", account, T0 + timedelta(days=1),
                      {"invoice_id": "inv-1", "amount": 1500, "currency": "EUR"},
                      source="billing-system")
    live = make_event("laer.usage.provisioned", account, T0 + timedelta(days=2), {},
                      source="product")
    return [start, paid, live]


def consumed(stack: Stack) -> int:
    with stack.sessions() as s:
        topics = list(stack.topics.values())
        return int(s.scalar(select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0))
                            .where(ConsumerOffsetRow.topic.in_(topics))) or 0)


def first_step_done(stack: Stack, account: str) -> PlaybookStepRow | None:
    """The account's onboarding day-0 step, once an executor has run it."""
    with stack.sessions() as s:
        return s.scalar(select(PlaybookStepRow).where(
            PlaybookStepRow.account_id == account, PlaybookStepRow.playbook == "onboarding",
            PlaybookStepRow.step == "start", PlaybookStepRow.status == "done"))


def prefect_state(stack: Stack, task_run_id: str) -> str | None:
    api = stack.env["PREFECT_API_URL"]
    response = httpx.get(f"{api}/task_runs/{task_run_id}", timeout=10)
    if response.status_code != 200:
        return None  # not recorded yet
    state = response.json().get("state")  # the recorder may store the run before its state
    return str(state["type"]) if state else None


def test_three_events_take_an_account_to_adopt_and_run_onboarding(stack: Stack,
                                                                  unique: str) -> None:
    account = f"acme-{unique}"
    stack.produce(landing_events(account))

    step = stack.wait_for(lambda: first_step_done(stack, account), 180, "onboarding day-0")
    assert step.run_name == f"onboarding/{account}/day-0" and step.attempts == 1
    assert step.task_run_id is not None
    # our row says done when the step ends; Prefect shows its task run once reported
    task_run_id = step.task_run_id
    stack.wait_for(lambda: prefect_state(stack, task_run_id) == "COMPLETED", 60,
                   "Prefect to show the step's task run COMPLETED")
    with stack.sessions() as s:
        acc = s.get(AccountRow, account)
        assert acc is not None and acc.stage == "adopt"
        moves = [(c.from_stage, c.to_stage) for c in s.scalars(
            select(StageChangeRow).where(StageChangeRow.account_id == account)
            .order_by(StageChangeRow.id))]
        assert moves == [(None, "land"), ("land", "adopt")]
        kinds = set(s.scalars(select(SignalRow.kind).where(SignalRow.account_id == account)))
        assert {"AccountLanded", "StageChanged", "WentLive"} <= kinds
        task = s.scalar(select(ActionRow).where(ActionRow.account_id == account,
                                                ActionRow.kind == "task"))
        assert task is not None and task.role == "customer_success"
        assert task.flow_run_id == step.task_run_id  # the Prefect run that made it
        email = s.scalar(select(ActionRow).where(ActionRow.account_id == account,
                                                 ActionRow.kind == "email"))
        assert email is not None and email.status in ("sent", "deferred"), email.status
    if email.status == "sent":
        received = [m for m in stack.smtp.received if m["To"] == f"owner@{account}.example"]
        assert len(received) == 1

    shown = stack.cli("account", account, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["stage"] == "adopt"
    assert [h["to"] for h in detail["history"]] == ["land", "adopt"]
    assert any(sig["kind"] == "WentLive" for sig in detail["signals"])
    assert detail["playbook_runs"][0]["state"] in ("Running", "Completed")
    assert detail["steps"][0]["name"] == f"onboarding/{account}/day-0"
    assert detail["steps"][0]["status"] == "done"
    assert {a["kind"] for a in detail["actions"]} == {"task", "email"}

    missing = stack.cli("account", f"nobody-{unique}", "--json")
    assert missing.returncode == 1
    assert "no account" in missing.stderr


def test_sending_everything_twice_changes_nothing_twice(stack: Stack, unique: str) -> None:
    account = f"twice-{unique}"
    before = consumed(stack)
    events = landing_events(account)
    stack.produce(events)
    stack.produce(events)  # redelivered by a producer retry, say: same id and source
    stack.wait_for(lambda: consumed(stack) >= before + 6, 120, "all six records consumed")
    stack.wait_for(lambda: first_step_done(stack, account), 180, "onboarding day-0")
    with stack.sessions() as s:
        def count(model: Any, column: Any) -> int:
            return int(s.scalar(select(func.count()).select_from(model)
                                .where(column == account)) or 0)
        assert count(AppliedEventRow, AppliedEventRow.account_id) == 3
        assert count(StageChangeRow, StageChangeRow.account_id) == 2
        runs = list(s.scalars(select(PlaybookRunRow.idempotency_key).where(
            PlaybookRunRow.account_id == account)))
        started = list(s.execute(select(PlaybookStepRow.idempotency_key,
                                        PlaybookStepRow.run_name).where(
            PlaybookStepRow.account_id == account).order_by(PlaybookStepRow.id)).tuples())
        # One run from the dispatcher, its first step; every other step is a follow-up a step
        # queued: the next step, or day 0 again when quiet hours deferred the email.
        first_key, first_name = started[0]
        assert runs == [first_key]
        assert first_name == f"onboarding/{account}/day-0"
        assert [k for k, _ in started].count(first_key) == 1
        for key, name in started[1:]:
            assert key.startswith(first_key + ":"), started
            assert name in (f"onboarding/{account}/day-0", f"onboarding/{account}/day-3"), started
        assert len(started) <= 3, started
        actions = sorted((a.kind, a.subject) for a in s.scalars(
            select(ActionRow).where(ActionRow.account_id == account)))
        assert len(actions) == len(set(actions)) == 2, actions
        kinds = list(s.scalars(select(SignalRow.kind).where(SignalRow.account_id == account)))
        assert len(kinds) == len(set(kinds)), kinds


def read_dead_letters(stack: Stack, want: int, timeout_s: float = 60) -> list[Any]:
    consumer = KafkaConsumer(stack.dlq_topic, bootstrap_servers=stack.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=int(timeout_s * 1000))
    found = []
    try:
        for rec in consumer:
            found.append(rec)
            if len(found) >= want:
                break
    finally:
        consumer.close()
    return found


def test_a_malformed_record_goes_to_the_dlq_and_the_rest_flows(stack: Stack,
                                                              unique: str) -> None:
    account = f"bad-{unique}"
    stack.produce_raw(stack.topics["billing"], account.encode(), b'{"specversion": "1.0", oops',
                      [("content-type", b"application/cloudevents+json")])
    stack.produce(landing_events(account))

    stack.wait_for(lambda: first_step_done(stack, account), 180, "onboarding after a bad record")
    letters = [r for r in read_dead_letters(stack, 1) if r.key == account.encode()]
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers["laer.errors.reason"] == "invalid_json"
    assert headers["laer.errors.topic"] == stack.topics["billing"]
    assert headers["laer.errors.message"]
    assert int(headers["laer.errors.offset"]) >= 0
    assert letters[0].value == b'{"specversion": "1.0", oops'
