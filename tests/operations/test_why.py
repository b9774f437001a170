"""`laer why`: the stored chain from events to delivery, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
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
from laer_domain.events import make_event
from persistence.tables import ActionRow, PlaybookRunRow, PlaybookStepRow, SignalRow
from tests.conftest import free_port
from tests.playbooks.conftest import T0, Mailbox, contact, landing

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


def _tree(*args: str) -> str:
    """The people's rendering, on a terminal wide enough not to wrap a line."""
    done = CliRunner().invoke(app, ["why", *args], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    return done.stdout


@pytest.fixture
def timed(database_url: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[PlaybookHarness, str, str, dict[str, Any]]]:
    """Two accounts live at T0 + 2 days: one swept 15 days on, one sent an event then."""
    swept, crossed = f"swept-{unique}", f"crossed-{unique}"
    with PlaybookHarness(database_url, env={"LAER_STATE_DIR": str(tmp_path / "state")}) as h:
        monkeypatch.setattr(bootstrap, "_container", None)
        h.feed([*landing(swept), *landing(crossed)])
        late = make_event("laer.usage.active_users", crossed, T0 + timedelta(days=17),
                          {"date": (T0 + timedelta(days=17)).date().isoformat(), "count": 3},
                          source="product")
        h.feed([late])
        h.sweep(T0 + timedelta(days=17, hours=6))
        yield h, swept, crossed, late


def _underused(h: PlaybookHarness, account: str) -> list[SignalRow]:
    with h.sessions() as s:
        return list(s.scalars(select(SignalRow).where(
            SignalRow.account_id == account, SignalRow.kind == "FeatureUnderused")
            .order_by(SignalRow.id)))


def test_why_a_time_rule_signal_names_the_sweep_that_raised_it(
        timed: tuple[PlaybookHarness, str, str, dict[str, Any]]) -> None:
    h, swept, _, _ = timed
    signals = _underused(h, swept)
    assert len(signals) == 2  # reports and integrations, both due at went live + 14 days
    chain = _why("--signal", signals[0].id)["signal"]
    assert (chain["raised_by"], chain["events"]) == ("time", [])
    assert chain["clock"] == {"by": "sweep", "at": "2026-01-22T15:00:00Z", "event": None}
    assert chain["at"] == "2026-01-21T09:00:00Z"  # due: went live (T0 + 2 days) + 14 days
    text = _tree("--signal", signals[0].id)
    assert "the sweep at 2026-01-22T15:00:00Z moved the clock past it" in text


def test_why_a_time_rule_signal_names_the_event_whose_time_crossed_it(
        timed: tuple[PlaybookHarness, str, str, dict[str, Any]]) -> None:
    h, _, crossed, late = timed
    signals = _underused(h, crossed)
    assert len(signals) == 2
    chain = _why("--signal", signals[0].id)["signal"]
    clock = chain["clock"]
    assert (clock["by"], clock["at"]) == ("event", late["time"])
    assert clock["event"] == {"id": late["id"], "stored": True, "type": late["type"],
                              "source": "product", "time": late["time"]}
    text = _tree("--signal", signals[0].id)
    assert f"event {late['id']} {late['type']}" in text
    assert "moved the clock past it" in text


def test_why_a_coalesced_signal_links_the_run_that_took_it_in(
        timed: tuple[PlaybookHarness, str, str, dict[str, Any]]) -> None:
    h, swept, _, _ = timed
    assert h.dispatch("adoption_nudge") == 2  # one run per account: the sibling coalesced
    with h.sessions() as s:
        runs = list(s.scalars(select(PlaybookRunRow).where(PlaybookRunRow.account_id == swept)
                              .order_by(PlaybookRunRow.id)))
    assert [r.state for r in runs] == ["Scheduled", "Coalesced"]
    open_run, joined = runs
    by_signal = _why("--signal", joined.signal_id)
    (listed,) = by_signal["runs"]
    assert listed["state"] == "Coalesced" and listed["steps"] == []
    into = listed["coalesced_into"]
    assert (into["id"], into["signal_id"], into["why"]) == (
        open_run.id, open_run.signal_id, f"laer why --run {open_run.id}")
    took = _why("--run", str(open_run.id))["run"]
    assert took["coalesced_into"] is None
    assert [(r["id"], r["signal_id"]) for r in took["coalesced"]] == [
        (joined.id, joined.signal_id)]
    text = _tree("--signal", joined.signal_id)
    assert f"coalesced into run #{open_run.id}" in text
    text = _tree("--run", str(open_run.id))
    assert f"took in signal {joined.signal_id}" in text
