"""Onboarding end to end: signal in, runs Completed, messages received, tasks stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from laer_domain.events import make_event
from persistence.tables import PlaybookRunRow, PlaybookStepRow
from tests.playbooks.conftest import T0, HarnessFactory, Mailbox, contact, landing


def test_onboarding_runs_every_step_as_a_durable_follow_up(unique: str,
        harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    acc = f"acme-{unique}"
    h = harness(database_url)
    h.feed(landing(acc))
    report = h.run("onboarding")

    assert [name for name, _ in report.runs] == [
        f"onboarding/{acc}/day-0", f"onboarding/{acc}/day-3", f"onboarding/{acc}/day-14",
        f"onboarding/{acc}/day-30"]
    assert {state for _, state in report.runs} == {"Completed"}
    assert [(a.kind, a.status) for a in report.actions] == [
        ("task", "open"), ("email", "sent"), ("email", "sent"), ("email", "sent"),
        ("task", "open")]
    subjects = [m["Subject"] for m in mailbox.to(f"buyer@{acc}.example")]
    assert subjects == [f"Welcome aboard, Buyer of {acc}", "Training sessions for your team",
                        "How is it going? Two questions for you"]
    review = report.actions[-1]
    assert review.role == "customer_success" and review.due_at is not None
    assert review.subject.startswith("Adoption review")
    # one playbook run, open while a step of it was queued, and each step a row, done once
    with h.sessions() as s:
        states = list(s.scalars(select(PlaybookRunRow.state)
                                .where(PlaybookRunRow.account_id == acc)))
        steps = list(s.execute(select(PlaybookStepRow.run_name, PlaybookStepRow.status,
                                      PlaybookStepRow.attempts)
                               .where(PlaybookStepRow.account_id == acc)
                               .order_by(PlaybookStepRow.due_at)).tuples())
    assert states == ["Completed"]
    assert steps == [(name, "done", 1) for name, _ in report.runs]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_steps_are_skipped_once_the_account_left_adopt(unique: str, harness: HarnessFactory,
                                                       database_url: str) -> None:
    acc = f"beta-{unique}"
    h = harness(database_url)
    h.feed([*landing(acc, goals=[{"key": "reports", "target": 10}]),
            make_event("laer.usage.outcome_achieved", acc, T0 + timedelta(days=5),
                       {"goal": "reports", "value": 12}, source="product")])
    report = h.run("onboarding")
    assert [state for _, state in report.runs] == ["Completed"]
    assert report.actions == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_quiet_hours_defer_and_the_retry_sends(unique: str, harness: HarnessFactory,
                                               mailbox: Mailbox,
                                               database_url: str) -> None:
    acc = f"gamma-{unique}"
    night = "2026-03-10T21:30:00+00:00"  # 22:30 in Berlin
    h = harness(database_url, LAER_PLAYBOOK_CLOCK=night, LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed(landing(acc, [contact(acc, timezone="Europe/Berlin")]))
    report = h.run("onboarding")
    welcome = report.actions[1]
    assert (welcome.status, welcome.reason) == ("deferred", "quiet_hours in Europe/Berlin")
    assert welcome.due_at is not None and welcome.due_at.isoformat() == \
        "2026-03-11T07:00:00+00:00"
    assert mailbox.messages == []
    # the retry of day-0 is a scheduled run at the end of the quiet hours, not a sleeper
    assert f"onboarding/{acc}/day-0" in report.pending
    # when it runs in the morning, the same action goes out
    from flows.onboarding import onboarding

    h.env["LAER_PLAYBOOK_CLOCK"] = "2026-03-11T07:05:00+00:00"
    h.__enter__()
    with h.sessions() as s:
        signal_id = s.scalar(select(PlaybookRunRow.signal_id)
                             .where(PlaybookRunRow.account_id == acc))
    assert signal_id is not None
    onboarding(acc, signal_id, "day-0")
    after = h.run("onboarding", horizon_s=0)
    sent = [a for a in after.actions if a.idempotency_key == welcome.idempotency_key]
    assert sent[0].status == "sent"
    assert [m["To"] for m in mailbox.messages] == [f"buyer@{acc}.example"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_frequency_cap_and_opt_out_are_recorded_as_suppressions(unique: str,
        harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    acc = f"delta-{unique}"
    noon = "2026-03-10T11:00:00+00:00"  # one fixed instant: every message in one window
    h = harness(database_url, LAER_PLAYBOOK_CLOCK=noon)
    h.feed(landing(acc, [contact(acc, timezone="Europe/Berlin"),
                             contact(acc, role="admin", opted_out=True)]))
    report = h.run("onboarding")
    buyer = [(a.subject, a.status, a.reason) for a in report.actions
             if a.recipient == f"buyer@{acc}.example"]
    assert [s for _, s, _ in buyer] == ["sent", "sent", "suppressed"]
    assert str(buyer[2][2]).startswith("frequency_cap")
    admin = {(a.status, a.reason) for a in report.actions if a.recipient == f"admin@{acc}.example"}
    assert admin == {("suppressed", "opted_out")}
    assert len(mailbox.messages) == 2
