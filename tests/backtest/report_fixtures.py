"""A backtest-shaped database for the report tests, filled by applying a real cohort.

The domain side is real: `laer simulate`'s cohort goes through the lifecycle service the
consumers use (accounts, stage history, signals), with a weekly sweep. The playbook side
is a small stand-in for the simulator: each signal starts a run (or coalesces into an open
one), each run executes steps, and each step asks the real outreach gate whether to send,
suppress or defer its message and opens a task, all at event time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from laer.simulate import CohortSpec, cohort
from laer_domain.events import parse_event
from laer_domain.model import Contact, Stage
from laer_domain.outreach import (
    AccountState,
    Defer,
    MessageIntent,
    OutreachPolicy,
    SentMessage,
    Suppress,
    decide,
)
from laer_domain.policy import Policy
from laer_domain.service import LifecycleService
from persistence.batch_repository import BatchRepository
from persistence.db import make_engine, upgrade
from persistence.tables import (
    AccountRow,
    ActionRow,
    PlaybookRunRow,
    PlaybookStepRow,
    SignalRow,
)
from persistence.uow import UnitOfWork, session_factory


@dataclass(frozen=True)
class Stand:
    """A stand-in playbook: its name, owner team, gate priority and step days."""

    name: str
    owner: str
    priority: int
    days: tuple[float, ...]
    promotional: bool = False


# Which stand-in playbook a signal kind starts (a kind missing here starts none).
PLAYBOOKS: dict[str, Stand] = {
    "AccountLanded": Stand("onboarding", "customer_success", 2, (0, 3, 10)),
    "AdoptionStalled": Stand("adoption_nudge", "customer_success", 2, (0, 7)),
    "FeatureUnderused": Stand("adoption_nudge", "customer_success", 2, (0, 7)),
    "ExpansionOpportunity": Stand("upsell", "sales", 1, (0, 1, 2), promotional=True),
    "ChurnRiskRaised": Stand("churn_rescue", "customer_success", 3, (0, 2, 5)),
    "RenewalWindowOpened": Stand("renewal_outreach", "renewal_manager", 4, (0, 1, 30)),
    "RenewalAtRisk": Stand("renewal_escalation", "renewal_manager", 4, (0,)),
}
OPEN_DAYS = 14  # a run counts as open this long after it started (coalescing)
RISK_DAYS = 60  # a churn risk counts as open this long after it was raised (promotions wait)


def feed_cohort(url: str, spec: CohortSpec) -> None:
    """Apply the cohort's events in event-time order, sweeping once a week of event time."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    events = cohort(spec)
    policy = Policy()
    week = timedelta(days=7)
    start = datetime.fromisoformat(events[0]["time"])

    def week_of(e: dict[str, Any]) -> int:
        """The event's week, counted from the cohort's first event."""
        return (datetime.fromisoformat(e["time"]) - start) // week

    for index, chunk in groupby(events, key=week_of):
        parsed = []
        for raw in chunk:
            try:
                parsed.append(parse_event(raw))
            except ValueError:
                continue  # the cohort's malformed records: the dead-letter topic's
        # a week of events as one consumer batch, then the daily sweep's rules at week end
        with sessions() as session, session.begin():
            repo = BatchRepository(session)
            repo.prefetch(parsed)
            batch = LifecycleService(repo, policy).batch(reload=repo.reload)
            for event in parsed:
                batch.handle(event)
            repo.write()
        with UnitOfWork(sessions) as uow:
            LifecycleService(uow.accounts, policy).sweep(start + (index + 1) * week)
            uow.commit()
    engine.dispose()


def _contact(account: AccountRow) -> Contact | None:
    """The account's first contact, if it has one."""
    contacts = account.state.get("contacts") or []
    return Contact.model_validate(contacts[0]) if contacts else None


