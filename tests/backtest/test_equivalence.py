"""The same events through the simulator and through the real stack give the same actions.

Real side: a Kafka broker, `laer consume`, `laer dispatch`, `laer serve` (the step executor
reporting to a Prefect API) on a fresh SQLite database, and a real SMTP sink. Simulated
side: `backtest.engine.Backtest` over a fresh SQLite file, no network at all.

What is compared, and why only that: the real stack runs steps on the wall clock, the
simulator on event time. The events span two weeks of history, but every playbook trigger
(land -> adopt, a hard plan limit) falls on one instant P, the last event. The real side pins
the gate's clock to P (LAER_PLAYBOOK_CLOCK) and keeps a playbook day a real day, so the steps
due at once (each run's first step) decide at P on both sides, while follow-ups (day 3, or a
quiet-hours retry hours later) are not due within the test on either side: the simulator
stops at P (no step or sweep after the last event; the real stack's daily sweep is not due
either). Per account we compare the multiset of (playbook, step, kind, template, recipient,
status, the gate rule's name) of every action, and that the SMTP sink got exactly the sent
e-mails. Contacts sit in zones where P is day (sent) or night (deferred by quiet hours).
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from backtest.engine import Backtest, BacktestOptions
from backtest.output import actions
from laer.local.kafka import LocalKafka
from laer.local.ports import free_port
from laer.local.prefect_server import LocalPrefectServer, prefect_env
from laer.local.processes import ManagedProcess
from laer.local.smtp import LocalSmtp
from laer_domain.events import make_event
from persistence.db import make_engine, upgrade
from persistence.tables import (
    ActionRow,
    ConsumerOffsetRow,
    OutboxRow,
    ParkedEventRow,
    PlaybookStepRow,
)
from persistence.uow import session_factory
from tests.e2e.conftest import Stack

P = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)  # the instant every playbook trigger falls on
ZONES = {  # local time at P: 13:00, 21:00, 09:00, 04:00
    "berlin": "Europe/Berlin", "tokyo": "Asia/Tokyo", "saopaulo": "America/Sao_Paulo",
    "la": "America/Los_Angeles",
}
Key = tuple[Any, ...]


def _contact(account: str, role: str, zone: str) -> dict[str, Any]:
    return {"email": f"{role}@{account}.example", "name": f"{role.title()} of {account}",
            "role": role, "channels": ["email"], "timezone": zone}


def account_events(account: str, zone: str, *, hard_limit: bool = False,
                   second_zone: str | None = None) -> list[dict[str, Any]]:
    """Two weeks of one account: landed, paid, daily usage, then live (and a hard limit) at P."""
    start = P - timedelta(days=14)
    contacts = [_contact(account, "buyer", zone)]
    if second_zone is not None:
        contacts.append(_contact(account, "champion", second_zone))
    events = [
        make_event("laer.billing.subscription_started", account, start, {
            "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
            "term_start": start.isoformat(),
            "term_end": (start + timedelta(days=365)).isoformat(), "contacts": contacts,
        }, source="billing"),
        make_event("laer.billing.invoice_paid", account, start + timedelta(days=1),
                   {"invoice_id": "inv-1", "amount": 1500, "currency": "EUR"},
                   source="billing"),
    ]
    for day in range(2, 14):  # a few active users a day, rising: no drop, no seat pressure
        at = start + timedelta(days=day)
        events.append(make_event("laer.usage.active_users", account, at,
                                 {"date": at.date().isoformat(), "count": 2 + day // 4},
                                 source="product"))
    events.append(make_event("laer.usage.provisioned", account, P, {}, source="product"))
    if hard_limit:
        events.append(make_event("laer.usage.limit_reached", account, P,
                                 {"limit": "projects", "used": 10, "allowed": 10},
                                 source="product"))
    return events


def cohort() -> list[dict[str, Any]]:
    """Four accounts: a day zone, a night zone, two contacts split day/night, a hard limit."""
    return [
        *account_events("eq-day", ZONES["berlin"]),
        *account_events("eq-night", ZONES["tokyo"]),
        *account_events("eq-split", ZONES["saopaulo"], second_zone=ZONES["la"]),
        *account_events("eq-limit", ZONES["berlin"], hard_limit=True),
    ]


def _rule(reason: str | None) -> str | None:
    """The gate rule's name: `quiet_hours in Asia/Tokyo` -> quiet_hours."""
    return re.split(r"[:\s]", reason, maxsplit=1)[0] if reason else None


def fingerprints(records: list[dict[str, Any]]) -> dict[str, Counter[Key]]:
    """Per account, the multiset of what each action was and what the gate decided."""
    out: dict[str, Counter[Key]] = {}
    for r in records:
        key = (r["playbook"], r["step"], r["kind"], r["template"], r["recipient"],
               r["status"], _rule(r["reason"]))
        out.setdefault(r["account_id"], Counter())[key] += 1
    return out


def differences(left: dict[str, Counter[Key]], right: dict[str, Counter[Key]]) -> str:
    """A readable list of what one side has and the other lacks, per account ('' if none)."""
    lines = []
    for account in sorted(set(left) | set(right)):
        a, b = left.get(account, Counter()), right.get(account, Counter())
        for key in sorted((a - b).elements(), key=repr):
            lines.append(f"{account}: only simulated {key}")
        for key in sorted((b - a).elements(), key=repr):
            lines.append(f"{account}: only real      {key}")
    return "\n".join(lines)


