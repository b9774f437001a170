"""A playbook whose starting signal was retracted stops at its next step and sends nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from laer_domain.events import make_event
from persistence.tables import OutboxRow, SignalRow
from tests.playbooks.conftest import T0, HarnessFactory, Mailbox, contact, landing


def test_a_retracted_signal_stops_its_playbook(unique: str, harness: HarnessFactory,
                                               mailbox: Mailbox) -> None:
    acc = f"late-{unique}"
    h = harness()
    h.feed(landing(acc, [contact(acc)], term_days=200))
    raised = h.feed([make_event("laer.usage.limit_reached", acc, T0 + timedelta(days=10),
                                {"limit": "api_calls", "used": 1000, "allowed": 1000},
                                source="product")])
    first = next(s for s in raised if s.kind.value == "ExpansionOpportunity")
    # a renewal sent at day 5 is read after the limit: rebuilt, the opportunity belongs to
    # the second term (another signal), and the first term's one no longer holds
    h.feed([make_event("laer.billing.subscription_renewed", acc, T0 + timedelta(days=5), {
        "plan": "team", "seats": 20, "mrr": "1500.00",
        "term_start": (T0 + timedelta(days=200)).isoformat(),
        "term_end": (T0 + timedelta(days=565)).isoformat()}, source="billing")])
    with h.sessions() as s:
        row = s.get(SignalRow, first.id)
        assert row is not None and row.retracted_at is not None
        assert s.scalar(select(OutboxRow.status).where(
            OutboxRow.signal_id == first.id)) == "retracted"
        kept = s.scalars(select(SignalRow.id).where(
            SignalRow.kind == "ExpansionOpportunity", SignalRow.retracted_at.is_(None))).all()
    assert len(kept) == 1 and kept[0] != first.id
    # the harness queues every stored signal again: the run starts for the retracted one (the
    # other is coalesced into it, one open run per account and playbook) and stops at once
    report = h.run("upsell")
    assert [state for _, state in report.runs] == ["Completed"]
    assert report.actions == [] and mailbox.messages == []