def play(url: str, gate: OutreachPolicy) -> None:
    """Run the stand-in playbooks over every stored signal, gate decisions at event time."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    history: dict[str, list[SentMessage]] = defaultdict(list)
    open_until: dict[tuple[str, str], datetime] = {}
    at_risk_until: dict[str, datetime] = {}
    with sessions() as session:
        accounts = {a.id: a for a in session.scalars(select(AccountRow))}
        signals = list(session.scalars(select(SignalRow).where(SignalRow.retracted_at.is_(None))
                                       .order_by(SignalRow.at, SignalRow.id)))
        for signal in signals:
            if signal.kind == "ChurnRiskRaised":
                at_risk_until[signal.account_id] = signal.at + timedelta(days=RISK_DAYS)
            stand = PLAYBOOKS.get(signal.kind)
            if stand is None:
                continue
            pair = (signal.account_id, stand.name)
            coalesced = pair in open_until and open_until[pair] > signal.at
            session.add(PlaybookRunRow(
                account_id=signal.account_id, playbook=stand.name, signal_id=signal.id,
                idempotency_key=f"{stand.name}:{signal.id}", flow_run_id=None,
                flow_run_name=f"{stand.name}/{signal.account_id}/start",
                state="Coalesced" if coalesced else "Completed", created_at=signal.at,
                updated_at=signal.at))
            if coalesced:
                continue
            open_until[pair] = signal.at + timedelta(days=OPEN_DAYS)
            contact = _contact(accounts[signal.account_id])
            risk = at_risk_until.get(signal.account_id)
            for day in stand.days:
                at = signal.at + timedelta(days=day)
                state = AccountState(stage=Stage(signal.stage),
                                     churn_risk_open=risk is not None and at < risk)
                _step(session, stand, signal, day, contact, state, history, gate)
        session.commit()
    engine.dispose()


def _step(session: Session, stand: Stand, signal: SignalRow, day: float,
          contact: Contact | None, state: AccountState, history: dict[str, list[SentMessage]],
          gate: OutreachPolicy) -> None:
    """One executed step: its row, its message through the gate, its task on day 0."""
    at = signal.at + timedelta(days=day)
    step = f"day-{day:g}"
    key = f"{stand.name}:{signal.id}:{step}"
    session.add(PlaybookStepRow(
        idempotency_key=key, account_id=signal.account_id, playbook=stand.name,
        signal_id=signal.id, step=step, run_name=f"{stand.name}/{signal.account_id}/{step}",
        tags=[], due_at=at, status="done", attempts=1, created_at=signal.at, started_at=at,
        done_at=at, outcome="ok"))
    if contact is not None:
        intent = MessageIntent(stand.name, step, stand.priority, promotional=stand.promotional)
        decision = decide(intent, contact, state, history[contact.email], at, gate)
        status, reason, due = "sent", None, None
        if isinstance(decision, Suppress):
            status, reason = "suppressed", decision.reason
        elif isinstance(decision, Defer):
            status, reason, due = "deferred", decision.reason, decision.until
        else:
            history[contact.email].append(SentMessage(at, stand.priority, stand.name))
        session.add(ActionRow(
            idempotency_key=f"{key}:{contact.email}", account_id=signal.account_id,
            playbook=stand.name, kind="email", recipient=contact.email, role=None,
            subject=f"{stand.name} {step}", status=status, reason=reason, due_at=due,
            created_at=at, payload={"template": step, "step": step,
                                    "priority": stand.priority, "signal_id": signal.id}))
    if day == 0:
        session.add(ActionRow(
            idempotency_key=f"{key}:task", account_id=signal.account_id, playbook=stand.name,
            kind="task", recipient=stand.owner, role=stand.owner,
            subject=f"Follow up {signal.kind} <{signal.account_id}>", status="open",
            reason=None, due_at=at + timedelta(days=2), created_at=at,
            payload={"owner": stand.owner, "step": step, "signal_id": signal.id}))


def backtest_db(url: str, spec: CohortSpec, gate: OutreachPolicy) -> None:
    """A database as a backtest would leave it: the cohort applied, the playbooks played."""
    feed_cohort(url, spec)
    play(url, gate)
