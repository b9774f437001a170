"""The same events through the simulator and through the real stack give the same actions.

Real side: a Kafka broker, `laer consume`, `laer dispatch`, `laer serve --no-ops` (the step
executor reporting to a Prefect API; no daily sweep, as the simulator runs none here) on a
fresh SQLite or PostgreSQL database, and a real SMTP sink. Simulated side:
`backtest.engine.Backtest` over a fresh SQLite file, no network at all.

The real stack runs steps on the wall clock, the simulator on event time, so each case picks
what the two clocks agree on:

- first steps: every playbook trigger falls on one instant P in the past. The real side pins
  the gate's clock to P (LAER_PLAYBOOK_CLOCK) and keeps a playbook day a real day, so the
  steps due at once decide at P on both sides and nothing else comes due; contacts sit in
  zones where P is day (sent) or night (deferred by quiet hours).
- follow-ups: P is the wall clock's now, a playbook day is DAY_S real seconds and the gate
  runs on the wall clock, so onboarding's day-3, day-14 and day-30 run within two minutes
  there and 3, 14 and 30 days after P in the simulator (run on for 31 days). Contacts sit in
  a zone where it is early afternoon now, so neither side ever meets quiet hours (the
  compressed real clock would not move past them: that case is the first one's). A cap of
  one message a week (both sides) suppresses the day-3 training e-mail, sent a day-3 later
  in neither; day-14 falls outside the window on both.

Per account we compare the multiset of (playbook, step, kind, template, recipient, status,
the gate rule's name) of every action, and that the SMTP sink got exactly the sent e-mails.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from backtest.engine import Backtest, BacktestOptions
from backtest.output import actions
from laer.local.kafka import LocalKafka
from laer.local.ports import free_port
from laer.local.postgres import reset_postgres
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

P = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)  # the first-steps case's trigger instant
ZONES = {  # local time at P: 13:00, 21:00, 09:00, 04:00
    "berlin": "Europe/Berlin", "tokyo": "Asia/Tokyo", "saopaulo": "America/Sao_Paulo",
    "la": "America/Los_Angeles",
}
DAY_S = 3.0  # a playbook day of the follow-ups case, in real seconds
CAP = {"frequency_cap": 1}  # the follow-ups case's gate, on both sides
Key = tuple[Any, ...]
Events = list[dict[str, Any]]


def _contact(account: str, role: str, zone: str) -> dict[str, Any]:
    return {"email": f"{role}@{account}.example", "name": f"{role.title()} of {account}",
            "role": role, "channels": ["email"], "timezone": zone}


def account_events(account: str, zone: str, *, at: datetime = P, hard_limit: bool = False,
                   second_zone: str | None = None) -> Events:
    """Two weeks of one account: landed, paid, daily usage, then live (and a hard limit) at
    `at`."""
    start = at - timedelta(days=14)
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
        day_at = start + timedelta(days=day)
        events.append(make_event("laer.usage.active_users", account, day_at,
                                 {"date": day_at.date().isoformat(), "count": 2 + day // 4},
                                 source="product"))
    events.append(make_event("laer.usage.provisioned", account, at, {}, source="product"))
    if hard_limit:
        events.append(make_event("laer.usage.limit_reached", account, at,
                                 {"limit": "projects", "used": 10, "allowed": 10},
                                 source="product"))
    return events


def first_steps_cohort() -> Events:
    """Four accounts: a day zone, a night zone, two contacts split day/night, a hard limit."""
    return [
        *account_events("eq-day", ZONES["berlin"]),
        *account_events("eq-night", ZONES["tokyo"]),
        *account_events("eq-split", ZONES["saopaulo"], second_zone=ZONES["la"]),
        *account_events("eq-limit", ZONES["berlin"], hard_limit=True),
    ]


def afternoon_zone(at: datetime) -> str:
    """A fixed-offset zone where `at` is 13:xx local time, far from quiet hours."""
    hours = (13 - at.astimezone(UTC).hour) % 24
    hours = hours - 24 if hours > 14 else hours
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{-hours:+d}"  # Etc/GMT-5 is UTC+5


def follow_ups_cohort(now: datetime) -> Events:
    """Two accounts going live a minute ago, their contacts where it is early afternoon."""
    at = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    zone = afternoon_zone(at)
    return [*account_events("fu-one", zone, at=at),
            *account_events("fu-two", zone, at=at, second_zone=zone)]


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


def simulate(tmp: Path, events: Events, after_days: float = 0.0,
             **settings: Any) -> list[dict[str, Any]]:
    """The cohort through the simulator, on for `after_days` after the last event."""
    bt = Backtest(f"sqlite:///{tmp / f'sim-{uuid.uuid4().hex[:6]}.db'}",
                  BacktestOptions(sweep_at=None, after_days=after_days,
                                  playbook_settings=settings))
    try:
        bt.run(events)
        return actions(bt.engine)
    finally:
        bt.close()


def _settled(stack: Stack, produced: int, *, all_steps: bool) -> bool:
    """All records consumed and applied, all signals dispatched, no step due now (with
    `all_steps`: none left at all), no delivery in flight."""
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
        open_steps = PlaybookStepRow.status.in_(("due", "running"))
        if s.scalar(select(func.count()).where(
                open_steps if all_steps else open_steps & (PlaybookStepRow.due_at <= now))):
            return False
        if not s.scalar(select(func.count()).select_from(PlaybookStepRow)):
            return False  # not one run started yet
        busy = s.scalar(select(func.count()).where(
            ActionRow.status.in_(("pending", "retrying", "sending"))))
        return not busy


@dataclass(frozen=True)
class Case:
    """What one case feeds the real stack, how it sets its clock, and when it is done."""

    cohort: Callable[[], Events]
    env: dict[str, str]
    all_steps: bool  # wait for every step (follow-ups), or only those due now
    after_days: float  # the simulator's run-on after the last event
    settings: dict[str, Any] = field(default_factory=dict)  # the same gate for the simulator


CASES = {
    # the gate decides at P; a playbook day stays a real day, so no follow-up comes due
    "first-steps": Case(first_steps_cohort,
                        {"LAER_PLAYBOOK_CLOCK": P.isoformat(),
                         "LAER_PLAYBOOK_DAY_SECONDS": "86400"}, False, 0.0),
    # the wall clock, days of DAY_S seconds: onboarding's day-30 ends 90 s after day-0
    "follow-ups": Case(lambda: follow_ups_cohort(datetime.now(UTC)),
                       {"LAER_PLAYBOOK_DAY_SECONDS": str(DAY_S),
                        "LAER_PLAYBOOK_FREQUENCY_CAP": str(CAP["frequency_cap"])},
                       True, 31.0, CAP),
}


@dataclass(frozen=True)
class Real:
    """One case through the real stack: what was fed, and every action it took."""

    case: Case
    events: Events
    records: list[dict[str, Any]]
    stack: Stack


def _database(backend: str, home: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database of `backend`."""
    if backend == "sqlite":
        return f"sqlite:///{home / 'laer.db'}"
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         kafka_broker: LocalKafka, prefect_server: LocalPrefectServer) -> Iterator[Real]:
    """A case's cohort through the real stack on a backend (`request.param`: both names)."""
    name, backend = request.param
    case = CASES[name]
    home = tmp_path_factory.mktemp(f"equivalence-{name}-{backend}")
    db_url = _database(backend, home, request)
    suffix = uuid.uuid4().hex[:6]
    topics = {f: f"laer.{f}.{suffix}" for f in ("billing", "usage", "support")}
    dlq = f"laer.dlq.{suffix}"
    kafka_broker.create_topics([*topics.values(), dlq], partitions=4)
    engine = make_engine(db_url)
    upgrade(engine)
    smtp = LocalSmtp(home / "mail.mbox", port=free_port())
    smtp.start()
    env = prefect_env(home / "prefect-client", api_url=prefect_server.api_url)
    env = {k: v for k, v in env.items() if not k.startswith("LAER_PLAYBOOK_")}
    env.update({
        "LAER_DATABASE_URL": db_url, "LAER_STATE_DIR": str(home / "state"),
        "LAER_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "LAER_KAFKA__BILLING_TOPIC": topics["billing"],
        "LAER_KAFKA__USAGE_TOPIC": topics["usage"],
        "LAER_KAFKA__SUPPORT_TOPIC": topics["support"],
        "LAER_KAFKA__DLQ_TOPIC": dlq, "LAER_KAFKA__GROUP_ID": f"laer-eq-{suffix}",
        "LAER_PREFECT__DISPATCH_INTERVAL_S": "0.5", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "LAER_SMTP__PORT": str(smtp.port), "PYTHONPATH": os.getcwd(), **case.env,
    })
    commands = {"serve": ["serve", "--no-ops"], "consume": ["consume"],
                "dispatch": ["dispatch"]}
    procs = {name: ManagedProcess(name, args, env, home / "logs").start()
             for name, args in commands.items()}
    stack = Stack(env, db_url, topics, dlq, kafka_broker.bootstrap, session_factory(engine),
                  procs, home / "logs", smtp)
    try:
        events = case.cohort()
        stack.produce(events)
        stack.wait_for(lambda: _settled(stack, len(events), all_steps=case.all_steps), 600,
                       "every step to run and its deliveries to end")
        yield Real(case, events, actions(engine), stack)
    finally:
        for p in procs.values():
            p.stop()
        smtp.stop()
        engine.dispose()


