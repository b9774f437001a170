"""The outreach gate: may this message reach this contact now? Pure; time is passed in.

Rules, checked in this order (the first that applies decides):

1. ``opted_out``: the contact opted out of all outreach -> Suppress.
2. ``churn_risk_open``: a promotional message (upsell, win-back offer) while the account
   has an open churn risk -> Suppress.
3. ``no_allowed_channel``: none of the message's channels (in order of preference) is both
   allowed by the contact and available in this installation -> Suppress.
4. ``frequency_cap``: the contact already received ``frequency_cap`` messages of the same or
   a higher priority within the rolling ``frequency_window`` -> Suppress. Only messages of
   priority >= this one count, so lower-priority traffic (upsell) never blocks a renewal
   message, while a renewal message does use up room for an upsell. The suppression names
   the messages that used the budget (`Suppress.used_by`, the ids of their `SentMessage`s).
5. ``quiet_hours``: the contact's local time is inside the quiet window (default
   20:00-08:00, may wrap midnight) -> Defer until the window ends, local time.

Otherwise Send on the chosen channel. A deferred message is asked again at its ``until``
instant; the cap and the other rules then apply afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import IntEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from laer_domain.model import Account, Contact, Stage


class Priority(IntEnum):
    """Message priority at the gate: renewal > rescue > onboarding > upsell."""

    UPSELL = 1
    ONBOARDING = 2
    RESCUE = 3
    RENEWAL = 4


@dataclass(frozen=True)
class MessageIntent:
    """A message a playbook wants to send to one contact."""

    playbook: str
    name: str
    priority: int
    channels: tuple[str, ...] = ("email",)  # in order of preference
    promotional: bool = False  # blocked while a churn risk is open


@dataclass(frozen=True)
class AccountState:
    """What the gate needs to know about the account."""

    stage: Stage
    churn_risk_open: bool

    @classmethod
    def of(cls, account: Account) -> AccountState:
        """The gate's view of an account."""
        return cls(stage=account.stage, churn_risk_open=account.churn_risk is not None)


@dataclass(frozen=True)
class SentMessage:
    """A message already sent to the contact (from any playbook, any account)."""

    at: datetime
    priority: int
    playbook: str = ""
    id: int | None = None  # the stored action, so a suppression can say what used the cap


@dataclass(frozen=True)
class OutreachPolicy:
    """Gate settings; quiet_start == quiet_end disables quiet hours."""

    quiet_start: time = time(20, 0)
    quiet_end: time = time(8, 0)
    frequency_cap: int = 2
    frequency_window: timedelta = timedelta(days=7)
    available_channels: frozenset[str] = field(default_factory=lambda: frozenset({"email"}))


@dataclass(frozen=True)
class Send:
    """Deliver now on `channel`."""

    channel: str


@dataclass(frozen=True)
class Suppress:
    """Do not deliver; `reason` is stored with the action.

    `used_by`: for ``frequency_cap``, the ids of the messages that used up the budget.
    """

    reason: str
    used_by: tuple[int, ...] = ()


@dataclass(frozen=True)
class Defer:
    """Ask again at `until` (UTC)."""

    until: datetime
    reason: str


Decision = Send | Suppress | Defer


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_quiet_hours(local: time, start: time, end: time) -> bool:
    """Whether a local wall-clock time falls in [start, end), wrapping midnight if needed."""
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_hours_end(now: datetime, timezone: str, start: time, end: time) -> datetime | None:
    """The next instant (UTC) quiet hours end for a contact, or None when not quiet now."""
    zone = _zone(timezone)
    local = now.astimezone(zone)
    if not in_quiet_hours(local.time().replace(tzinfo=None), start, end):
        return None
    day = local.date()
    if local.time().replace(tzinfo=None) >= end:
        day += timedelta(days=1)
    resume = datetime.combine(day, end, tzinfo=zone)
    return resume.astimezone(UTC)


def counted(
    history: Iterable[SentMessage], intent: MessageIntent, now: datetime, window: timedelta
) -> list[SentMessage]:
    """The messages of this or a higher priority the contact got within the window, oldest first."""
    since = now - window
    within = (m for m in history if since < m.at <= now and m.priority >= intent.priority)
    return sorted(within, key=lambda m: (m.at, -1 if m.id is None else m.id))


def cap_count(
    history: Iterable[SentMessage], intent: MessageIntent, now: datetime, window: timedelta
) -> int:
    """How many messages of this or a higher priority the contact got within the window."""
    return len(counted(history, intent, now, window))


def choose_channel(
    intent: MessageIntent, contact: Contact, available: frozenset[str]
) -> str | None:
    """The first of the message's channels that the contact allows and we can deliver on."""
    allowed = set(contact.channels)
    for channel in intent.channels:
        if channel in allowed and channel in available:
            return channel
    return None


def decide(
    intent: MessageIntent,
    contact: Contact,
    account: AccountState,
    history: Sequence[SentMessage],
    now: datetime,
    policy: OutreachPolicy,
) -> Decision:
    """Send, Suppress(reason) or Defer(until, reason) one message to one contact at `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if contact.opted_out:
        return Suppress("opted_out")
    if intent.promotional and account.churn_risk_open:
        return Suppress("churn_risk_open")
    channel = choose_channel(intent, contact, policy.available_channels)
    if channel is None:
        wanted = "/".join(intent.channels)
        allowed = "/".join(contact.channels) or "none"
        return Suppress(f"no_allowed_channel: wants {wanted}, contact allows {allowed}")
    within = counted(history, intent, now, policy.frequency_window)
    if len(within) >= policy.frequency_cap:
        days = policy.frequency_window / timedelta(days=1)
        return Suppress(
            f"frequency_cap: {len(within)} messages of priority >= {intent.priority} "
            f"in {days:g} days",
            tuple(m.id for m in within if m.id is not None),
        )
    resume = quiet_hours_end(now, contact.timezone, policy.quiet_start, policy.quiet_end)
    if resume is not None:
        return Defer(resume, f"quiet_hours in {contact.timezone}")
    return Send(channel)
