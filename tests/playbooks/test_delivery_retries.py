"""Durable delivery: a failed send waits for a scheduled retry run, with backoff, and goes out
once; a refusal that no retry would change fails at once; `laer actions retry` re-queues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.kit.reconcile import ensure_retry_runs
from flows.kit.retries import apply_outcome, requeue
from flows.kit.settings import PlaybookSettings
from flows.kit.transport import Outcome, retry_after
from laer_domain.events import make_event
from persistence.tables import ActionRow
from tests.playbooks.conftest import T0, HarnessFactory, Hooks, Mailbox, contact, landing


def _limit(account: str) -> dict[str, Any]:
    return make_event("laer.usage.limit_reached", account, T0 + timedelta(days=10),
                      {"limit": "api_calls", "used": 1000, "allowed": 1000}, source="product")


def _emails(actions: list[ActionRow]) -> list[ActionRow]:
    return [a for a in actions if a.kind in ("email", "webhook")]


def test_a_relay_refusing_longer_than_a_task_retries_gets_the_message_once(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    mailbox.refuse = 6  # 451 to the first six tries: more than a task's retries would make
    acc = f"relay-{unique}"
    h = harness(database_url)
    h.feed([*landing(acc), _limit(acc)])
    report = h.run("upsell")
    (email,) = _emails(report.actions)
    assert (email.status, email.attempts, email.next_attempt_at) == ("sent", 7, None)
    assert email.last_error is not None and "451" in email.last_error
    assert mailbox.refused == 6
    assert mailbox.by_message_id() == {f"<{email.payload['content']['id']}@laer>": 1}
    # the first run and six retry runs of the same step, each a scheduled flow run
    assert [n for n, _ in report.runs] == [f"upsell/{acc}/day-0"] * 7
    assert {state for _, state in report.runs} == {"Completed"}
    assert [(a.kind, a.status) for a in report.actions] == [("email", "sent"), ("task", "open")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_webhook_5xx_408_and_429_are_retried_honouring_retry_after(
        unique: str, harness: HarnessFactory, hooks: Hooks, database_url: str) -> None:
    hooks.script = [(500, {}), (408, {}), (429, {"Retry-After": "2"})]
    acc = f"hooky-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_WEBHOOK_URL=hooks.url)
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]), _limit(acc)])
    report = h.run("upsell")
    (hook,) = _emails(report.actions)
    assert (hook.kind, hook.status, hook.attempts) == ("webhook", "sent", 4)
    assert hooks.answered == [500, 408, 429, 204]
    assert hooks.accepted_ids() == {hook.payload["content"]["id"]: 1}
    stamps = [int(headers["webhook-timestamp"]) for headers, _ in hooks.received]
    assert stamps[3] - stamps[2] >= 2  # Retry-After: 2 was honoured


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("code", "reason"), [(302, "http 302 redirect to"), (422, "http 422")])
def test_a_redirect_or_a_4xx_fails_at_once_and_is_not_followed(
        code: int, reason: str, unique: str, harness: HarnessFactory, hooks: Hooks,
        database_url: str) -> None:
    hooks.script = [(code, {"Location": hooks.url + "/moved"})]
    acc = f"moved-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_WEBHOOK_URL=hooks.url)
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]), _limit(acc)])
    report = h.run("upsell")
    (hook,) = _emails(report.actions)
    assert (hook.status, hook.attempts) == ("failed", 1)
    assert hook.reason is not None and hook.reason.startswith(reason)
    assert len(hooks.received) == 1  # the Location was not followed, nothing retried
    assert [state for _, state in report.runs] == ["Completed"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_retries_give_up_with_the_last_error_and_a_requeue_sends_once(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    mailbox.refuse = 100
    acc = f"gaveup-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_DELIVERY_ATTEMPTS="3")
    h.feed([*landing(acc), _limit(acc)])
    report = h.run("upsell")
    (email,) = _emails(report.actions)
    assert (email.status, email.attempts) == ("failed", 3)
    assert email.reason is not None and email.reason.startswith("gave up after 3 attempts")
    assert mailbox.messages == []

    mailbox.refuse = 0  # the relay is fixed; `laer actions retry --id N` does this
    targets = requeue(h.sessions, datetime.now(UTC), ids=[email.id])
    assert len(ensure_retry_runs(targets)) == 1
    assert ensure_retry_runs(targets) == []  # asked twice: still one retry run
    again = h.run("upsell")
    (email,) = _emails(again.actions)
    assert (email.status, email.attempts) == ("sent", 1)
    assert list(mailbox.by_message_id().values()) == [1]
    assert requeue(h.sessions, datetime.now(UTC)) == []  # nothing failed is left


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_after_an_unknown_outcome_the_retry_repeats_the_same_message_id(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    mailbox.drop_after_data = 1  # the relay takes the message, then the line drops
    acc = f"unknown-{unique}"
    h = harness(database_url)
    h.feed([*landing(acc), _limit(acc)])
    report = h.run("upsell")
    (email,) = _emails(report.actions)
    assert (email.status, email.attempts) == ("sent", 2)
    # two copies arrived; they carry one Message-ID, so the receiver can drop the second
    assert mailbox.by_message_id() == {f"<{email.payload['content']['id']}@laer>": 2}


def test_backoff_doubles_up_to_hours_and_honours_retry_after_within_it() -> None:
    settings = PlaybookSettings(day_seconds=86400, delivery_backoff_s=60,
                                delivery_backoff_max_s=6 * 3600, delivery_attempts=12)
    assert [settings.retry_delay(n) for n in (1, 2, 3, 9, 10, 11)] == [
        timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4),
        timedelta(minutes=256), timedelta(hours=6), timedelta(hours=6)]
    assert settings.playbook_seconds(3600) == timedelta(hours=1)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    row = ActionRow(kind="email", status="pending", attempts=0, payload={})
    apply_outcome(row, Outcome("transient", "http 429", retry_after_s=600), settings, now, now)
    assert (row.status, row.attempts, row.next_attempt_at) == (
        "retrying", 1, now + timedelta(minutes=10))
    apply_outcome(row, Outcome("transient", "http 429", retry_after_s=10 ** 9), settings, now,
                  now)
    assert row.next_attempt_at == now + timedelta(hours=6)
    row.attempts = 11
    apply_outcome(row, Outcome("transient", "timed out"), settings, now, now)
    assert (row.status, row.reason, row.next_attempt_at) == (
        "failed", "gave up after 12 attempts: timed out", None)
    assert retry_after("120") == 120.0
    assert retry_after("Sun, 01 Mar 2026 00:05:00 GMT", now=now) == 300.0
    assert retry_after("soon") is None and retry_after(None) is None
