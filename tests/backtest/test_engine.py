"""The simulator drives the real rules, dispatcher and playbooks over simulated time."""

from __future__ import annotations

import json
import random
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from backtest.engine import Backtest, BacktestOptions
from backtest.output import actions
from persistence.db import make_engine
from persistence.tables import PlaybookStepRow


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_year_of_a_cohort_gives_every_kind_of_action(
        replayed: tuple[Path, dict[str, Any]]) -> None:
    out, summary = replayed
    records = _lines(out / "actions.jsonl")
    assert {(r["kind"], r["status"]) for r in records} >= {("email", "sent"), ("task", "open")}
    playbooks = {r["playbook"] for r in records}
    assert playbooks >= {"onboarding", "renewal_outreach", "adoption_nudge"}, playbooks
    assert summary["run"]["statuses"]["applied"] > 400
    assert summary["run"]["steps"]["Completed"] > 50
    # every sent message is recorded, with its Message-ID, and never left the process
    sent = [r for r in records if r["status"] == "sent"]
    assert all(r["message_id"] and r["message_id"].startswith("msg_") for r in sent)
    # action times are simulated instants within the cohort's year, not the wall clock
    first, until = (datetime.fromisoformat(summary["run"][k])
                    for k in ("first_event", "simulated_until"))
    assert all(first <= datetime.fromisoformat(r["at"]) <= until for r in records)
    assert all(first <= datetime.fromisoformat(r["sent_at"]) <= until for r in sent)


def test_steps_are_queued_at_simulated_instants(replayed: tuple[Path, dict[str, Any]]) -> None:
    out, summary = replayed
    first, until = (datetime.fromisoformat(summary["run"][k]).replace(tzinfo=None)
                    for k in ("first_event", "simulated_until"))
    engine = make_engine(f"sqlite:///{out / 'backtest.db'}")
    with engine.connect() as conn:
        created = list(conn.execute(select(PlaybookStepRow.step, PlaybookStepRow.created_at,
                                           PlaybookStepRow.due_at)).tuples())
    engine.dispose()
    later = [c for c in created if c[0] != "start"]  # queued by an earlier step of the run
    assert later
    wall = [c for c in created if not first <= c[1].replace(tzinfo=None) <= until]
    assert not wall, wall[:3]
    assert all(c[1] <= c[2] for c in created)  # queued before it is due


def test_quiet_hours_hold_back_messages_until_morning_in_simulated_time(
        cohort: list[dict[str, Any]], replayed: tuple[Path, dict[str, Any]]) -> None:
    out, summary = replayed
    zones = {c["email"]: c["timezone"] for e in cohort
             if e["type"] == "laer.billing.subscription_started"
             for c in (e.get("data") or {}).get("contacts", [])}
    sent = [r for r in _lines(out / "actions.jsonl") if r["status"] == "sent"]
    local = [datetime.fromisoformat(r["sent_at"]).astimezone(ZoneInfo(zones[r["recipient"]]))
             for r in sent]
    assert local and all(time(8) <= t.time() < time(20) for t in local), local
    # a deferral waits for the next morning of the simulated clock, not of the wall clock
    until = datetime.fromisoformat(summary["run"]["simulated_until"])
    deferred = [r for r in _lines(out / "actions.jsonl") if r["status"] == "deferred"]
    assert all(datetime.fromisoformat(r["due_at"]) <= until + timedelta(days=1)
               for r in deferred), deferred
    # and some were deferred first: the step asked the gate again when the night ended
    engine = make_engine(f"sqlite:///{out / 'backtest.db'}")
    with engine.connect() as conn:
        keys = list(conn.scalars(select(PlaybookStepRow.idempotency_key)))
    engine.dispose()
    assert any("@" in k and ":retry@" not in k for k in keys)


def test_a_lower_frequency_cap_suppresses_messages(
        replayed: tuple[Path, dict[str, Any]]) -> None:
    out, summary = replayed
    base = _lines(out / "actions.jsonl")
    capped = _lines(out / "actions.compare.jsonl")
    assert not [r for r in base if r["status"] == "suppressed"]
    suppressed = [r for r in capped if r["status"] == "suppressed"]
    assert suppressed and all(r["reason"].startswith("frequency_cap") for r in suppressed), \
        {r["reason"] for r in suppressed}
    diff = summary["compare"]["diff"]
    assert diff["accounts_differing"] == len(diff["accounts"]) > 0
    one = next(iter(diff["accounts"].values()))
    assert any(a["status"] == "suppressed" for a in one["only_in_compare"])


def test_input_order_does_not_change_the_result(
        cohort: list[dict[str, Any]], replayed: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    out, _ = replayed
    shuffled = list(cohort)
    random.Random(3).shuffle(shuffled)
    bt = Backtest(f"sqlite:///{tmp_path / 'shuffled.db'}")
    try:
        bt.run(shuffled)
        again = actions(bt.engine)
    finally:
        bt.close()
    assert again == _lines(out / "actions.jsonl")


def test_an_unknown_playbook_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no playbook nope"):
        Backtest(f"sqlite:///{tmp_path / 'x.db'}", BacktestOptions(playbooks=["nope"]))
