"""The reconciler: a step whose run failed or crashed before it scheduled the next one runs
again (once, under its own idempotency key), and the playbook goes on to its last step."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Running
from sqlalchemy import select

from flows.kit import machine
from flows.kit.reconcile import reconcile_playbooks
from persistence.tables import PlaybookRunRow
from tests.playbooks.conftest import HarnessFactory, Mailbox, landing
from tests.playbooks.test_playbooks import _failed_payment


def _resumed_keys(h: Any, account: str) -> list[str]:
    with h.sessions() as s:
        return [k for k in s.scalars(select(PlaybookRunRow.idempotency_key).where(
            PlaybookRunRow.account_id == account)) if k.endswith(":resume")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_step_that_failed_before_scheduling_the_next_is_resumed_once(
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
    first = h.run("churn_rescue")
    assert first.runs == [(f"churn_rescue/{acc}/day-0", "Failed")] and lost == ["day-7"]
    assert first.pending == []  # without the reconciler the playbook would end here

    assert reconcile_playbooks()["resumed"] == 1
    assert reconcile_playbooks().get("resumed", 0) == 0  # run twice: still one new run
    assert len(_resumed_keys(h, acc)) == 1
    second = h.run("churn_rescue")
    assert second.runs == [(f"churn_rescue/{acc}/day-0", "Completed"),
                           (f"churn_rescue/{acc}/day-7", "Completed")]
    # the resumed step did again only what was not done: one task, one message per step
    assert [(a.kind, a.status) for a in second.actions] == [
        ("task", "open"), ("email", "sent"), ("email", "sent"), ("task", "open")]
    assert sorted(mailbox.by_message_id().values()) == [1, 1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_run_left_running_by_a_dead_worker_is_crashed_then_resumed(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str) -> None:
    acc = f"stale-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_STALE_RUN_S="1")
    h.feed(landing(acc))
    assert h.dispatch("onboarding") == 1
    with h.sessions() as s:
        run_id = s.scalar(select(PlaybookRunRow.flow_run_id).where(
            PlaybookRunRow.account_id == acc))
    assert run_id is not None
    with get_client(sync_client=True) as client:  # a worker took it, then died with it
        client.set_flow_run_state(UUID(run_id), Running(), force=True)
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while not counts.get("marked crashed") and time.monotonic() < deadline:
        counts = reconcile_playbooks()  # marks it once it has been Running for a second
    assert counts.get("marked crashed") == 1 and counts.get("resumed") == 1
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
    assert state is not None and state.name == "Crashed"
    report = h.run("onboarding")
    assert [n.rsplit("/", 1)[1] for n, _ in report.runs] == ["day-0", "day-3", "day-14",
                                                            "day-30"]
    assert {s for _, s in report.runs} == {"Completed"}
    assert sorted(mailbox.by_message_id().values()) == [1, 1, 1]
