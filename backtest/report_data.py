"""The backtest report's figures, read from a database with the production schema.

Plain dataclasses and no drawing, so each figure can be checked against the database alone.
Weeks start on Monday (UTC) and bucket rows by their stored times, which in a backtest are
simulated (event) times: stage changes by `at`, signals by `at`, runs by `created_at`,
messages and tasks by `created_at` (when the gate decided or the task was opened).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, select
from sqlalchemy.orm import Session

from laer_domain.model import Stage
from laer_domain.outreach import OutreachPolicy
from persistence.db import make_engine
from persistence.tables import (
    AccountRow,
    ActionRow,
    AppliedEventRow,
    PlaybookRunRow,
    PlaybookStepRow,
    SignalRow,
    StageChangeRow,
)

STAGES = tuple(s.value for s in Stage)  # the funnel's order, churned last
DECISIONS = ("sent", "suppressed", "deferred")  # the gate's outcomes, in the report's order
TASK = "task"


def week_of(at: datetime) -> date:
    """The Monday (UTC) of the week `at` falls in."""
    return week_of_day(at.astimezone(UTC).date())


def weeks_between(first: date, last: date) -> list[date]:
    """Every Monday from `first`'s week to `last`'s, both included."""
    start, end = week_of_day(first), week_of_day(last)
    return [start + timedelta(weeks=i) for i in range((end - start).days // 7 + 1)]


def week_of_day(day: date) -> date:
    """The Monday of the week `day` falls in."""
    return day - timedelta(days=day.weekday())


def reason_code(reason: str | None) -> str:
    """The rule part of a gate reason: `frequency_cap: 2 messages ...` -> `frequency_cap`."""
    if not reason:
        return "-"
    return reason.split(":", 1)[0].strip()


@dataclass(frozen=True)
class WeekSeries:
    """Counts per week for a few named series (stages, signal kinds, decisions)."""

    weeks: list[date]
    series: dict[str, list[int]]

    def total(self, name: str) -> int:
        """The series' sum over all weeks."""
        return sum(self.series.get(name, []))


@dataclass(frozen=True)
class PlaybookFigures:
    """What one playbook did over the backtest."""

    playbook: str
    runs_started: int
    runs_coalesced: int
    steps_executed: int
    steps_failed: int
    steps_open: int
    messages: dict[str, int]  # by status: sent, suppressed, deferred, and any other
    tasks: int


@dataclass(frozen=True)
class ReasonCount:
    """Messages of one playbook with one gate decision and reason."""

    playbook: str
    decision: str
    reason: str
    count: int


@dataclass(frozen=True)
class TaskCount:
    """Tasks one playbook opened for one role and owner."""

    playbook: str
    role: str
    owner: str
    count: int


@dataclass(frozen=True)
class ContactWeek:
    """Messages sent to one contact in one week."""

    contact: str
    week: date
    messages: int


@dataclass(frozen=True)
class ContactLoad:
    """Messages per contact per week, against the frequency cap."""

    cap: int
    window_days: float
    weeks: list[date]
    peak: list[int]  # the most any one contact got, per week
    mean: list[float | None]  # over contacts messaged that week (None: nobody was)
    distribution: dict[int, int]  # messages in a week -> how many contact-weeks
    over_cap: list[ContactWeek]  # contact-weeks above the cap, most first


@dataclass(frozen=True)
class ReportData:
    """Every figure of one backtest database."""

    label: str
    accounts: int
    events: int
    first: datetime | None
    last: datetime | None
    funnel: WeekSeries  # accounts per stage at each week's end
    signals: WeekSeries  # signals raised per kind per week (retracted ones left out)
    decisions: WeekSeries  # messages per gate decision per week
    playbooks: list[PlaybookFigures]
    reasons: list[ReasonCount]
    tasks: list[TaskCount]
    contacts: ContactLoad


@dataclass(frozen=True)
class ActionKey:
    """An action as the comparison sees it: what, to whom, and the gate's decision."""

    label: str
    status: str
    reason: str


@dataclass(frozen=True)
class AccountDiff:
    """An account whose actions differ between the baseline and the variant."""

    account_id: str
    baseline: dict[str, int]  # actions by status
    variant: dict[str, int]
    changes: list[str] = field(default_factory=list)  # human-readable, one per action


def _span(session: Session) -> tuple[datetime | None, datetime | None]:
    """The first and last stored (event) time over stage changes, signals and actions."""
    bounds = [session.execute(select(func.min(col), func.max(col))).one() for col in (
        StageChangeRow.at, SignalRow.at, ActionRow.created_at, PlaybookRunRow.created_at)]
    firsts = [_aware(lo) for lo, _ in bounds if lo is not None]
    lasts = [_aware(hi) for _, hi in bounds if hi is not None]
    return (min(firsts) if firsts else None, max(lasts) if lasts else None)


