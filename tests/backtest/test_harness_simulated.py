"""PlaybookHarness on the simulated clock: months of a playbook in well under a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flows.kit.testing import PlaybookHarness
from laer_domain.events import make_event

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _landing(account: str, term_days: int) -> list[dict[str, Any]]:
    contact = {"email": f"buyer@{account}.example", "name": "Buyer", "role": "buyer",
               "channels": ["email"], "timezone": "Europe/Berlin"}
    return [make_event("laer.billing.subscription_started", account, T0, {
        "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
        "term_start": T0.date().isoformat(),
        "term_end": (T0 + timedelta(days=term_days)).date().isoformat(),
        "contacts": [contact]}, source="billing")]


@pytest.fixture
def harness(tmp_path: Path, no_network: None) -> Iterator[PlaybookHarness]:
    """A simulated-clock harness on a fresh SQLite file: no SMTP, broker or Prefect."""
    with PlaybookHarness(f"sqlite:///{tmp_path / 'pb.db'}", simulated=True) as h:
        yield h


def test_a_90_day_renewal_sequence_on_the_simulated_clock(
        harness: PlaybookHarness) -> None:
    term_end = T0 + timedelta(days=200)
    for account in ("warm-up", "ren"):  # the first pays for imports and first connections
        harness.feed(_landing(account, term_days=200))
        opened = harness.sweep(term_end - timedelta(days=89))
        assert "RenewalWindowOpened" in {s.kind.value for s in opened}
        began = time.perf_counter()
        report = harness.run("renewal_outreach")
        took = time.perf_counter() - began
    # T-60 falls at midnight UTC, 01:00 in Berlin: the gate defers the touch to 08:00 and
    # the step runs again then, on the simulated clock
    assert [name for name, _ in report.runs] == [
        f"renewal_outreach/ren/{step}" for step in ("t-90", "t-60", "t-60", "t-30")]
    mine = [a for a in report.actions if a.account_id == "ren"]
    assert [(a.kind, a.status) for a in mine] == [
        ("email", "sent"), ("email", "sent"), ("task", "open")]
    # each at its instant of simulated time: T-60 and T-30 before the term's end
    sent = [datetime.fromisoformat(a.payload["sent_at"]) for a in mine[:2]]
    t60 = datetime.combine((term_end - timedelta(days=60)).date(), datetime.min.time(),
                           tzinfo=ZoneInfo("Europe/Berlin")).replace(hour=8)
    assert sent[1] == t60
    assert mine[2].created_at.date() == (term_end - timedelta(days=30)).date()
    assert report.now is not None and report.now < datetime.now(UTC)
    # its speed (about 80 ms) is printed, not asserted: timing belongs in benchmarks
    print(f"renewal sequence: {took * 1000:.0f} ms")
