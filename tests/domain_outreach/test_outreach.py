"""The outreach gate, with fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from laer_domain.model import Contact, Stage
from laer_domain.outreach import (
    AccountState,
    Defer,
    MessageIntent,
    OutreachPolicy,
    Priority,
    Send,
    SentMessage,
    Suppress,
    decide,
    in_quiet_hours,
)

NOON_BERLIN = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)  # 12:00 in Berlin (CET)
POLICY = OutreachPolicy()
ADOPT = AccountState(stage=Stage.ADOPT, churn_risk_open=False)
AT_RISK = AccountState(stage=Stage.ADOPT, churn_risk_open=True)


def contact(**kw: object) -> Contact:
    base: dict[str, object] = {"email": "ada@example.com", "name": "Ada", "role": "buyer",
                               "channels": ["email"], "timezone": "Europe/Berlin"}
    base.update(kw)
    return Contact.model_validate(base)


def intent(priority: Priority = Priority.ONBOARDING, **kw: object) -> MessageIntent:
    return MessageIntent(playbook="pb", name="msg", priority=priority, **kw)  # type: ignore[arg-type]


def sent(hours_ago: float, priority: Priority, now: datetime = NOON_BERLIN) -> SentMessage:
    return SentMessage(at=now - timedelta(hours=hours_ago), priority=priority)


def test_sends_in_daytime_on_the_preferred_channel() -> None:
    assert decide(intent(), contact(), ADOPT, [], NOON_BERLIN, POLICY) == Send("email")


def test_opted_out_contact_is_suppressed() -> None:
    got = decide(intent(), contact(opted_out=True), ADOPT, [], NOON_BERLIN, POLICY)
    assert got == Suppress("opted_out")


def test_channel_preference_and_availability() -> None:
    sms_only = contact(channels=["sms"])
    got = decide(intent(), sms_only, ADOPT, [], NOON_BERLIN, POLICY)
    assert isinstance(got, Suppress) and got.reason.startswith("no_allowed_channel")
    hooks = OutreachPolicy(available_channels=frozenset({"email", "webhook"}))
    both = intent(channels=("webhook", "email"))
    assert decide(both, contact(channels=["webhook"]), ADOPT, [], NOON_BERLIN, hooks) == \
        Send("webhook")
    # webhook preferred by the message but not configured here: falls back to email
    assert decide(both, contact(channels=["webhook", "email"]), ADOPT, [], NOON_BERLIN,
                  POLICY) == Send("email")


def test_no_promotion_while_churn_risk_open() -> None:
    upsell = intent(Priority.UPSELL, promotional=True)
    assert decide(upsell, contact(), AT_RISK, [], NOON_BERLIN, POLICY) == \
        Suppress("churn_risk_open")
    assert decide(upsell, contact(), ADOPT, [], NOON_BERLIN, POLICY) == Send("email")
    # a rescue message is not promotional: it goes out during the risk
    assert decide(intent(Priority.RESCUE), contact(), AT_RISK, [], NOON_BERLIN, POLICY) == \
        Send("email")


def test_quiet_hours_defer_to_the_next_local_morning() -> None:
    late = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)  # 21:30 Berlin
    got = decide(intent(), contact(), ADOPT, [], late, POLICY)
    assert got == Defer(datetime(2026, 3, 11, 7, 0, tzinfo=UTC), "quiet_hours in Europe/Berlin")
    early = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # 06:00 Berlin, same morning
    got = decide(intent(), contact(), ADOPT, [], early, POLICY)
    assert isinstance(got, Defer) and got.until == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)
    # the same instant is daytime in New York
    assert decide(intent(), contact(timezone="America/New_York"), ADOPT, [], late,
                  POLICY) == Send("email")


def test_quiet_hours_follow_daylight_saving_time() -> None:
    # Berlin switches to CEST on 2026-03-29: 08:00 local is then 06:00 UTC
    late = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 23:00 CET
    got = decide(intent(), contact(), ADOPT, [], late, POLICY)
    assert isinstance(got, Defer) and got.until == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_quiet_window_bounds() -> None:
    assert in_quiet_hours(time(20, 0), time(20), time(8))
    assert not in_quiet_hours(time(8, 0), time(20), time(8))
    assert in_quiet_hours(time(12, 30), time(12), time(13))
    assert not in_quiet_hours(time(3), time(8), time(8))  # equal bounds: no quiet hours


def test_frequency_cap_counts_only_same_or_higher_priority() -> None:
    history = [sent(24, Priority.UPSELL), sent(48, Priority.ONBOARDING)]
    # one onboarding-or-higher message in the window: an onboarding message still fits
    assert decide(intent(Priority.ONBOARDING), contact(), ADOPT, history, NOON_BERLIN,
                  POLICY) == Send("email")
    # for another upsell both count: capped
    got = decide(intent(Priority.UPSELL), contact(), ADOPT, history, NOON_BERLIN, POLICY)
    assert isinstance(got, Suppress) and got.reason.startswith("frequency_cap")
    # two renewal messages block a rescue message but lower ones never block a renewal
    loud = [sent(1, Priority.RENEWAL), sent(2, Priority.RENEWAL)]
    assert isinstance(decide(intent(Priority.RESCUE), contact(), ADOPT, loud, NOON_BERLIN,
                             POLICY), Suppress)
    noisy = [sent(h, Priority.UPSELL) for h in (1, 2, 3)]
    assert decide(intent(Priority.RENEWAL), contact(), ADOPT, noisy, NOON_BERLIN, POLICY) == \
        Send("email")


def test_frequency_window_is_rolling_and_configurable() -> None:
    history = [sent(7 * 24 + 1, Priority.RENEWAL), sent(1, Priority.RENEWAL)]
    assert decide(intent(Priority.RENEWAL), contact(), ADOPT, history, NOON_BERLIN,
                  POLICY) == Send("email")
    strict = OutreachPolicy(frequency_cap=1, frequency_window=timedelta(days=14))
    got = decide(intent(Priority.RENEWAL), contact(), ADOPT, history, NOON_BERLIN, strict)
    assert isinstance(got, Suppress) and "in 14 days" in got.reason


def test_suppression_wins_over_quiet_hours() -> None:
    late = datetime(2026, 3, 10, 21, 0, tzinfo=UTC)
    got = decide(intent(), contact(opted_out=True), ADOPT, [], late, POLICY)
    assert got == Suppress("opted_out")


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError):
        decide(intent(), contact(), ADOPT, [], datetime(2026, 1, 1, 12), POLICY)


def test_a_cap_suppression_names_the_messages_that_used_the_budget() -> None:
    history = [SentMessage(at=NOON_BERLIN - timedelta(hours=30), priority=Priority.RENEWAL, id=7),
               SentMessage(at=NOON_BERLIN - timedelta(hours=5), priority=Priority.ONBOARDING,
                           id=9),
               SentMessage(at=NOON_BERLIN - timedelta(hours=2), priority=Priority.UPSELL, id=11),
               SentMessage(at=NOON_BERLIN - timedelta(days=8), priority=Priority.RENEWAL, id=3)]
    got = decide(intent(Priority.ONBOARDING), contact(), ADOPT, history, NOON_BERLIN, POLICY)
    # the upsell (lower priority) and the one outside the window did not count; oldest first
    assert got == Suppress("frequency_cap: 2 messages of priority >= 2 in 7 days", (7, 9))


def test_other_suppressions_name_no_messages() -> None:
    history = [SentMessage(at=NOON_BERLIN - timedelta(hours=1), priority=Priority.RENEWAL, id=1)]
    got = decide(intent(), contact(opted_out=True), ADOPT, history * 3, NOON_BERLIN, POLICY)
    assert isinstance(got, Suppress) and got.used_by == ()