def _aware(value: datetime) -> datetime:
    """A UTC datetime, whatever the backend returned."""
    # min()/max() bypass the column type on SQLite and come back naive (they are UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def funnel(session: Session, weeks: Sequence[date]) -> WeekSeries:
    """Accounts per stage at the end of each week, replayed from the stage history."""
    changes = session.execute(select(StageChangeRow.account_id, StageChangeRow.to_stage,
                                     StageChangeRow.at)
                              .order_by(StageChangeRow.at, StageChangeRow.id)).all()
    stage_of: dict[str, str] = {}
    series: dict[str, list[int]] = {s: [] for s in STAGES}
    i = 0
    for monday in weeks:
        end = datetime.combine(monday + timedelta(weeks=1), datetime.min.time(), tzinfo=UTC)
        while i < len(changes) and changes[i].at < end:
            stage_of[changes[i].account_id] = changes[i].to_stage
            i += 1
        counts = Counter(stage_of.values())
        for stage in series:
            series[stage].append(counts.get(stage, 0))
    for stage in sorted({s for s in stage_of.values() if s not in series}):
        series[stage] = [0] * len(weeks)  # a stage this code does not know: shown, not lost
    return WeekSeries(list(weeks), series)


def _per_week(rows: Iterable[tuple[str, datetime]], weeks: Sequence[date],
              order: Sequence[str] = ()) -> WeekSeries:
    """Count (name, instant) rows per name per week; `order` first, the rest sorted."""
    index = {w: i for i, w in enumerate(weeks)}
    counts: dict[str, list[int]] = {name: [0] * len(weeks) for name in order}
    for name, at in rows:
        counts.setdefault(name, [0] * len(weeks))[index[week_of(at)]] += 1
    named = list(order) + sorted(n for n in counts if n not in order)
    return WeekSeries(list(weeks), {n: counts[n] for n in named})


def _actions(session: Session, *columns: Any, tasks: bool = False,
             statuses: Sequence[str] = (), where: Sequence[ColumnElement[bool]] = ()
             ) -> Iterable[tuple[Any, ...]]:
    """`columns` of every message (with `tasks`: every task), of `statuses` if any given."""
    stmt = select(*columns).where(ActionRow.kind == TASK if tasks else ActionRow.kind != TASK,
                                  *where)
    if statuses:
        stmt = stmt.where(ActionRow.status.in_(statuses))
    return session.execute(stmt).tuples()


def signals_per_week(session: Session, weeks: Sequence[date]) -> WeekSeries:
    """Signals raised per kind per week; retracted signals were never acted on, so not shown."""
    rows = session.execute(select(SignalRow.kind, SignalRow.at)
                           .where(SignalRow.retracted_at.is_(None))).tuples()
    return _per_week(rows, weeks)


def decisions_per_week(session: Session, weeks: Sequence[date]) -> WeekSeries:
    """Messages per gate decision (sent, suppressed, deferred, other statuses) per week."""
    return _per_week(_actions(session, ActionRow.status, ActionRow.created_at), weeks,
                     DECISIONS)


def playbook_figures(session: Session) -> list[PlaybookFigures]:
    """Runs, steps, messages by status and tasks, per playbook."""
    runs = Counter(session.execute(select(PlaybookRunRow.playbook, PlaybookRunRow.state))
                   .tuples())
    steps = Counter(session.execute(select(PlaybookStepRow.playbook, PlaybookStepRow.status))
                    .tuples())
    actions = Counter(session.execute(select(ActionRow.playbook, ActionRow.kind,
                                             ActionRow.status)).tuples())
    names = sorted({p for p, _ in runs} | {p for p, _ in steps} | {p for p, _, _ in actions})
    out = []
    for name in names:
        messages = {d: 0 for d in DECISIONS}
        for (pb, kind, status), n in actions.items():
            if pb == name and kind != TASK:
                messages[status] = messages.get(status, 0) + n
        out.append(PlaybookFigures(
            playbook=name,
            runs_started=sum(n for (pb, s), n in runs.items() if pb == name and s != "Coalesced"),
            runs_coalesced=runs.get((name, "Coalesced"), 0),
            steps_executed=steps.get((name, "done"), 0),
            steps_failed=steps.get((name, "failed"), 0),
            steps_open=steps.get((name, "due"), 0) + steps.get((name, "running"), 0),
            messages=messages,
            tasks=sum(n for (pb, kind, _), n in actions.items() if pb == name and kind == TASK)))
    return out


def reasons(session: Session) -> list[ReasonCount]:
    """Suppressed and deferred messages per playbook, decision and reason (rule)."""
    rows = _actions(session, ActionRow.playbook, ActionRow.status, ActionRow.reason,
                    statuses=("suppressed", "deferred"))
    counts = Counter((pb, status, reason_code(reason)) for pb, status, reason in rows)
    return [ReasonCount(pb, status, reason, n) for (pb, status, reason), n in
            sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1], kv[0][2]))]


def tasks(session: Session) -> list[TaskCount]:
    """Tasks per playbook, role and owner (the task's `owner`, else its role)."""
    rows = _actions(session, ActionRow.playbook, ActionRow.role, ActionRow.payload, tasks=True)
    counts: Counter[tuple[str, str, str]] = Counter()
    for pb, role, payload in rows:
        owner = (payload or {}).get("owner") or role or "-"
        counts[(pb, role or "-", str(owner))] += 1
    return [TaskCount(pb, role, owner, n) for (pb, role, owner), n in sorted(counts.items())]


