"""Webhooks signed in the manner of Standard Webhooks, a receiver that verifies them, and the
default secret refused outside the demo."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flows.kit.runtime import refuse_unsafe_secret
from flows.kit.settings import UnsafeSettings
from flows.kit.webhooks import WebhookVerificationError, sign_headers, signature, verify
from persistence.tables import ActionRow
from tests.playbooks.conftest import SECRET, HarnessFactory, Hooks, Mailbox, contact, landing
from tests.playbooks.test_playbooks import _failed_payment

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_the_specification_example_signs_as_published() -> None:
    # The example of the Standard Webhooks specification and its libraries.
    sig = signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret", ["plain-secret", WHSEC])
def test_verify_accepts_a_fresh_delivery_and_rejects_old_future_and_forged_ones(
        secret: str) -> None:
    body = b'{"hello":"world"}'
    headers = sign_headers(secret, "msg_1", body, now=NOW)
    assert verify(headers, body, secret, now=NOW + timedelta(seconds=299)) == "msg_1"
    assert verify({k.upper(): v for k, v in headers.items()}, body, secret, now=NOW) == "msg_1"
    rejected = [
        (headers, body, NOW + timedelta(seconds=301)),              # replayed later
        (headers, body, NOW - timedelta(seconds=301)),              # from the future
        (headers, b'{"hello":"mallory"}', NOW),                     # body changed
        ({**headers, "webhook-id": "msg_2"}, body, NOW),            # id changed
        ({**headers, "webhook-timestamp": str(int(NOW.timestamp()) + 1)}, body, NOW),
        ({k: v for k, v in headers.items() if k != "webhook-signature"}, body, NOW),
        ({**headers, "webhook-timestamp": "soon"}, body, NOW),
    ]
    for h, b, at in rejected:
        with pytest.raises(WebhookVerificationError):
            verify(h, b, secret, now=at)
    with pytest.raises(WebhookVerificationError):
        verify(headers, body, "another-secret", now=NOW)


def test_any_of_several_signatures_may_match_while_a_secret_rotates() -> None:
    body = b"{}"
    headers = sign_headers("new-secret", "msg_9", body, now=NOW)
    rotated = {**headers, "webhook-signature":
               sign_headers("old-secret", "msg_9", body, now=NOW)["webhook-signature"] + " "
               + headers["webhook-signature"]}
    assert verify(rotated, body, "new-secret", now=NOW) == "msg_9"
    assert verify(rotated, body, "old-secret", now=NOW) == "msg_9"


def test_a_whsec_secret_must_be_base64() -> None:
    with pytest.raises(ValueError):
        signature("whsec_not base64!", "msg", 1, b"")


@pytest.mark.parametrize("secret", [SECRET, WHSEC])
def test_a_receiver_built_on_verify_accepts_a_delivery_and_rejects_its_replay(
        secret: str, unique: str, harness: HarnessFactory, hooks: Hooks,
        mailbox: Mailbox) -> None:
    clock = {"now": datetime.now(UTC)}  # the receiver's clock, moved on for the replay

    def receiver(headers: dict[str, str], body: bytes) -> int:
        try:
            verify(headers, body, secret, now=clock["now"])
        except WebhookVerificationError:
            return 401
        return 204

    hooks.check = receiver
    acc = f"signed-{unique}"
    h = harness(LAER_PLAYBOOK_WEBHOOK_URL=hooks.url, LAER_WEBHOOK_SECRET=secret,
                LAER_PLAYBOOK_DAY_SECONDS="86400")
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]), _failed_payment(acc, 8)])
    report = h.run("churn_rescue", horizon_s=0)
    (action,) = [a for a in report.actions if a.kind == "webhook"]
    assert (action.status, action.attempts) == ("sent", 1)
    assert hooks.answered == [204] and mailbox.messages == []
    headers, body = hooks.received[0]
    assert headers["webhook-id"] == action.payload["content"]["id"]
    assert json.loads(body)["to"] == f"buyer@{acc}.example"

    clock["now"] += timedelta(minutes=6)  # a captured request sent again six minutes on
    replay = httpx.post(hooks.url, content=body, headers={
        k: v for k, v in headers.items() if k.startswith("webhook-")}, timeout=10)
    assert replay.status_code == 401
    assert hooks.answered == [204, 401]


def test_the_default_secret_is_refused_outside_the_demo(unique: str, harness: HarnessFactory,
                                                        hooks: Hooks) -> None:
    acc = f"default-{unique}"
    h = harness(LAER_PLAYBOOK_WEBHOOK_URL=hooks.url, LAER_WEBHOOK_SECRET="change-me",
                LAER_PLAYBOOK_DAY_SECONDS="86400")
    with pytest.raises(UnsafeSettings):
        refuse_unsafe_secret()
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]), _failed_payment(acc, 8)])
    report = h.run("churn_rescue", horizon_s=0)
    assert [state for _, state in report.runs] == ["AwaitingRetry"]  # raised: tried again
    assert hooks.received == []
    assert not [a for a in report.actions if a.kind == "webhook"]  # nothing recorded as sent

    h.env["LAER_DEMO"] = "1"  # `laer up` runs the demo with it
    h.__enter__()
    refuse_unsafe_secret()
    demo = h.run("churn_rescue", horizon_s=5)  # its retry, due seconds later; not day 7
    assert [state for _, state in demo.runs] == ["Completed"]
    hooked = [a for a in demo.actions if a.kind == "webhook"]
    assert [(a.status, a.attempts) for a in hooked] == [("sent", 1)]
    assert len(hooks.received) == 1


def test_laer_serve_refuses_the_default_secret_when_webhooks_are_configured(
        tmp_path: Path) -> None:
    env = {**os.environ, "LAER_PLAYBOOK_WEBHOOK_URL": "http://127.0.0.1:9/hooks",
           "LAER_WEBHOOK_SECRET": "change-me", "LAER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
           "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    env.pop("LAER_DEMO", None)
    done = subprocess.run([sys.executable, "-m", "laer.cli", "serve"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "LAER_WEBHOOK_SECRET" in done.stderr


def test_a_sent_webhook_row_keeps_its_id_for_every_retry(unique: str, harness: HarnessFactory,
                                                        hooks: Hooks) -> None:
    hooks.script = [(503, {}), (503, {})]
    acc = f"same-id-{unique}"
    h = harness(LAER_PLAYBOOK_WEBHOOK_URL=hooks.url, LAER_PLAYBOOK_DAY_SECONDS="86400",
                LAER_PLAYBOOK_DELIVERY_BACKOFF_S="1")
    h.feed([*landing(acc, [contact(acc, channels=["webhook"])]), _failed_payment(acc, 8)])
    report = h.run("churn_rescue", horizon_s=5)
    (action,) = [a for a in report.actions if a.kind == "webhook"]
    assert (action.status, action.attempts) == ("sent", 3)
    ids = {headers["webhook-id"] for headers, _ in hooks.received}
    stamps = [headers["webhook-timestamp"] for headers, _ in hooks.received]
    assert ids == {action.payload["content"]["id"]} and len(stamps) == 3
    assert isinstance(action, ActionRow)
    assert hooks.accepted_ids() == {action.payload["content"]["id"]: 1}