def simulate(tmp: Path, **settings: Any) -> list[dict[str, Any]]:
    """The cohort through the simulator, stopping at the last event (P)."""
    bt = Backtest(f"sqlite:///{tmp / f'sim-{uuid.uuid4().hex[:6]}.db'}",
                  BacktestOptions(sweep_at=None, after_days=0.0, playbook_settings=settings))
    try:
        bt.run(cohort())
        return actions(bt.engine)
    finally:
        bt.close()


def _settled(stack: Stack, produced: int) -> bool:
    """All records consumed and applied, all signals dispatched, no step due now, no delivery
    in flight."""
    now = datetime.now(UTC)
    with stack.sessions() as s:
        consumed = s.scalar(select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0))
                            .where(ConsumerOffsetRow.topic.in_(list(stack.topics.values()))))
        if int(consumed or 0) < produced:
            return False
        if s.scalar(select(func.count()).select_from(ParkedEventRow)):
            return False  # an event that came before its account's landing, not applied yet
        if s.scalar(select(func.count()).where(OutboxRow.status == "pending")):
            return False
        if s.scalar(select(func.count()).where(PlaybookStepRow.status.in_(("due", "running")),
                                               PlaybookStepRow.due_at <= now)):
            return False
        if not s.scalar(select(func.count()).select_from(PlaybookStepRow)):
            return False  # not one run started yet
        busy = s.scalar(select(func.count()).where(
            ActionRow.status.in_(("pending", "retrying", "sending"))))
        return not busy


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, kafka_broker: LocalKafka,
         prefect_server: LocalPrefectServer) -> Iterator[tuple[list[dict[str, Any]], Stack]]:
    """The cohort through the real stack; its actions once everything due at P has run."""
    home = tmp_path_factory.mktemp("equivalence")
    db_url = f"sqlite:///{home / 'laer.db'}"
    suffix = uuid.uuid4().hex[:6]
    topics = {f: f"laer.{f}.{suffix}" for f in ("billing", "usage", "support")}
    dlq = f"laer.dlq.{suffix}"
    kafka_broker.create_topics([*topics.values(), dlq], partitions=4)
    engine = make_engine(db_url)
    upgrade(engine)
    smtp = LocalSmtp(home / "mail.mbox", port=free_port())
    smtp.start()
    env = prefect_env(home / "prefect-client", api_url=prefect_server.api_url)
    env.update({
        "LAER_DATABASE_URL": db_url, "LAER_STATE_DIR": str(home / "state"),
        "LAER_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "LAER_KAFKA__BILLING_TOPIC": topics["billing"],
        "LAER_KAFKA__USAGE_TOPIC": topics["usage"],
        "LAER_KAFKA__SUPPORT_TOPIC": topics["support"],
        "LAER_KAFKA__DLQ_TOPIC": dlq, "LAER_KAFKA__GROUP_ID": f"laer-eq-{suffix}",
        "LAER_PREFECT__DISPATCH_INTERVAL_S": "0.5", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "LAER_SMTP__PORT": str(smtp.port),
        # the gate decides at P; a playbook day stays a real day, so no follow-up comes due
        "LAER_PLAYBOOK_CLOCK": P.isoformat(), "LAER_PLAYBOOK_DAY_SECONDS": "86400",
        "PYTHONPATH": os.getcwd(),
    })
    procs = {name: ManagedProcess(name, [name], env, home / "logs").start()
             for name in ("serve", "consume", "dispatch")}
    stack = Stack(env, db_url, topics, dlq, kafka_broker.bootstrap, session_factory(engine),
                  procs, home / "logs", smtp)
    try:
        events = cohort()
        stack.produce(events)
        stack.wait_for(lambda: _settled(stack, len(events)), 300,
                       "every step due at P to run and its deliveries to end")
        yield actions(engine), stack
    finally:
        for p in procs.values():
            p.stop()
        smtp.stop()
        engine.dispose()


def test_the_simulator_and_the_real_stack_take_the_same_actions(
        real: tuple[list[dict[str, Any]], Stack], tmp_path: Path) -> None:
    records, stack = real
    simulated = simulate(tmp_path)
    sim, got = fingerprints(simulated), fingerprints(records)
    assert set(sim) == {"eq-day", "eq-night", "eq-split", "eq-limit"}, sim
    assert not differences(sim, got), "\n" + differences(sim, got)
    for account, keys in sorted(sim.items()):  # what matched, for the log
        print(account, sorted(keys.elements(), key=repr))
    # the set exercises more than one playbook and more than one gate decision
    flat = [k for c in sim.values() for k in c.elements()]
    assert {k[0] for k in flat} >= {"onboarding", "upsell"}
    assert {(k[2], k[5]) for k in flat} >= {("email", "sent"), ("email", "deferred"),
                                            ("task", "open")}
    assert ("email", "deferred", "quiet_hours") in {(k[2], k[5], k[6]) for k in flat}
    # the SMTP sink got exactly the sent e-mails, once each
    sent = Counter(r["recipient"] for r in records
                   if r["kind"] == "email" and r["status"] == "sent")
    received = Counter(str(m["To"]) for m in stack.smtp.received)
    assert received == sent, (received, sent)


def test_a_policy_change_on_one_side_shows_as_a_difference(
        real: tuple[list[dict[str, Any]], Stack], tmp_path: Path) -> None:
    records, _ = real
    # quiet hours off in the simulator only: the night contacts get their e-mail at once
    simulated = simulate(tmp_path, quiet_start="00:00", quiet_end="00:00")
    shown = differences(fingerprints(simulated), fingerprints(records))
    assert "eq-night: only simulated" in shown and "'sent'" in shown, shown
    assert "eq-night: only real" in shown and "'deferred'" in shown, shown
    assert "eq-day" not in shown, shown
