"""A step's next step is added with the step's end, in one transaction: a step whose end
could not be recorded left nothing queued, and its run again queues the next step once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flows.kit import executor as executor_module
from flows.kit.executor import ExecutorOptions
from persistence.tables import PlaybookStepRow
from tests.playbooks.conftest import HarnessFactory, Mailbox, landing

FAST = ExecutorOptions(threads=1, poll_s=0.01, lease_s=1.0)


def _steps(h: Any, account: str) -> list[tuple[str, str]]:
    with h.sessions() as s:
        return list(s.execute(select(PlaybookStepRow.step, PlaybookStepRow.status)
                              .where(PlaybookStepRow.account_id == account)
                              .order_by(PlaybookStepRow.id)).tuples())


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_step_whose_end_was_not_recorded_queued_nothing(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    acc = f"atomic-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed(landing(acc))
    assert h.dispatch("onboarding") == 1
    real = executor_module.finish_step

    def database_gone(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("database gone")

    monkeypatch.setattr(executor_module, "finish_step", database_gone)
    executor = h.executor("onboarding", FAST)
    with pytest.raises(ConnectionError):
        executor.run_due()
    assert _steps(h, acc) == [("start", "running")]  # no day-3 without the step's end
    monkeypatch.setattr(executor_module, "finish_step", real)
    later = datetime.now(UTC) + timedelta(seconds=2)  # its lease ran out: it runs again
    assert executor.run_due(now=later) == [(f"onboarding/{acc}/day-0", "Completed")]
    assert _steps(h, acc) == [("start", "done"), ("day-3", "due")]  # the next step, once
    assert sorted(mailbox.by_message_id().values()) == [1]  # the message went once
