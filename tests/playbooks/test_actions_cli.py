"""`laer actions list` and `laer actions retry` on a message whose retries were used up."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from laer import bootstrap
from laer.cli import app
from laer_domain.events import make_event
from tests.playbooks.conftest import T0, HarnessFactory, Mailbox, landing


def test_failed_messages_are_listed_and_retried(unique: str, harness: HarnessFactory,
                                                mailbox: Mailbox,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox.refuse = 100
    acc = f"cli-{unique}"
    h = harness(LAER_PLAYBOOK_DELIVERY_ATTEMPTS="2")
    monkeypatch.setattr(bootstrap, "_container", None)  # read the harness's environment
    h.feed([*landing(acc), make_event(
        "laer.usage.limit_reached", acc, T0 + timedelta(days=10),
        {"limit": "api_calls", "used": 1000, "allowed": 1000}, source="product")])
    h.run("upsell")
    runner = CliRunner()
    listed = runner.invoke(app, ["actions", "list", "--status", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["status"], row["attempts"], row["account_id"]) == ("failed", 2, acc)
    assert "451" in row["last_error"]

    assert runner.invoke(app, ["actions", "retry"]).exit_code == 2  # --id or --failed
    mailbox.refuse = 0
    done = runner.invoke(app, ["actions", "retry", "--id", str(row["id"])])
    assert done.exit_code == 0, done.output
    assert "re-queued 1" in done.stdout
    again = h.run("upsell")
    email = next(a for a in again.actions if a.kind == "email")
    assert (email.status, email.attempts) == ("sent", 1)
    assert list(mailbox.by_message_id().values()) == [1]
    assert runner.invoke(app, ["actions", "retry", "--failed"]).exit_code == 1  # none left
    table = runner.invoke(app, ["actions", "list"])
    assert table.exit_code == 0 and "sent" in table.stdout
