"""Two executor processes on one database share a burst of playbook steps and none runs twice:
every step is executed once (one attempt), every message arrives once, and both did work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from laer.local.prefect_server import prefect_env
from laer.local.processes import ManagedProcess
from persistence.tables import ActionRow, PlaybookStepRow
from tests.playbooks.conftest import HarnessFactory, Mailbox, landing
from tests.playbooks.test_outages import wait_for

ACCOUNTS = 24
STEPS = 4  # onboarding: day-0, day-3, day-14, day-30


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_two_executors_run_every_step_once(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str,
        prefect_api: str, tmp_path: Path) -> None:
    h = harness(database_url, LAER_PLAYBOOK_DAY_SECONDS="0.05")  # day 30 is 1.5 s on
    accounts = [f"pair-{unique}-{i:02d}" for i in range(ACCOUNTS)]
    h.feed([event for acc in accounts for event in landing(acc)])
    env = prefect_env(tmp_path / "executor-prefect", api_url=prefect_api)
    env.update(h.env)
    env["PYTHONPATH"] = os.getcwd()
    args = ["serve", "--no-ops", "--threads", "3", "--batch", "2"]
    executors = [ManagedProcess(f"serve-{n}", args, env, tmp_path / "logs").start()
                 for n in (1, 2)]
    try:
        for p in executors:  # both polling before the burst arrives
            wait_for(lambda p=p: "running 3 threads" in p.tail(), f"{p.name} to start",
                     alive=p)
        assert h.dispatch("onboarding") == ACCOUNTS

        def all_done() -> bool:
            with h.sessions() as s:
                return s.scalar(select(func.count()).where(
                    PlaybookStepRow.status == "done",
                    PlaybookStepRow.playbook == "onboarding")) == ACCOUNTS * STEPS

        for p in executors:
            wait_for(all_done, "every step to be done", timeout=240, alive=p)
    finally:
        for p in executors:
            p.stop()
    with h.sessions() as s:
        steps = list(s.execute(select(PlaybookStepRow.idempotency_key,
                                      PlaybookStepRow.attempts, PlaybookStepRow.lease_owner)
                               ).tuples())
        emails = s.scalar(select(func.count()).where(ActionRow.kind == "email"))
    assert len(steps) == ACCOUNTS * STEPS
    assert {attempts for _, attempts, _ in steps} == {1}  # claimed once each: never twice
    assert len({owner.rsplit(":", 1)[0] for _, _, owner in steps if owner}) == 2  # both ran
    assert emails == ACCOUNTS * 3  # welcome, training, check-in
    assert len(mailbox.messages) == ACCOUNTS * 3
    assert set(mailbox.by_message_id().values()) == {1}
