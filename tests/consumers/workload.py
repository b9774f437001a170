"""A deterministic event workload, its reference outcome and a snapshot of a database's state.

Kafka orders records only within a partition and one account's events come from three topics,
so the interleaving of an account's topics is up to the consumer. To compare runs exactly, the
workload comes in rounds: within a round every account's events are on one topic (one
partition, in order), and the next round starts only after the previous one is consumed. Kills,
rebalances and outages happen inside rounds. Round 0 deliberately parks events (usage before
the landing) that round 1 drains; rounds also re-send events (duplicates at new offsets).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from laer.publish import Mode
from laer_domain.events import event_family, make_event, parse_event
from laer_domain.policy import Policy
from laer_domain.service import InMemoryRepository, LifecycleService
from persistence.tables import (
    AccountRow,
    AppliedEventRow,
    HealthChangeRow,
    OutboxRow,
    ParkedEventRow,
    ProcessedEventRow,
    SignalRow,
    StageChangeRow,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
Event = dict[str, Any]
Round = list[tuple[Event, Mode]]


def _ev(kind: str, account: str, at: datetime, data: dict[str, Any]) -> Event:
    source = {"billing": "billing-system", "usage": "product", "support": "helpdesk"}[
        event_family(kind)]
    return make_event(kind, account, at, data, source=source)


def workload(accounts: int, seed: int = 7, binary_share: float = 0.2,
             prefix: str = "acct") -> list[Round]:
    """Rounds of (event, binding mode); about 22 events per account in all."""
    rnd = random.Random(seed)
    ids = [f"{prefix}-{i:04d}" for i in range(accounts)]
    rounds: list[list[Event]] = [[] for _ in range(6)]
    for n, acc in enumerate(ids):
        day = T0 + timedelta(minutes=n)
        early = n % 2 == 0
        if early:  # read before the landing: parked, then drained in event-time order
            rounds[0].append(_ev("laer.usage.provisioned", acc, day + timedelta(hours=2), {}))
            rounds[0].append(_ev("laer.usage.feature_used", acc, day + timedelta(hours=3),
                                 {"feature": "import", "count": rnd.randint(1, 9)}))
        seats = rnd.choice([5, 10, 20, 50])
        start = _ev("laer.billing.subscription_started", acc, day, {
            "plan": rnd.choice(["team", "business"]), "seats": seats,
            "mrr": f"{seats * 75}.00", "currency": "EUR",
            "term_start": day.date().isoformat(),
            "term_end": (day + timedelta(days=365)).date().isoformat(),
            "goals": [{"key": "weekly_active", "target": seats // 2}],
            "contacts": [{"email": f"owner@{acc}.example", "name": "Ada", "role": "buyer"}],
        })
        paid = _ev("laer.billing.invoice_paid", acc, day + timedelta(hours=1),
                   {"invoice_id": f"inv-{acc}-1", "amount": seats * 75, "currency": "EUR"})
        rounds[1] += [start, paid]
        if n % 5 == 0:
            rounds[1].append(dict(start))  # the same event again: a duplicate at a new offset
        usage = [] if early else [_ev("laer.usage.provisioned", acc, day + timedelta(days=1), {})]
        for d in range(3):
            at = day + timedelta(days=2 + d * 3)
            usage.append(_ev("laer.usage.active_users", acc, at, {
                "date": at.date().isoformat(), "count": rnd.randint(0, seats)}))
            usage.append(_ev("laer.usage.feature_used", acc, at + timedelta(hours=1), {
                "feature": rnd.choice(["reports", "api", "sso"]), "count": rnd.randint(1, 40)}))
        rounds[2] += usage
        t = day + timedelta(days=12)
        ticket = f"t-{acc}"
        rounds[3] += [
            _ev("laer.support.ticket_opened", acc, t, {
                "ticket_id": ticket, "priority": rnd.choice(["low", "normal", "high", "urgent"])}),
            _ev("laer.support.ticket_escalated", acc, t + timedelta(hours=4),
                {"ticket_id": ticket}),
            _ev("laer.support.ticket_resolved", acc, t + timedelta(days=1), {"ticket_id": ticket}),
            _ev("laer.support.survey_response", acc, t + timedelta(days=2),
                {"kind": "nps", "score": rnd.randint(0, 10)}),
        ]
        t = day + timedelta(days=20)
        billing = [
            _ev("laer.billing.payment_failed", acc, t, {
                "invoice_id": f"inv-{acc}-2", "amount": seats * 75, "currency": "EUR",
                "attempt": 1}),
            _ev("laer.billing.invoice_paid", acc, t + timedelta(days=2), {
                "invoice_id": f"inv-{acc}-2", "amount": seats * 75, "currency": "EUR"}),
        ]
        if n % 3 == 0:
            billing.append(_ev("laer.billing.plan_changed", acc, t + timedelta(days=3), {
                "plan": "business", "seats": seats * 2, "mrr": seats * 150}))
        rounds[4] += billing
        t = day + timedelta(days=26)
        rounds[5] += [
            _ev("laer.usage.active_users", acc, t, {"date": t.date().isoformat(),
                                                    "count": rnd.randint(0, seats)}),
            _ev("laer.usage.limit_reached", acc, t + timedelta(hours=2), {
                "limit": "seats", "used": seats, "allowed": seats}),
            _ev("laer.usage.outcome_achieved", acc, t + timedelta(hours=5), {
                "goal": "weekly_active", "value": seats}),
        ]
        if n % 7 == 0:
            rounds[5].append(dict(usage[-1]))  # another duplicate, on the usage topic
    result: list[Round] = []
    for events in rounds:
        modes: list[Mode] = ["binary" if rnd.random() < binary_share else "structured"
                             for _ in events]
        result.append(list(zip(events, modes, strict=True)))
    return result


def reference(rounds: Iterable[Round], policy: Policy | None = None) -> dict[str, Any]:
    """The state an uninterrupted consumer reaches: the same events through the service."""
    repo = InMemoryRepository()
    service = LifecycleService(repo, policy or Policy())
    for events in rounds:
        for event, _mode in events:
            parsed = parse_event(event, topic_family=event_family(event["type"]),
                                 record_key=event["subject"])
            service.handle(parsed)
    seen: set[str] = set()
    signals = []
    for s in repo.signals:  # the SQL repository stores a re-derived signal once
        if s.id not in seen:
            seen.add(s.id)
            signals.append((s.id, s.account_id, s.kind.value, s.at.isoformat(), s.stage.value,
                            s.evidence.model_dump(mode="json")))
    stage_changes: dict[str, list[Any]] = defaultdict(list)
    for c in repo.stage_changes:
        stage_changes[c.account_id].append(
            (c.from_stage.value if c.from_stage else None, c.to_stage.value, c.at.isoformat(),
             c.reason, c.event_id))
    health: dict[str, list[Any]] = defaultdict(list)
    for h in repo.health_changes:
        health[h.account_id].append((h.at.isoformat(), h.score, h.band, dict(h.components)))
    applied: dict[str, list[Any]] = defaultdict(list)
    for account_id, e in repo.events:
        applied[account_id].append((e.id, e.source, e.type, e.time.isoformat(),
                                    e.data.model_dump(mode="json")))
    return {
        "accounts": {a.id: (a.stage.value, a.stage_since.isoformat(), a.owner.value,
                            a.model_dump(mode="json")) for a in repo.accounts.values()},
        "signals": sorted(signals, key=lambda s: s[0]),
        "stage_changes": dict(stage_changes),
        "health_changes": dict(health),
        "applied_events": dict(applied),
        "processed": sorted(repo.processed),
        "parked": sum(len(v) for v in repo.parked.values()),
        "outbox": sorted(s[0] for s in signals),
    }


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """The same shape as `reference`, read from a database."""
    with sessions() as s:
        accounts = {r.id: (r.stage, r.stage_since.isoformat(), r.owner, r.state)
                    for r in s.scalars(select(AccountRow))}
        signals = sorted(((r.id, r.account_id, r.kind, r.at.isoformat(), r.stage, r.evidence)
                          for r in s.scalars(select(SignalRow))), key=lambda x: x[0])
        stage_changes: dict[str, list[Any]] = defaultdict(list)
        for c in s.scalars(select(StageChangeRow).order_by(StageChangeRow.id)):
            stage_changes[c.account_id].append((c.from_stage, c.to_stage, c.at.isoformat(),
                                                c.reason, c.event_id))
        health: dict[str, list[Any]] = defaultdict(list)
        for h in s.scalars(select(HealthChangeRow).order_by(HealthChangeRow.id)):
            health[h.account_id].append((h.at.isoformat(), h.score, h.band, h.components))
        applied: dict[str, list[Any]] = defaultdict(list)
        for e in s.scalars(select(AppliedEventRow).order_by(AppliedEventRow.id)):
            applied[e.account_id].append((e.event_id, e.source, e.type, e.time.isoformat(),
                                          e.data))
        processed = sorted((p.source, p.event_id) for p in s.scalars(select(ProcessedEventRow)))
        parked = len(s.scalars(select(ParkedEventRow.id)).all())
        outbox = sorted(o.signal_id for o in s.scalars(select(OutboxRow)))
    return {"accounts": accounts, "signals": signals, "stage_changes": dict(stage_changes),
            "health_changes": dict(health), "applied_events": dict(applied),
            "processed": processed, "parked": parked, "outbox": outbox}


def differences(actual: dict[str, Any], expected: dict[str, Any], limit: int = 5) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    out: list[str] = []
    for key in expected:
        a, e = actual.get(key), expected[key]
        if a == e:
            continue
        if isinstance(e, dict) and isinstance(a, dict):
            missing = sorted(set(e) - set(a))[:limit]
            extra = sorted(set(a) - set(e))[:limit]
            changed = sorted(k for k in set(a) & set(e) if a[k] != e[k])[:limit]
            out.append(f"{key}: missing {missing} extra {extra} changed {changed}")
            for k in changed[:2]:
                out.append(f"  {key}[{k}]:\n    got      {a[k]}\n    expected {e[k]}")
        elif isinstance(e, list) and isinstance(a, list):
            out.append(f"{key}: {len(a)} rows, expected {len(e)}; "
                       f"missing {[x for x in e if x not in a][:limit]} "
                       f"extra {[x for x in a if x not in e][:limit]}")
        else:
            out.append(f"{key}: {a!r} != {e!r}")
    return out
