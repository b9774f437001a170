"""A reproducible cohort of customer accounts living through a year, as wire-shaped CloudEvents.

Personas drive the story: thriving accounts reach their goals, expand and renew; fading ones
lose users, escalate tickets, fail payments and cancel; stalled ones never activate; some
accounts are provisioned before billing says they signed (their events arrive early).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from laer_domain.events import make_event

PERSONAS = (("thriving", 0.5), ("fading", 0.25), ("stalled", 0.15), ("early", 0.10))
FEATURES = ("reports", "integrations", "dashboards", "alerts", "api")
TERM_DAYS = 180


@dataclass(frozen=True)
class CohortSpec:
    """How many accounts, over which year, with which seed."""

    accounts: int = 200
    seed: int = 7
    end: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: int = 365
    bad_share: float = 0.005  # malformed records, to show the dead-letter topic at work


def _persona(rng: random.Random) -> str:
    roll, acc = rng.random(), 0.0
    for name, share in PERSONAS:
        acc += share
        if roll < acc:
            return name
    return PERSONAS[0][0]


class _Account:
    def __init__(self, spec: CohortSpec, index: int, rng: random.Random) -> None:
        self.id = f"acct-{index:04d}"
        self.rng = rng
        self.persona = _persona(rng)
        self.begin = spec.end - timedelta(days=spec.days)
        self.end = spec.end
        self.seats = rng.choice((10, 20, 25, 50, 100))
        self.events: list[dict[str, Any]] = []
        self.n = 0

    def at(self, day: float) -> datetime:
        return self.begin + timedelta(days=day, hours=self.rng.randint(8, 17))

    def emit(self, type_: str, day: float, data: dict[str, Any], source: str) -> None:
        when = self.at(day)
        if when > self.end:
            return
        self.n += 1
        self.events.append(make_event(type_, self.id, when, data, id=f"{self.id}-{self.n}",
                                      source=source))

    def term(self, start_day: float) -> dict[str, str]:
        start = self.at(start_day).date()
        return {"term_start": start.isoformat(),
                "term_end": (start + timedelta(days=TERM_DAYS)).isoformat()}

    def story(self) -> list[dict[str, Any]]:
        rng = self.rng
        start = rng.uniform(0, 150)
        goals = [{"key": "reports_shared", "target": 50}] if rng.random() < 0.4 else []
        self.emit("laer.billing.subscription_started", start, {
            "plan": rng.choice(("starter", "team", "business")), "seats": self.seats,
            "mrr": str(self.seats * rng.choice((15, 30, 60))), "currency": "EUR",
            **self.term(start), "goals": goals,
            "contacts": [{"email": f"buyer@{self.id}.example", "name": "Buyer", "role": "buyer",
                          "channels": ["email"], "timezone": rng.choice(
                              ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"))}],
        }, "billing")
        live = start + (-2 if self.persona == "early" else rng.uniform(1, 10))
        self.emit("laer.usage.provisioned", live, {}, "product")
        self.emit("laer.billing.invoice_paid", start + rng.uniform(0, 5),
                  {"invoice_id": f"{self.id}-inv-1", "amount": "100.00", "currency": "EUR"},
                  "billing")
        self._usage(max(live, start), goals)
        self._support(start)
        self._term_end(start, goals)
        return self.events

    def _usage(self, live: float, goals: list[dict[str, Any]]) -> None:
        rng, share = self.rng, {"thriving": 0.75, "fading": 0.65, "stalled": 0.3,
                                "early": 0.7}[self.persona]
        day = live + 1
        while day < live + 2 * TERM_DAYS:
            factor = share
            if self.persona == "fading" and day > live + 60:
                factor = share * 0.35  # the usage cliff behind a churn risk
            elif self.persona == "thriving":
                factor = min(0.95, share + (day - live) / 400)
            count = max(0, int(self.seats * factor + rng.randint(-1, 1)))
            self.emit("laer.usage.active_users", day,
                      {"date": self.at(day).date().isoformat(), "count": count}, "product")
            if rng.random() < 0.3:
                self.emit("laer.usage.feature_used", day,
                          {"feature": rng.choice(FEATURES), "count": rng.randint(1, 40)},
                          "product")
            day += 1 if day < live + 30 else 7
        if goals and self.persona in ("thriving", "early"):
            self.emit("laer.usage.outcome_achieved", live + rng.uniform(20, 60),
                      {"goal": "reports_shared", "value": 60}, "product")
        if self.persona == "thriving" and rng.random() < 0.4:
            self.emit("laer.usage.limit_reached", live + rng.uniform(60, 120),
                      {"limit": "seats", "used": self.seats, "allowed": self.seats}, "product")

    def _support(self, start: float) -> None:
        rng = self.rng
        tickets = rng.randint(0, 2) + (3 if self.persona == "fading" else 0)
        for t in range(tickets):
            day = start + rng.uniform(10, 150)
            ticket = f"{self.id}-t{t}"
            self.emit("laer.support.ticket_opened", day, {"ticket_id": ticket, "priority":
                      rng.choice(("low", "normal", "high", "urgent"))}, "support")
            if self.persona == "fading" and t < 3:
                self.emit("laer.support.ticket_escalated", day + 1, {"ticket_id": ticket},
                          "support")
            self.emit("laer.support.ticket_resolved", day + rng.uniform(1, 6),
                      {"ticket_id": ticket}, "support")
        score = rng.randint(2, 5) if self.persona == "fading" else rng.randint(7, 10)
        self.emit("laer.support.survey_response", start + 45, {"kind": "nps", "score": score},
                  "support")

    def _term_end(self, start: float, goals: list[dict[str, Any]]) -> None:
        rng, end = self.rng, start + TERM_DAYS
        if self.persona == "fading":
            self.emit("laer.billing.payment_failed", start + 100,
                      {"invoice_id": f"{self.id}-inv-2", "amount": "100.00", "currency": "EUR",
                       "attempt": 1}, "billing")
            self.emit("laer.billing.subscription_canceled", end - 20,
                      {"effective_at": self.at(end).isoformat(), "reason": "low usage"},
                      "billing")
            if rng.random() < 0.3:  # a win-back some weeks later
                self.emit("laer.billing.subscription_started", end + 40, {
                    "plan": "starter", "seats": self.seats // 2 or 1, "mrr": "200",
                    "currency": "EUR", **self.term(end + 40)}, "billing")
            return
        if self.persona == "stalled" and rng.random() < 0.5:
            return  # lets the term lapse: churned after the grace period
        self.emit("laer.billing.subscription_renewed", end - rng.uniform(5, 30), {
            **self.term(end), "plan": "business", "seats": self.seats + 10,
            "mrr": str((self.seats + 10) * 30), "goals": goals}, "billing")


def _malformed(rng: random.Random, account: str, when: datetime) -> dict[str, Any]:
    """A deliberately bad event (negative count) that must end in the dead-letter topic."""
    return make_event("laer.usage.active_users", account, when,
                      {"date": when.date().isoformat(), "count": -rng.randint(1, 9)},
                      id=f"{account}-bad-{rng.randint(0, 10**9)}", source="product")


def cohort(spec: CohortSpec) -> list[dict[str, Any]]:
    """Every event of the cohort, ordered by event time (ties by id)."""
    rng = random.Random(spec.seed)
    events: list[dict[str, Any]] = []
    for i in range(spec.accounts):
        account = _Account(spec, i, random.Random(rng.random()))
        events.extend(account.story())
    bad = [_malformed(rng, e["subject"], datetime.fromisoformat(e["time"]))
           for e in events if rng.random() < spec.bad_share]
    events.extend(bad)
    events.sort(key=lambda e: (e["time"], e["id"]))
    return events
