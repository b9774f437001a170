"""`laer up` twice with one seed, on fresh state: the same accounts by stage, signals by kind.

Both runs publish the cohort as a backlog at once, so the consumer reads its three topics in
whatever interleaving the fetches give; the outcome must be that of event-time order every
time, and so the same. The cohort ends at the UTC midnight of the run (`laer up`'s choice):
two runs compare only when they ran on the same UTC day.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from laer.simulate import CohortSpec, cohort
from persistence.db import make_engine
from persistence.tables import SignalRow
from persistence.uow import session_factory
from tests.conftest import free_port
from tests.consumers.event_time import in_event_time_order

ACCOUNTS = 36
SEED = 11


@dataclass(frozen=True)
class Outcome:
    """What one `laer up --exit` left behind, and the UTC day it ran on (None: it spanned two)."""

    day: str | None
    accounts: list[dict[str, Any]]
    signals_by_kind: dict[str, int]

    @property
    def stages(self) -> Counter[str]:
        return Counter(a["stage"] for a in self.accounts)


def laer_up(home: Path) -> Outcome:
    """Run `laer up --exit` on fresh state in `home`; read `laer accounts --json` and signals."""
    db_url = f"sqlite:///{home / 'laer.db'}"
    env = dict(os.environ, LAER_STATE_DIR=str(home / "state"), LAER_DATABASE_URL=db_url,
               LAER_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
               LAER_SMTP__PORT=str(free_port()), COLUMNS="160")
    env.pop("PREFECT_API_URL", None)
    home.mkdir(parents=True)
    day = datetime.now(UTC).date().isoformat()
    with (home / "up.log").open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "laer.cli", "up", "--accounts", str(ACCOUNTS), "--seed",
             str(SEED), "--prefect-port", str(free_port()), "--day-seconds", "2", "--exit"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=540)
    assert done.returncode == 0, (home / "up.log").read_text(errors="replace")[-3000:]
    same_day = datetime.now(UTC).date().isoformat() == day
    listed = subprocess.run([sys.executable, "-m", "laer.cli", "accounts", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            kinds = dict(s.execute(select(SignalRow.kind, func.count())
                                   .where(SignalRow.retracted_at.is_(None))
                                   .group_by(SignalRow.kind)).tuples().all())
    finally:
        engine.dispose()
    return Outcome(day if same_day else None, json.loads(listed.stdout), kinds)


def expected_for(day: str) -> tuple[Counter[str], dict[str, int]]:
    """Stages and signal kinds of the day's cohort handled in event-time order."""
    end = datetime.combine(date.fromisoformat(day), time(), UTC)
    repo = in_event_time_order(cohort(CohortSpec(accounts=ACCOUNTS, seed=SEED, end=end)))
    kinds = Counter(s.kind.value for s in {s.id: s for s in repo.signals}.values())
    return Counter(a.stage.value for a in repo.accounts.values()), dict(kinds)


def _comparable(runs: list[Outcome]) -> bool:
    """Whether the last two runs each ran within one UTC day, the same one."""
    return len(runs) >= 2 and runs[-1].day is not None and runs[-1].day == runs[-2].day


@pytest.mark.timeout(2400)
def test_laer_up_twice_with_one_seed_reports_the_same_outcome(tmp_path: Path) -> None:
    runs: list[Outcome] = []
    while not _comparable(runs) and len(runs) < 4:  # a UTC midnight costs one or two more
        runs.append(laer_up(tmp_path / f"run-{len(runs)}"))
    assert _comparable(runs), f"no two of {len(runs)} runs on one UTC day"
    first, second = runs[-2:]
    assert second.day is not None
    assert len(first.accounts) == ACCOUNTS
    assert second.stages == first.stages
    assert second.signals_by_kind == first.signals_by_kind
    assert second.accounts == first.accounts  # and account by account
    stages, kinds = expected_for(second.day)
    assert first.stages == stages, "not the stages of event-time order"
    assert first.signals_by_kind == kinds, "not the signals of event-time order"
