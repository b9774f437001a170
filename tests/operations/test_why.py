"""`laer why`: the stored chain from events to delivery, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from flows.kit.prefect_report import StepReport
from flows.kit.testing import PlaybookHarness
from laer import bootstrap
from laer.cli import app
from persistence.tables import ActionRow, PlaybookRunRow, PlaybookStepRow
from tests.conftest import free_port
from tests.playbooks.conftest import Mailbox, contact, landing

NOON = "2026-03-10T11:00:00+00:00"  # a fixed gate clock: every message in one cap window


class Reports:
    """Stands in for the Prefect reporter: keeps each step's markdown artifact."""

    def __init__(self) -> None:
        self.published: list[StepReport] = []

    def publish(self, report: StepReport) -> None:
        self.published.append(report)

    def close(self) -> None:
        pass


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server."""
    box = Mailbox("127.0.0.1", free_port())
    box.start()
    yield box
    box.stop()


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A webhook receiver answering 202."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()
    server.server_close()


@pytest.fixture
def onboarded(database_url: str, mailbox: Mailbox, hook_url: str, tmp_path: Path,
              unique: str, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]]]:
    """An account landed and onboarded: two messages sent, the third capped."""
    acc = f"why-{unique}"
    env = {"LAER_SMTP__HOST": mailbox.host, "LAER_SMTP__PORT": str(mailbox.port),
           "LAER_WEBHOOK_SECRET": "why-secret", "LAER_PLAYBOOK_WEBHOOK_URL": hook_url,
           "LAER_PLAYBOOK_DAY_SECONDS": "0.01", "LAER_PLAYBOOK_CLOCK": NOON,
           "LAER_STATE_DIR": str(tmp_path / "state")}
    reports = Reports()
    with PlaybookHarness(database_url, env=env) as h:
        h.reporter = reports  # type: ignore[assignment]
        monkeypatch.setattr(bootstrap, "_container", None)  # read the harness's environment
        events = landing(acc, [contact(acc, timezone="Europe/Berlin"),
                               contact(acc, role="admin", channels=["webhook"],
                                       timezone="Europe/Berlin")])
        h.feed(events)
        h.run("onboarding")
        yield h, reports, acc, events


def _why(*args: str) -> Any:
    done = CliRunner().invoke(app, ["why", *args, "--json"])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def _action(h: PlaybookHarness, recipient: str, status: str) -> list[ActionRow]:
    with h.sessions() as s:
        return list(s.scalars(select(ActionRow).where(
            ActionRow.recipient == recipient, ActionRow.status == status)
            .order_by(ActionRow.id)))


def test_why_a_sent_message_names_events_signal_run_step_and_delivery(
        onboarded: tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]],
        mailbox: Mailbox) -> None:
    h, _, acc, events = onboarded
    welcome = _action(h, f"buyer@{acc}.example", "sent")[0]
    chain = _why(str(welcome.id))

    signal = chain["signal"]
    assert (signal["kind"], signal["account_id"], signal["raised_by"]) == (
        "StageChanged", acc, "events")
    fed = {e["id"]: e for e in events}
    assert signal["events"] and all(e["stored"] for e in signal["events"])
    for e in signal["events"]:  # each event by id, with its type and time from the timeline
        assert e["type"] == fed[e["id"]]["type"]
    assert signal["rule"] and signal["details"]["to"] == "adopt"

    with h.sessions() as s:
        run = s.scalars(select(PlaybookRunRow).where(PlaybookRunRow.account_id == acc)).one()
        first = s.scalars(select(PlaybookStepRow).where(
            PlaybookStepRow.account_id == acc).order_by(PlaybookStepRow.id)).first()
    assert first is not None
    assert (chain["run"]["id"], chain["run"]["signal_id"]) == (run.id, signal["id"])
    (step,) = chain["steps"]
    assert (step["key"], step["attempt"], step["task_run_id"]) == (
        first.idempotency_key, 1, first.task_run_id)
    assert step["run_name"] == f"onboarding/{acc}/day-0"

    action = chain["action"]
    assert (action["status"], action["template"], action["step"]) == (
        "sent", "onboarding_welcome", "day-0")
    (decision,) = action["decisions"]
    assert decision["gate"]["decision"] == "send" and decision["gate"]["at"] == NOON
    delivery = action["delivery"]
    sent_ids = {str(m["Message-ID"]) for m in mailbox.messages}
    assert delivery["message_id"] in sent_ids
    assert [t["outcome"] for t in delivery["tries"]] == ["sent"]


def test_why_a_webhook_gives_its_http_status(
        onboarded: tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]]) -> None:
    h, _, acc, _ = onboarded
    hook = _action(h, f"admin@{acc}.example", "sent")[0]
    delivery = _why(str(hook.id))["action"]["delivery"]
    assert (delivery["channel"], delivery["last_code"]) == ("webhook", 202)
    assert delivery["message_id"] == hook.payload["content"]["id"]


def test_why_a_capped_message_names_the_actions_that_used_the_cap(
        onboarded: tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]]) -> None:
    h, _, acc, _ = onboarded
    buyer = f"buyer@{acc}.example"
    sent = [a.id for a in _action(h, buyer, "sent")]
    (capped,) = _action(h, buyer, "suppressed")
    chain = _why(str(capped.id))
    (decision,) = chain["action"]["decisions"]
    gate = decision["gate"]
    assert gate["decision"] == "suppress" and gate["reason"].startswith("frequency_cap")
    assert [u["action_id"] for u in gate["used_by"]] == sent == sorted(sent)
    assert all(u["why"] == f"laer why {u['action_id']}" for u in gate["used_by"])
    assert chain["steps"][0]["run_name"] == f"onboarding/{acc}/day-14"
    # the people's rendering says the same
    text = CliRunner().invoke(app, ["why", str(capped.id)])
    assert text.exit_code == 0, text.output
    assert "frequency_cap" in text.stdout and f"cap used by action {sent[0]}" in text.stdout


def test_why_a_signal_and_a_run_list_their_steps_and_actions(
        onboarded: tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]]) -> None:
    h, _, acc, _ = onboarded
    with h.sessions() as s:
        run = s.scalars(select(PlaybookRunRow).where(PlaybookRunRow.account_id == acc)).one()
        ids = sorted(s.scalars(select(ActionRow.id).where(ActionRow.account_id == acc)))
    by_signal = _why("--signal", run.signal_id)
    (listed,) = by_signal["runs"]
    assert sorted(a["id"] for a in listed["actions"]) == ids
    assert [s["run_name"].rsplit("/", 1)[1] for s in listed["steps"]] == [
        "day-0", "day-3", "day-14", "day-30"]
    by_run = _why("--run", str(run.id))
    assert by_run["signal"]["id"] == run.signal_id
    assert sorted(a["id"] for a in by_run["run"]["actions"]) == ids


def test_account_and_the_step_report_link_to_the_chain(
        onboarded: tuple[PlaybookHarness, Reports, str, list[dict[str, Any]]]) -> None:
    h, reports, acc, _ = onboarded
    detail = CliRunner().invoke(app, ["account", acc, "--json"])
    assert detail.exit_code == 0, detail.output
    actions = json.loads(detail.stdout)["actions"]
    assert actions and all(a["why"] == f"laer why {a['id']}" for a in actions)
    with h.sessions() as s:
        run = s.scalars(select(PlaybookRunRow).where(PlaybookRunRow.account_id == acc)).one()
        day0 = s.scalars(select(PlaybookStepRow).where(
            PlaybookStepRow.account_id == acc).order_by(PlaybookStepRow.id)).first()
    assert day0 is not None
    markdown = next(r.markdown for r in reports.published if r.task_run_id == day0.task_run_id)
    assert markdown is not None
    assert f"laer why --signal {run.signal_id}" in markdown
    assert f"task run `{day0.task_run_id}`" in markdown
    welcome = _action(h, f"buyer@{acc}.example", "sent")[0]
    assert f"| {welcome.id} | email |" in markdown


@pytest.mark.parametrize("args", [["424242"], ["--signal", "sig-nope"], ["--run", "424242"]])
def test_an_unknown_id_is_a_clear_error(args: list[str], database_url: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with PlaybookHarness(database_url, env={"LAER_STATE_DIR": str(tmp_path / "state")}):
        monkeypatch.setattr(bootstrap, "_container", None)
        done = CliRunner().invoke(app, ["why", *args, "--json"])
    assert done.exit_code == 1
    assert "no " in done.stderr and args[-1] in done.stderr
    assert done.stdout == ""
