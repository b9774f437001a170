"""Each playbook end to end against a real Prefect API, SMTP server and HTTP receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

from laer_domain.events import make_event
from tests.playbooks.conftest import (
    SECRET,
    T0,
    HarnessFactory,
    Hooks,
    Mailbox,
    contact,
    landing,
)


def _failed_payment(account: str, days: int) -> dict[str, object]:
    return make_event("laer.billing.payment_failed", account, T0 + timedelta(days=days),
                      {"invoice_id": f"inv-{days}", "amount": 1500, "currency": "EUR",
                       "attempt": 1}, source="billing")


def _limit(account: str, days: int) -> dict[str, object]:
    return make_event("laer.usage.limit_reached", account, T0 + timedelta(days=days),
                      {"limit": "api_calls", "used": 1000, "allowed": 1000}, source="product")


def test_upsell_sends_the_roi_summary_to_the_buyer_and_assigns_sales(unique: str,
        harness: HarnessFactory, mailbox: Mailbox) -> None:
    acc = f"up-{unique}"
    h = harness()
    h.feed([*landing(acc, [contact(acc), contact(acc, role="admin")]), _limit(acc, 10)])
    report = h.run("upsell")
    assert [state for _, state in report.runs] == ["Completed"]
    assert [(a.kind, a.status, a.recipient) for a in report.actions] == [
        ("email", "sent", f"buyer@{acc}.example"), ("task", "open", "sales")]
    (msg,) = mailbox.messages
    assert msg["To"] == f"buyer@{acc}.example"
    assert "api_calls" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_no_upsell_while_a_churn_risk_is_open(unique: str, harness: HarnessFactory,
                                              mailbox: Mailbox) -> None:
    acc = f"risky-{unique}"
    h = harness()
    h.feed([*landing(acc), _failed_payment(acc, 8), _limit(acc, 10)])
    report = h.run("upsell")
    assert [(a.kind, a.status, a.reason) for a in report.actions] == [
        ("email", "suppressed", "churn_risk_open")]
    assert mailbox.messages == []


def test_renewal_outreach_works_the_window_from_t90_to_t30(unique: str, harness: HarnessFactory,
                                                           mailbox: Mailbox) -> None:
    acc = f"ren-{unique}"
    h = harness()
    h.feed(landing(acc, term_days=200))
    opened = h.sweep(T0 + timedelta(days=111))  # term end - 89 days
    assert "RenewalWindowOpened" in {s.kind.value for s in opened}
    report = h.run("renewal_outreach")
    assert [name for name, _ in report.runs] == [
        f"renewal_outreach/{acc}/{step}" for step in ("t-90", "t-60", "t-30")]
    assert [(a.kind, a.status) for a in report.actions] == [
        ("email", "sent"), ("email", "sent"), ("task", "open")]
    assert report.actions[-1].role == "renewal_manager"
    subjects = [m["Subject"] for m in mailbox.messages]
    assert subjects[0].startswith("Your value report ahead of renewal")
    assert subjects[1] == "Planning your next term"


def test_a_renewal_at_risk_is_escalated_once(unique: str, harness: HarnessFactory) -> None:
    acc = f"esc-{unique}"
    h = harness()
    h.feed(landing(acc, term_days=200))
    h.sweep(T0 + timedelta(days=111))
    h.feed([_failed_payment(acc, 112)])
    report = h.run("renewal_escalation")
    assert [(a.kind, a.status, a.role) for a in report.actions] == [
        ("task", "open", "renewal_manager")]
    assert report.actions[0].subject.startswith("Renewal at risk: churn risk open")
    # the outreach notices the same risk but does not assign a second escalation
    outreach = h.run("renewal_outreach")
    tasks = [a for a in outreach.actions if a.kind == "task"]
    assert [t.subject.split(":")[0] for t in tasks] == ["Renewal call"]


def test_churn_rescue_calls_the_owner_writes_and_follows_up(unique: str, harness: HarnessFactory,
                                                            mailbox: Mailbox) -> None:
    acc = f"churny-{unique}"
    h = harness()
    h.feed([*landing(acc), _failed_payment(acc, 8)])
    report = h.run("churn_rescue")
    assert [name for name, _ in report.runs] == [f"churn_rescue/{acc}/day-0",
                                                 f"churn_rescue/{acc}/day-7"]
    assert [(a.kind, a.status) for a in report.actions] == [
        ("task", "open"), ("email", "sent"), ("email", "sent"), ("task", "open")]
    assert report.actions[0].role == "customer_success"  # the adopt stage's owner
    assert [m["Subject"] for m in mailbox.messages] == ["Can we help?", "Following up"]


def test_win_back_waits_for_the_cool_down_then_offers(unique: str, harness: HarnessFactory,
                                                      mailbox: Mailbox) -> None:
    acc = f"gone-{unique}"
    h = harness(LAER_PLAYBOOK_WIN_BACK_COOLDOWN_DAYS="30")
    h.feed([*landing(acc), make_event(
        "laer.billing.subscription_canceled", acc, T0 + timedelta(days=20),
        {"effective_at": (T0 + timedelta(days=20)).isoformat(), "reason": "budget"},
        source="billing")])
    report = h.run("win_back")
    assert [name for name, _ in report.runs] == [f"win_back/{acc}/churned",
                                                 f"win_back/{acc}/offer"]
    assert [(a.kind, a.status) for a in report.actions] == [("email", "sent"),
                                                            ("task", "open")]
    assert report.actions[1].subject == "Win-back: churned (budget); offer sent"
    assert [m["Subject"] for m in mailbox.messages] == ["We would like to have you back"]


def test_adoption_nudge_names_every_unused_key_feature(unique: str, harness: HarnessFactory,
                                                       mailbox: Mailbox) -> None:
    acc = f"slow-{unique}"
    h = harness()
    h.feed(landing(acc))
    raised = h.sweep(T0 + timedelta(days=17))  # go-live + 15 days
    assert [s.kind.value for s in raised].count("FeatureUnderused") == 2
    report = h.run("adoption_nudge")
    assert [(a.kind, a.status) for a in report.actions] == [("email", "sent"), ("task", "open")]
    assert report.actions[1].subject == "Adoption: integrations, reports unused since go-live"
    (msg,) = mailbox.messages
    assert "integrations, reports" in msg["Subject"]


def test_webhook_contacts_get_a_signed_post(unique: str, harness: HarnessFactory, hooks: Hooks,
                                            mailbox: Mailbox) -> None:
    acc = f"hooked-{unique}"
    h = harness(LAER_PLAYBOOK_WEBHOOK_URL=hooks.url)
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]),
            _failed_payment(acc, 8)])
    h.run("churn_rescue")
    assert mailbox.messages == []
    headers, body = hooks.received[0]
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(
        hmac.new(SECRET.encode(), content, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["webhook-signature"], expected)
    payload = json.loads(body)
    assert payload["account_id"] == acc and payload["message"] == "churn_rescue_outreach"
    assert payload["to"] == f"buyer@{acc}.example"


def test_account_data_cannot_execute_template_code(unique: str, harness: HarnessFactory,
                                                   mailbox: Mailbox) -> None:
    acc = f"evil-{unique}"
    evil = "<script>alert(1)</script> {{ 7*7 }} {% raw %}"
    h = harness(LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed(landing(acc, [contact(acc, name=evil)]))
    h.run("onboarding", horizon_s=0)  # day-0 only
    msg = mailbox.messages[0]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "{{ 7*7 }}" in text and "49" not in text
    assert msg["Subject"] == f"Welcome aboard, {evil}"
