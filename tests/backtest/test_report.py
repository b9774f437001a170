"""The backtest report: its figures against the database, its page, and the page in Chromium."""

from __future__ import annotations

import base64
import dataclasses
import html
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from backtest.report import build_html, render_report
from backtest.report_data import differing_accounts, load_report
from laer.local.postgres import reset_postgres
from laer.simulate import CohortSpec
from laer_domain.outreach import OutreachPolicy
from persistence.db import make_engine
from tests.backtest.report_fixtures import backtest_db

SPEC = CohortSpec(accounts=12, seed=7, bad_share=0.01)
BASE = OutreachPolicy()  # the cap of 2 per 7 days
TIGHT = OutreachPolicy(frequency_cap=1)  # the variant: one message a week
SUMMARY = {"gate": {"frequency_cap": 2, "frequency_window_days": 7.0},  # as summary.json
           "compare": {"gate": {"frequency_cap": 1, "frequency_window_days": 7.0}}}
SECTIONS = ("Overview", "Stage funnel", "Signals", "Playbooks", "Gate decisions",
            "Suppressed and deferred, by reason", "Tasks", "Messages per contact per week")
CHARTS = 4  # funnel, signals, gate decisions, messages per contact


@dataclasses.dataclass(frozen=True)
class Runs:
    """A baseline and a variant database of the same cohort."""

    baseline: str
    variant: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The cohort played with a cap of 2 and with a cap of 1."""
    root = tmp_path_factory.mktemp("backtest")
    made = Runs(f"sqlite:///{root / 'baseline.db'}", f"sqlite:///{root / 'variant.db'}")
    backtest_db(made.baseline, SPEC, BASE)
    backtest_db(made.variant, SPEC, TIGHT)
    return made


@pytest.fixture(scope="module")
def compared(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The comparison page of the two runs."""
    out = tmp_path_factory.mktemp("compared")
    path = render_report(runs.baseline, out, compare_url=runs.variant, summary=SUMMARY,
                         title="Cap 2 vs cap 1")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def single(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline's page alone."""
    return render_report(runs.baseline, tmp_path_factory.mktemp("single") / "out",
                         summary={"gate": SUMMARY["gate"]})


def _rows(engine: Engine, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Rows of raw SQL, to check the figures against."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _monday_end(monday: date) -> str:
    """The week's end as SQLite stores instants."""
    # SQLite keeps UTC instants as naive 'YYYY-MM-DD HH:MM:SS.ffffff' text
    return f"{monday + timedelta(weeks=1)} 00:00:00.000000"


def test_figures_equal_counts_computed_from_the_database(runs: Runs) -> None:
    data = load_report(runs.baseline, policy=BASE)
    db = make_engine(runs.baseline)
    try:
        # every section has content: the fixture is a real cohort, not an empty shell
        assert data.accounts == SPEC.accounts and data.events > 500
        assert len(data.funnel.weeks) >= 52

        # the last week's funnel is where every account stands now
        now = dict(_rows(db, "select stage, count(*) from accounts group by stage"))
        assert {s: v[-1] for s, v in data.funnel.series.items() if v[-1]} == now
        # a week in the middle, by the latest stage change before that week ended
        mid = data.funnel.weeks[len(data.funnel.weeks) // 2]
        then = dict(_rows(db, """
            select c.to_stage, count(*) from stage_changes c where c.id = (
              select c2.id from stage_changes c2 where c2.account_id = c.account_id
              and c2.at < :end order by c2.at desc, c2.id desc limit 1)
            group by c.to_stage""", end=_monday_end(mid)))
        i = data.funnel.weeks.index(mid)
        assert {s: v[i] for s, v in data.funnel.series.items() if v[i]} == then
        assert len(then) >= 2

        # signals per kind and per week (Monday by SQLite's own date arithmetic)
        per_week = _rows(db, """select kind, date(at, '-6 days', 'weekday 1'), count(*)
                                from signals where retracted_at is null group by 1, 2""")
        assert len({k for k, _, _ in per_week}) >= 5
        for kind, monday, n in per_week:
            week = data.signals.weeks.index(date.fromisoformat(str(monday)))
            assert data.signals.series[str(kind)][week] == n
        assert sum(data.signals.total(k) for k in data.signals.series) == sum(
            int(str(n)) for _, _, n in per_week)

        # per playbook: runs, steps, messages by status, tasks
        started = dict(_rows(db, "select playbook, count(*) from playbook_runs "
                                 "where state != 'Coalesced' group by 1"))
        coalesced = dict(_rows(db, "select playbook, count(*) from playbook_runs "
                                   "where state = 'Coalesced' group by 1"))
        done = dict(_rows(db, "select playbook, count(*) from playbook_steps "
                              "where status = 'done' group by 1"))
        messages = {(p, s): n for p, s, n in _rows(
            db, "select playbook, status, count(*) from actions where kind != 'task' "
                "group by 1, 2")}
        tasks = dict(_rows(db, "select playbook, count(*) from actions where kind = 'task' "
                               "group by 1"))
        assert {p.playbook for p in data.playbooks} == set(started)
        for p in data.playbooks:
            assert p.runs_started == started[p.playbook]
            assert p.runs_coalesced == coalesced.get(p.playbook, 0)
            assert p.steps_executed == done[p.playbook]
            assert p.tasks == tasks.get(p.playbook, 0)
            assert {s: n for s, n in p.messages.items() if n} == {
                s: n for (pb, s), n in messages.items() if pb == p.playbook}
        assert sum(p.runs_coalesced for p in data.playbooks) > 0
        decided = Counter(s for (_, s), n in messages.items() for _ in range(int(str(n))))
        assert decided["sent"] and decided["suppressed"] and decided["deferred"]

        # reasons: each rule's count, from the reason text itself
        by_rule = dict(_rows(db, """
            select playbook || '|' || status || '|' ||
                   case when instr(reason, ':') > 0 then substr(reason, 1, instr(reason, ':') - 1)
                   else reason end, count(*)
            from actions where kind != 'task' and status in ('suppressed', 'deferred')
            group by 1"""))
        assert {f"{r.playbook}|{r.decision}|{r.reason}": r.count for r in data.reasons} == by_rule
        assert any(r.reason == "frequency_cap" for r in data.reasons)

        # tasks per role and owner
        roles = {(p, r, o): n for p, r, o, n in _rows(db, """
            select playbook, role, json_extract(payload, '$.owner'), count(*) from actions
            where kind = 'task' group by 1, 2, 3""")}
        assert {(t.playbook, t.role, t.owner): t.count for t in data.tasks} == roles

        # messages per contact per week, against the cap
        contact_weeks = _rows(db, """
            select recipient, date(created_at, '-6 days', 'weekday 1'), count(*) from actions
            where kind != 'task' and status = 'sent' group by 1, 2""")
        assert data.contacts.cap == 2
        assert data.contacts.distribution == dict(Counter(int(str(n))
                                                          for _, _, n in contact_weeks))
        peaks: dict[date, int] = {}
        for _, monday, n in contact_weeks:
            day = date.fromisoformat(str(monday))
            peaks[day] = max(peaks.get(day, 0), int(str(n)))
        assert {w: p for w, p in zip(data.contacts.weeks, data.contacts.peak,
                                     strict=True) if p} == peaks
        assert {(o.contact, o.week, o.messages) for o in data.contacts.over_cap} == {
            (c, date.fromisoformat(str(m)), n) for c, m, n in contact_weeks
            if int(str(n)) > 2}
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgresql_gives_the_figures_sqlite_gives(postgres_url: str, tmp_path: Path) -> None:
    spec = CohortSpec(accounts=4, seed=3, days=200)
    reset_postgres(postgres_url)
    lite = f"sqlite:///{tmp_path / 'b.db'}"
    for url in (postgres_url, lite):
        backtest_db(url, spec, BASE)
    on_pg, on_lite = load_report(postgres_url), load_report(lite)
    assert on_pg.signals.total("AccountLanded") == 4
    assert on_pg == on_lite


def test_the_page_has_every_section_its_charts_and_right_aligned_numbers(single: Path) -> None:
    page = single.read_text(encoding="utf-8")
    assert single.name == "report.html"
    for section in SECTIONS:
        assert f">{section}</h" in page, section
    images = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == CHARTS
    for image in images:
        png = base64.b64decode(image)
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "Accounts whose actions differ" not in page  # no comparison asked for
    assert re.search(r'<td class="n">\d[\d,]*</td>', page)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # opens offline


def test_text_from_the_database_is_escaped(runs: Runs) -> None:
    data = load_report(runs.baseline)
    first = data.playbooks[0]
    hostile = dataclasses.replace(first, playbook="<script>alert(1)</script>")
    page = build_html([dataclasses.replace(data, playbooks=[hostile])], ["x<y.db"], "A & B")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>A &amp; B</title>" in page and "x&lt;y.db" in page


def test_compare_lists_the_accounts_whose_actions_differ(runs: Runs, compared: str) -> None:
    db = [make_engine(u) for u in (runs.baseline, runs.variant)]
    try:
        sent = [dict(_rows(e, "select account_id, count(*) from actions "
                              "where status = 'sent' group by 1")) for e in db]
    finally:
        for e in db:
            e.dispose()
    fewer = sorted(a for a in sent[0] if sent[1].get(a, 0) < sent[0][a])
    assert fewer, "a cap of 1 must suppress some message a cap of 2 let through"
    diffs = {d.account_id: d for d in differing_accounts(runs.baseline, runs.variant)}
    for account in fewer:
        assert account in diffs
        assert any("sent -> suppressed (frequency_cap)" in c for c in diffs[account].changes)
    section = compared.split("Accounts whose actions differ</h2>", 1)[1]
    assert f'<td class="id">{fewer[0]}</td>' in section
    assert compared.count("<h3>baseline</h3>") >= 4 and compared.count("<h3>variant</h3>") >= 4
    assert len(re.findall(r"<img ", compared)) == CHARTS
    assert "Contact-weeks above the cap of 1" in compared  # the variant's own cap
    assert differing_accounts(runs.baseline, runs.baseline) == []


def test_rendering_does_not_load_matplotlib_until_it_draws() -> None:
    probe = ("import sys, backtest.report, backtest.report_data; "
             "print(bool({'matplotlib', 'numpy'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"


def chromium() -> str:
    """The Chromium binary (.ci/run installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed (apt-get install chromium)", pytrace=False)
    return path


def screenshot(page: Path, shot: Path, size: str = "1200,3000") -> None:
    """A headless Chromium screenshot of a local page, with networking off."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--window-size={size}", f"--screenshot={shot}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]


def test_chromium_shows_the_charts(single: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    screenshot(single, shot)
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1200, 3000)
        colours = Counter({c: n for n, c in rgb.getcolors(maxcolors=1 << 24) or []
                           if isinstance(c, tuple)})
    assert len(colours) > 500  # text alone is a few grey levels; charts bring colour
    white = colours[(255, 255, 255)] / (1200 * 3000)
    assert white < 0.9
    # the funnel's stage colours, as drawn, are on the page (alpha 0.9 over white)
    adopt = [round(0.9 * c + 0.1 * 255) for c in (0x59, 0xA1, 0x4F)]
    near = sum(n for c, n in colours.items()
               if all(abs(a - b) <= 3 for a, b in zip(c, adopt, strict=True)))
    assert near > 5_000, f"adopt green {adopt} barely drawn: {near} pixels"


def test_weeks_are_mondays_in_utc() -> None:
    from backtest.report_data import week_of, weeks_between

    sunday_late = datetime(2026, 3, 8, 23, 30, tzinfo=UTC)
    assert week_of(sunday_late) == date(2026, 3, 2)
    assert week_of(sunday_late + timedelta(hours=1)) == date(2026, 3, 9)
    assert weeks_between(date(2026, 3, 4), date(2026, 3, 16)) == [
        date(2026, 3, 2), date(2026, 3, 9), date(2026, 3, 16)]


def test_an_empty_backtest_still_makes_a_page(tmp_path: Path) -> None:
    from persistence.db import upgrade

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    page = render_report(url, tmp_path / "out", compare_url=url).read_text(encoding="utf-8")
    assert page.count("<img ") == CHARTS
    assert "No account's actions differ." in html.unescape(page)