def contact_load(session: Session, weeks: Sequence[date], policy: OutreachPolicy
                 ) -> ContactLoad:
    """Sent messages per contact per week, with the gate's cap to hold them against."""
    rows = _actions(session, ActionRow.recipient, ActionRow.created_at, statuses=("sent",),
                    where=(ActionRow.recipient.is_not(None),))
    per: Counter[tuple[str, date]] = Counter((r or "", week_of(at)) for r, at in rows)
    by_week: dict[date, list[int]] = defaultdict(list)
    for (_, week), n in per.items():
        by_week[week].append(n)
    over = sorted((ContactWeek(c, w, n) for (c, w), n in per.items() if n > policy.frequency_cap),
                  key=lambda cw: (-cw.messages, cw.week, cw.contact))
    return ContactLoad(
        cap=policy.frequency_cap, window_days=policy.frequency_window / timedelta(days=1),
        weeks=list(weeks), peak=[max(by_week.get(w, [0])) for w in weeks],
        mean=[sum(by_week[w]) / len(by_week[w]) if by_week.get(w) else None for w in weeks],
        distribution=dict(sorted(Counter(per.values()).items())), over_cap=over)


def recorded_gate(summary: Mapping[str, Any]) -> OutreachPolicy:
    """The frequency cap and window a run used, as its summary (summary.json) records them."""
    gate = summary.get("gate")
    if not isinstance(gate, Mapping):  # a summary written before the gate was recorded
        gate = (summary.get("overrides") or {}).get("playbook") or {}
    default = OutreachPolicy()
    days = gate.get("frequency_window_days", default.frequency_window / timedelta(days=1))
    return OutreachPolicy(frequency_cap=int(gate.get("frequency_cap", default.frequency_cap)),
                          frequency_window=timedelta(days=float(days)))


def _read(engine: Engine, label: str, policy: OutreachPolicy) -> ReportData:
    """Every figure, from one session."""
    with Session(engine) as session:
        first, last = _span(session)
        weeks = weeks_between(first.date(), last.date()) if first and last else []
        return ReportData(
            label=label,
            accounts=session.scalar(select(func.count()).select_from(AccountRow)) or 0,
            events=session.scalar(select(func.count()).select_from(AppliedEventRow)) or 0,
            first=first, last=last,
            funnel=funnel(session, weeks), signals=signals_per_week(session, weeks),
            decisions=decisions_per_week(session, weeks),
            playbooks=playbook_figures(session), reasons=reasons(session),
            tasks=tasks(session), contacts=contact_load(session, weeks, policy))


def load_report(database_url: str, *, label: str = "baseline",
                policy: OutreachPolicy | None = None) -> ReportData:
    """Every figure of the report from one database (`policy`: the gate the run used)."""
    engine = make_engine(database_url, read_only=True)
    try:
        return _read(engine, label, policy or OutreachPolicy())
    finally:
        engine.dispose()


def _action_keys(engine: Engine) -> dict[str, dict[str, ActionKey]]:
    """Each account's actions by idempotency key (stable across runs of the same events)."""
    out: dict[str, dict[str, ActionKey]] = defaultdict(dict)
    with Session(engine) as session:
        rows = session.execute(select(
            ActionRow.account_id, ActionRow.idempotency_key, ActionRow.playbook, ActionRow.kind,
            ActionRow.recipient, ActionRow.subject, ActionRow.status, ActionRow.reason,
            ActionRow.payload)).all()
    for r in rows:
        what = (r.payload or {}).get("step") or r.subject
        label = f"{r.playbook} {what} {r.kind} to {r.recipient or '-'}"
        out[r.account_id][r.idempotency_key] = ActionKey(label, r.status, reason_code(r.reason))
    return out


def _describe(key: ActionKey | None) -> str:
    """An action's decision, as the comparison prints it."""
    if key is None:
        return "none"
    return key.status if key.reason == "-" else f"{key.status} ({key.reason})"


def differing_accounts(baseline_url: str, variant_url: str) -> list[AccountDiff]:
    """Accounts whose actions (which ones, their decision and reason) differ between runs."""
    engines = [make_engine(u, read_only=True) for u in (baseline_url, variant_url)]
    try:
        base, variant = (_action_keys(e) for e in engines)
    finally:
        for engine in engines:
            engine.dispose()
    diffs = []
    for account in sorted(set(base) | set(variant)):
        a, b = base.get(account, {}), variant.get(account, {})
        changes = []
        for key in sorted(set(a) | set(b)):
            was, now = a.get(key), b.get(key)
            either = was or now
            if was != now and either is not None:
                changes.append(f"{either.label}: {_describe(was)} -> {_describe(now)}")
        if changes:
            diffs.append(AccountDiff(account, dict(Counter(k.status for k in a.values())),
                                     dict(Counter(k.status for k in b.values())), changes))
    return diffs
