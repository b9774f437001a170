"""Outages on both databases: the SMTP relay down for five minutes of playbook time, a webhook
receiver answering 500 before 200, a worker killed in the middle of a step. Afterwards every
message arrived once (counted by Message-ID and webhook-id) and every playbook reached its
last step."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select

from laer.local.prefect_server import prefect_env
from laer.local.processes import ManagedProcess
from laer_domain.events import make_event
from persistence.tables import ActionRow, PlaybookStepRow
from tests.playbooks.conftest import T0, HarnessFactory, Hooks, Mailbox, contact, landing
from tests.playbooks.test_playbooks import _failed_payment

T = TypeVar("T")
DAY_SECONDS = 864.0  # 100 times faster: a playbook minute lasts 0.6 s


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 120.0,
             alive: ManagedProcess | None = None) -> T:
    """Poll `probe` until it gives something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if alive is not None and not alive.alive():
            raise AssertionError(f"{alive.name} died waiting for {what}:\n{alive.tail()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{alive.tail()}" if alive else ""))


def test_smtp_down_for_five_playbook_minutes_and_a_webhook_failing_lose_and_double_nothing(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, hooks: Hooks,
        database_url: str) -> None:
    acc = f"outage-{unique}"
    h = harness(database_url, LAER_PLAYBOOK_DAY_SECONDS=str(DAY_SECONDS),
                LAER_PLAYBOOK_WIN_BACK_COOLDOWN_DAYS="0.005",  # 7.2 playbook minutes
                LAER_PLAYBOOK_WEBHOOK_URL=hooks.url)
    h.feed([*landing(acc, [contact(acc), contact(acc, channels=["webhook"],
                                                 email=f"ops@{acc}.example")]),
            make_event("laer.billing.subscription_canceled", acc, T0 + timedelta(days=20),
                       {"effective_at": (T0 + timedelta(days=20)).isoformat(),
                        "reason": "budget"}, source="billing")])
    hooks.script = [(500, {})] * 3
    mailbox.stop()
    outage: dict[str, float] = {}

    def first_failure() -> ActionRow | None:
        with h.sessions() as s:
            return s.scalar(select(ActionRow).where(ActionRow.account_id == acc,
                                                    ActionRow.kind == "email",
                                                    ActionRow.attempts >= 1))

    def relay_comes_back() -> None:
        wait_for(first_failure, "the first failed attempt")
        outage["down"] = time.monotonic()
        back = outage["down"] + 5 * 60 * DAY_SECONDS / 86400
        wait_for(lambda: time.monotonic() >= back, "five playbook minutes")
        mailbox.start()
        outage["up"] = time.monotonic()

    relay = threading.Thread(target=relay_comes_back)
    relay.start()
    report = h.run("win_back", horizon_s=60)
    relay.join(timeout=60)

    assert outage["up"] - outage["down"] >= 3.0  # the relay was down five playbook minutes
    email = next(a for a in report.actions if a.kind == "email")
    hook = next(a for a in report.actions if a.kind == "webhook")
    assert email.status == "sent" and email.attempts >= 2 and email.last_error
    assert (hook.status, hook.attempts) == ("sent", 4)
    assert mailbox.by_message_id() == {f"<{email.payload['content']['id']}@laer>": 1}
    assert hooks.answered == [500, 500, 500, 204]
    assert hooks.accepted_ids() == {hook.payload["content"]["id"]: 1}
    # the playbook reached its last step, and the task of that step exists once
    assert (f"win_back/{acc}/offer", "Completed") in report.runs
    assert {s for _, s in report.runs} == {"Completed"}
    assert [a.kind for a in report.actions].count("task") == 1


def _socket_owner(local_port: int, remote_port: int) -> int:
    """The pid whose TCP socket goes from 127.0.0.1:`local_port` to `remote_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
            inode = fields[9]
    assert inode is not None, f"no socket from port {local_port}"
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:  # a process that ended meanwhile, or not ours to read
            continue
    raise AssertionError(f"no process owns socket inode {inode}")


def test_an_executor_killed_mid_step_is_taken_over_and_sends_everything_once(
        unique: str, harness: HarnessFactory, mailbox: Mailbox, database_url: str,
        prefect_api: str, tmp_path: Path) -> None:
    acc = f"killed-{unique}"
    h = harness(database_url)
    h.feed([*landing(acc), _failed_payment(acc, 8)])
    env = prefect_env(tmp_path / "worker-prefect", api_url=prefect_api)
    env.update(h.env)
    env.update({"PYTHONPATH": os.getcwd()})
    serve = ["serve", "--no-ops", "--lease-s", "3"]
    first = ManagedProcess("serve", serve, env, tmp_path / "logs").start()
    try:
        mailbox.hold = threading.Event()  # the first MAIL FROM waits: the step is mid-send
        assert h.dispatch("churn_rescue") == 1
        wait_for(lambda: mailbox.holding.is_set(), "the step to reach SMTP", alive=first)
        assert first.process is not None
        assert _socket_owner(mailbox.peers[-1][1], mailbox.port) == first.process.pid
        first.kill()  # the executor dies mid-send, holding the step's lease
        mailbox.hold.set()
    finally:
        first.stop()
    second = ManagedProcess("serve-2", serve, env, tmp_path / "logs").start()
    try:
        def last_step_done() -> bool:
            with h.sessions() as s:
                return s.scalar(select(PlaybookStepRow.id).where(
                    PlaybookStepRow.account_id == acc, PlaybookStepRow.status == "done",
                    PlaybookStepRow.step == "day-7")) is not None

        wait_for(last_step_done, "the playbook's last step", alive=second)
    finally:
        second.stop()
    with h.sessions() as s:
        steps = list(s.execute(select(PlaybookStepRow.step, PlaybookStepRow.attempts).where(
            PlaybookStepRow.account_id == acc).order_by(PlaybookStepRow.id)).tuples())
        actions = list(s.scalars(select(ActionRow).where(ActionRow.account_id == acc)
                                 .order_by(ActionRow.id)))
    assert steps == [("start", 2), ("day-7", 1)]  # taken over once its lease ran out
    assert [(a.kind, a.status) for a in actions] == [
        ("task", "open"), ("email", "sent"), ("email", "sent"), ("task", "open")]
    assert sorted(mailbox.by_message_id().values()) == [1, 1]
    assert {str(m["Message-ID"]) for m in mailbox.messages} == {
        f"<{a.payload['content']['id']}@laer>" for a in actions if a.kind == "email"}