def _both(case: str) -> pytest.MarkDecorator:
    """Run the test on the real stack of `case`, on SQLite and on PostgreSQL."""
    return pytest.mark.parametrize("real", [(case, "sqlite"), (case, "postgresql")],
                                   indirect=True, ids=[f"{case}-sqlite", f"{case}-postgresql"])


def _same_actions(real: Real, tmp_path: Path) -> list[Key]:
    """Assert both sides took the same actions, and the sink got the sent e-mails; the
    simulated actions' keys."""
    simulated = simulate(tmp_path, real.events, real.case.after_days, **real.case.settings)
    sim, got = fingerprints(simulated), fingerprints(real.records)
    assert set(sim) == {e["subject"] for e in real.events}, sim
    assert not differences(sim, got), "\n" + differences(sim, got)
    for account, keys in sorted(sim.items()):  # what matched, for the log
        print(account, sorted(keys.elements(), key=repr))
    sent = Counter(r["recipient"] for r in real.records
                   if r["kind"] == "email" and r["status"] == "sent")
    received = Counter(str(m["To"]) for m in real.stack.smtp.received)
    assert received == sent, (received, sent)  # exactly the sent e-mails, once each
    return [k for c in sim.values() for k in c.elements()]


@_both("first-steps")
def test_the_first_steps_are_the_same_on_both_sides(real: Real, tmp_path: Path) -> None:
    flat = _same_actions(real, tmp_path)
    # the set exercises more than one playbook and more than one gate decision
    assert {k[0] for k in flat} >= {"onboarding", "upsell"}
    assert {(k[2], k[5]) for k in flat} >= {("email", "sent"), ("email", "deferred"),
                                            ("task", "open")}
    assert ("email", "deferred", "quiet_hours") in {(k[2], k[5], k[6]) for k in flat}
    assert {k[1] for k in flat} == {"day-0"}


