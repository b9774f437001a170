"""A step that raised, or whose executor died, runs again and does only what was not done;
one that keeps raising ends `failed`, visible, and can be put back in the queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flows.kit import machine
from flows.kit.executor import ExecutorOptions
from persistence.steps import claim_due, requeue_failed
from persistence.tables import PlaybookRunRow, PlaybookStepRow
from tests.playbooks.conftest import HarnessFactory, Mailbox, landing
from tests.playbooks.test_playbooks import _failed_payment

FAST = ExecutorOptions(threads=1, poll_s=0.01, backoff_max_s=0.5, max_attempts=3)


def _steps(h: Any, account: str) -> list[tuple[str, str, int]]:
    with h.sessions() as s:
        return list(s.execute(select(PlaybookStepRow.step, PlaybookStepRow.status,
                                     PlaybookStepRow.attempts)
                              .where(PlaybookStepRow.account_id == account)
                              .order_by(PlaybookStepRow.id)).tuples())


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_step_that_raised_before_queueing_the_next_runs_again_once(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    acc = f"lost-{unique}"
    h = harness(database_url)
    h.feed([*landing(acc), _failed_payment(acc, 8)])
    real = machine.schedule_step
    lost: list[str] = []

    def worker_lost(*args: Any, **kwargs: Any) -> str:  # dies after the effects, before the next
        if not lost:
            lost.append(args[3])
            raise ConnectionError("worker lost")
        return str(real(*args, **kwargs))

    monkeypatch.setattr(machine, "schedule_step", worker_lost)
    report = h.run("churn_rescue", options=FAST)
    assert lost == ["day-7"]
    assert report.runs == [(f"churn_rescue/{acc}/day-0", "AwaitingRetry"),
                           (f"churn_rescue/{acc}/day-0", "Completed"),
                           (f"churn_rescue/{acc}/day-7", "Completed")]
    # the step run again did only what was not done: one task, one message per step
    assert [(a.kind, a.status) for a in report.actions] == [
        ("task", "open"), ("email", "sent"), ("email", "sent"), ("task", "open")]
    assert sorted(mailbox.by_message_id().values()) == [1, 1]
    assert _steps(h, acc) == [("start", "done", 2), ("day-7", "done", 1)]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_step_leased_by_a_dead_executor_is_taken_over_when_its_lease_ends(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    acc = f"stale-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed(landing(acc))
    assert h.dispatch("onboarding") == 1
    (dead,) = claim_due(h.sessions, "dead-executor", 10, lease_s=1.0)  # then it died
    executor = h.executor("onboarding", FAST)
    assert executor.run_due() == []  # leased: nobody else may run it yet
    later = datetime.now(UTC) + timedelta(seconds=2)
    assert executor.run_due(now=later) == [(f"onboarding/{acc}/day-0", "Completed")]
    assert _steps(h, acc)[0] == ("start", "done", 2)
    assert sorted(mailbox.by_message_id().values()) == [1]
    assert dead.attempts == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_step_that_keeps_raising_ends_failed_and_can_be_requeued(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    acc = f"broken-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed(landing(acc))
    monkeypatch.setattr(machine, "load_account", lambda _id: 1 / 0)
    report = h.run("onboarding", options=FAST)
    assert [s for _, s in report.runs] == ["AwaitingRetry", "AwaitingRetry", "Failed"]
    assert _steps(h, acc) == [("start", "failed", 3)]
    with h.sessions() as s:
        step = s.scalar(select(PlaybookStepRow).where(PlaybookStepRow.account_id == acc))
        run = s.scalar(select(PlaybookRunRow).where(PlaybookRunRow.account_id == acc))
    assert step is not None and step.last_error == "ZeroDivisionError: division by zero"
    assert run is not None and run.state == "Failed"  # the account+playbook is no longer open
    assert mailbox.messages == []

    monkeypatch.undo()
    env = {**os.environ, **h.env}
    listed = subprocess.run([sys.executable, "-m", "laer.cli", "steps", "list", "--status",
                             "failed", "--json"], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    (shown,) = json.loads(listed.stdout)
    assert shown["name"] == f"onboarding/{acc}/day-0" and shown["attempts"] == 3
    assert shown["last_error"] == "ZeroDivisionError: division by zero"
    subprocess.run([sys.executable, "-m", "laer.cli", "steps", "retry", "--failed"], env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    assert requeue_failed(h.sessions) == 0  # the command queued it: nothing failed is left
    again = h.run("onboarding", options=FAST, horizon_s=0)
    assert again.runs == [(f"onboarding/{acc}/day-0", "Completed")]
    assert sorted(mailbox.by_message_id().values()) == [1]
