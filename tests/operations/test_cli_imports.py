"""`laer` imports what a command uses: the read side starts without Prefect, Kafka or Alembic.

Counted in modules, not timed: a script calls `laer account ID --json` once per account, and
importing Prefect alone takes about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from persistence.db import make_engine, upgrade
from persistence.tables import AccountRow, SignalRow
from persistence.uow import session_factory

HEAVY = ("prefect", "kafka")


def loaded_packages(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages in `sys.modules` after running `code` in a fresh interpreter."""
    probe = (f"import sys, json\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.splitlines()[-1]))


def test_importing_the_cli_loads_neither_prefect_nor_kafka() -> None:
    loaded = loaded_packages("import laer.cli")
    assert not loaded & {*HEAVY, "alembic"}, sorted(loaded & {*HEAVY, "alembic"})


@pytest.mark.parametrize("args", [["accounts", "--json"], ["account", "acct-1", "--json"],
                                  ["why", "--signal", "sig-1", "--json"]])
def test_the_read_side_loads_only_what_it_shows(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'laer.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    with session_factory(engine)() as session:
        session.add(AccountRow(id="acct-1", stage="adopt", stage_since=now, owner="sales",
                               health_score=None, health_band=None, state={}, updated_at=now))
        session.flush()
        session.add(SignalRow(id="sig-1", seq=1, account_id="acct-1", kind="AdoptionStalled",
                              at=now, stage="adopt", evidence={"rule": "adoption_stalled"}))
        session.commit()
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
    env.update(LAER_DATABASE_URL=url, LAER_STATE_DIR=str(tmp_path / "state"))
    loaded = loaded_packages(f"from laer.cli import app; app({args!r})", env)
    assert "sqlalchemy" in loaded  # the command ran
    # rich draws tables for people; --json output does without it
    unwanted = loaded & {*HEAVY, "alembic", "rich"}
    assert not unwanted, sorted(unwanted)