@_both("first-steps")
def test_a_policy_change_on_one_side_shows_as_a_difference(real: Real, tmp_path: Path) -> None:
    # quiet hours off in the simulator only: the night contacts get their e-mail at once
    simulated = simulate(tmp_path, real.events, quiet_start="00:00", quiet_end="00:00")
    shown = differences(fingerprints(simulated), fingerprints(real.records))
    assert "eq-night: only simulated" in shown and "'sent'" in shown, shown
    assert "eq-night: only real" in shown and "'deferred'" in shown, shown
    assert "eq-day" not in shown, shown


@_both("follow-ups")
def test_follow_up_steps_and_the_frequency_cap_are_the_same_on_both_sides(
        real: Real, tmp_path: Path) -> None:
    flat = _same_actions(real, tmp_path)
    steps = Counter((k[1], k[2], k[5], k[6]) for k in flat if k[0] == "onboarding")
    # per account: the welcome sent, the training capped, the check-in sent, two tasks
    contacts = 3  # fu-one's buyer, fu-two's buyer and champion
    assert steps[("day-0", "email", "sent", None)] == contacts, steps
    assert steps[("day-3", "email", "suppressed", "frequency_cap")] == contacts, steps
    assert steps[("day-14", "email", "sent", None)] == contacts, steps
    assert steps[("day-30", "task", "open", None)] == 2, steps


@_both("follow-ups")
def test_a_cap_change_on_one_side_shows_as_a_difference(real: Real, tmp_path: Path) -> None:
    # the default cap of two in the simulator only: the day-3 training is sent there
    simulated = simulate(tmp_path, real.events, real.case.after_days)
    shown = differences(fingerprints(simulated), fingerprints(real.records))
    assert re.search(r"fu-one: only simulated .*'day-3'.*'sent'", shown), shown
    assert re.search(r"fu-one: only real .*'day-3'.*'suppressed', 'frequency_cap'", shown), shown
    assert "'day-14'" not in shown, shown
