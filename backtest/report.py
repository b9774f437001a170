"""The backtest report: one HTML file for people, charts inlined, opens offline.

The figures come from `backtest.report_data`; this module only draws them. matplotlib is
imported inside the drawing functions (the `laer` CLI must start without it) and draws on
its Agg canvas straight to PNG, with no pyplot state shared between reports.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from backtest.report_data import (
    DECISIONS,
    AccountDiff,
    ContactLoad,
    ReportData,
    WeekSeries,
    differing_accounts,
    load_report,
    recorded_gate,
)

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from numpy.typing import NDArray

DEFAULT_TITLE = "LAER backtest report"
MAX_DIFFS = 200  # accounts listed in the comparison; the rest are counted
MAX_CHANGES = 6  # differing actions shown per account
MAX_OVER_CAP = 30  # contact-weeks above the cap listed

STAGE_COLOURS = {"land": "#4e79a7", "adopt": "#59a14f", "expand": "#b07aa1",
                 "renew": "#f28e2b", "churned": "#9c9c9c"}
DECISION_COLOURS = {"sent": "#59a14f", "suppressed": "#e15759", "deferred": "#edc948"}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#17becf", "#bcbd22", "#8c564b")

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1180px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 16px 0 6px; }
p.lead, p.note { color: #555; margin: 4px 0 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e6e6; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; } td.id { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.pair { display: flex; gap: 24px; flex-wrap: wrap; } .pair > div { flex: 1 1 540px; }
.chart img { max-width: 100%; height: auto; border: 1px solid #eee; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
ul.changes { margin: 0; padding-left: 18px; } .muted { color: #777; }
"""


def _e(value: object) -> str:
    """Text made safe for HTML."""
    return html.escape(str(value))


def source_label(database_url: str) -> str:
    """The database as shown to readers: a SQLite file's name, or the URL without password."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "memory").name
    return url.render_as_string(hide_password=True)


# --- charts ------------------------------------------------------------------------------


def _png(draw: Callable[[Axes, ReportData], None], runs: Sequence[ReportData],
         ylabel: str, height: float = 4.2) -> str:
    """One chart per run, side by side on a shared y axis, as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display here; and headless CI has none either
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, run in zip(axes, runs, strict=True):
        draw(ax, run)
        if len(runs) > 1:
            ax.set_title(run.label, fontsize=11)
        ax.grid(axis="y", color="#e6e6e6")
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_ylabel(ylabel, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _x(weeks: Sequence[date]) -> NDArray[np.datetime64]:
    """Week Mondays as numpy dates, which matplotlib draws on a date axis."""
    import numpy as np  # matplotlib's own dependency, as lazy as it

    return np.array(weeks, dtype="datetime64[D]")


def _date_axis(ax: Axes) -> None:
    """Month ticks on x, whole numbers on y."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no half messages
    locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]  # no stubs
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _empty(ax: Axes, series: WeekSeries) -> bool:
    """Say so on the chart when a series has nothing to draw."""
    if series.weeks and any(any(v) for v in series.series.values()):
        return False
    ax.text(0.5, 0.5, "nothing in this run", ha="center", va="center", transform=ax.transAxes,
            color="#777")
    return True


def _colours(names: Sequence[str], fixed: dict[str, str]) -> list[str]:
    """Fixed colours where known, then the palette in turn."""
    spare = iter(PALETTE * 4)
    return [fixed.get(n) or next(spare) for n in names]


def draw_funnel(ax: Axes, run: ReportData) -> None:
    """Accounts per stage at each week's end, stacked."""
    s = run.funnel
    if _empty(ax, s):
        return
    names = list(s.series)
    ax.stackplot(_x(s.weeks), [s.series[n] for n in names], labels=names,
                 colors=_colours(names, STAGE_COLOURS), alpha=0.9)
    _legend(ax)
    _date_axis(ax)


def _legend(ax: Axes) -> None:
    """The legend under the plot, in columns."""
    # below the plot: inside it, a legend of a dozen kinds would hide the bars
    side_by_side = len(ax.get_figure(root=True).axes) > 1  # type: ignore[union-attr]
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7 if side_by_side else 8,
              frameon=False, ncol=3 if side_by_side else 6)


def _stacked_bars(ax: Axes, s: WeekSeries, fixed: dict[str, str]) -> None:
    """One stacked bar per week, a layer per series that has any count."""
    if _empty(ax, s):
        return
    x, bottom = _x(s.weeks), [0] * len(s.weeks)
    names = [n for n in s.series if s.total(n) > 0]
    for name, colour in zip(names, _colours(names, fixed), strict=True):
        ax.bar(x, s.series[name], width=5.5, bottom=bottom, label=name, color=colour)
        bottom = [b + v for b, v in zip(bottom, s.series[name], strict=True)]
    _legend(ax)
    _date_axis(ax)


def draw_signals(ax: Axes, run: ReportData) -> None:
    """Signals per kind per week, stacked bars."""
    _stacked_bars(ax, run.signals, {})


def draw_decisions(ax: Axes, run: ReportData) -> None:
    """Messages per gate decision per week, stacked bars."""
    _stacked_bars(ax, run.decisions, DECISION_COLOURS)


def draw_contact_load(ax: Axes, run: ReportData) -> None:
    """The busiest contact's and the average contact's messages per week, and the cap."""
    c = run.contacts
    if not c.weeks:
        ax.text(0.5, 0.5, "nothing in this run", ha="center", va="center",
                transform=ax.transAxes, color="#777")
        return
    x = _x(c.weeks)
    ax.bar(x, c.peak, width=5.5, color="#4e79a7", label="busiest contact")
    mean = [float("nan") if m is None else m for m in c.mean]  # a gap where nobody was
    ax.plot(x, mean, color="#f28e2b", marker=".", label="average messaged contact")
    ax.axhline(c.cap, color="#e15759", linestyle="--", linewidth=1.5,
               label=f"frequency cap ({c.cap} per {c.window_days:g} days)")
    ax.set_ylim(0, max([c.cap, *c.peak]) + 1)
    _legend(ax)
    _date_axis(ax)


# --- tables ------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int]) -> str:
    """An HTML table; the columns in `numeric` right-aligned, integers with separators."""
    if not rows:
        return '<p class="muted">None.</p>'

    def cell(tag: str, i: int, value: object) -> str:
        """One escaped cell."""
        cls = ' class="n"' if i in numeric else ""
        text = f"{value:,}" if isinstance(value, int) else str(value)
        return f"<{tag}{cls}>{_e(text)}</{tag}>"

    top = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def playbooks_table(run: ReportData) -> str:
    """Runs, steps, messages and tasks per playbook."""
    others = sorted({s for p in run.playbooks for s in p.messages if s not in DECISIONS})
    head = ["Playbook", "Runs started", "Coalesced", "Steps executed", "Steps failed",
            "Steps open", "Sent", "Suppressed", "Deferred", *[o.capitalize() for o in others],
            "Tasks"]
    rows = [[p.playbook, p.runs_started, p.runs_coalesced, p.steps_executed, p.steps_failed,
             p.steps_open, *[p.messages.get(s, 0) for s in (*DECISIONS, *others)], p.tasks]
            for p in run.playbooks]
    return _table(head, rows, set(range(1, len(head))))


def reasons_table(run: ReportData) -> str:
    """Suppressed and deferred messages by playbook and reason."""
    return _table(["Playbook", "Decision", "Reason", "Messages"],
                  [[r.playbook, r.decision, r.reason, r.count] for r in run.reasons], {3})


def tasks_table(run: ReportData) -> str:
    """Tasks by playbook, role and owner."""
    return _table(["Playbook", "Role", "Owner", "Tasks"],
                  [[t.playbook, t.role, t.owner, t.count] for t in run.tasks], {3})


def contact_tables(c: ContactLoad) -> str:
    """How many contact-weeks got how many messages, and those above the cap."""
    dist = _table(["Messages in the week", "Contact-weeks"],
                  [[n, k] for n, k in c.distribution.items()], {0, 1})
    over = _table(["Contact", "Week of", "Messages sent"],
                  [[o.contact, o.week.isoformat(), o.messages] for o in c.over_cap[:MAX_OVER_CAP]],
                  {2})
    more = (f'<p class="note">and {len(c.over_cap) - MAX_OVER_CAP:,} more.</p>'
            if len(c.over_cap) > MAX_OVER_CAP else "")
    return (f"<h3>Distribution</h3>{dist}<h3>Contact-weeks above the cap of {c.cap}</h3>"
            f"{over}{more}")


def diffs_table(diffs: Sequence[AccountDiff]) -> str:
    """Accounts whose actions differ, with what changed."""
    if not diffs:
        return '<p class="muted">No account\'s actions differ.</p>'

    def counts(c: dict[str, int]) -> str:
        """Status counts as `sent 3, ...`."""
        return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())) or "none"

    rows = []
    for d in diffs[:MAX_DIFFS]:
        items = "".join(f"<li>{_e(c)}</li>" for c in d.changes[:MAX_CHANGES])
        if len(d.changes) > MAX_CHANGES:
            items += f'<li class="muted">{len(d.changes) - MAX_CHANGES:,} more</li>'
        rows.append(f"<tr><td class=\"id\">{_e(d.account_id)}</td><td>{_e(counts(d.baseline))}</td>"
                    f"<td>{_e(counts(d.variant))}</td><td class=\"n\">{len(d.changes):,}</td>"
                    f"<td><ul class=\"changes\">{items}</ul></td></tr>")
    more = (f'<p class="note">and {len(diffs) - MAX_DIFFS:,} more accounts.</p>'
            if len(diffs) > MAX_DIFFS else "")
    return ("<table><thead><tr><th>Account</th><th>Baseline actions</th><th>Variant actions"
            "</th><th class=\"n\">Differing</th><th>What changed (baseline -&gt; variant)</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}")


# --- the page ----------------------------------------------------------------------------


def _side_by_side(runs: Sequence[ReportData], part: Callable[[int, ReportData], str]) -> str:
    """One part, or the baseline's and the variant's next to each other."""
    if len(runs) == 1:
        return part(0, runs[0])
    return '<div class="pair">' + "".join(
        f"<div><h3>{_e(r.label)}</h3>{part(i, r)}</div>" for i, r in enumerate(runs)) + "</div>"


def _each(part: Callable[[ReportData], str]) -> Callable[[int, ReportData], str]:
    """A part that does not need the run's position."""
    return lambda _, run: part(run)


def _img(b64: str, alt: str) -> str:
    """A chart inlined as a data: URL (the page opens offline)."""
    return f'<div class="chart"><img alt="{_e(alt)}" src="data:image/png;base64,{b64}"></div>'


def _facts(run: ReportData, source: str) -> str:
    """The run's headline numbers."""
    span = (f"{run.first:%Y-%m-%d} to {run.last:%Y-%m-%d}" if run.first and run.last
            else "empty")
    sent = sum(p.messages.get("sent", 0) for p in run.playbooks)
    items = [("Database", source), ("Event time", span), ("Weeks", f"{len(run.funnel.weeks):,}"),
             ("Accounts", f"{run.accounts:,}"), ("Events applied", f"{run.events:,}"),
             ("Signals", f"{sum(run.signals.total(k) for k in run.signals.series):,}"),
             ("Runs started", f"{sum(p.runs_started for p in run.playbooks):,}"),
             ("Messages sent", f"{sent:,}"),
             ("Tasks opened", f"{sum(p.tasks for p in run.playbooks):,}")]
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="facts">{body}</dl>'


def build_html(runs: Sequence[ReportData], sources: Sequence[str], title: str,
               diffs: Sequence[AccountDiff] | None = None) -> str:
    """The whole page for one run, or for a baseline and a variant side by side."""
    cap = runs[0].contacts
    parts = [
        f"<h1>{_e(title)}</h1>",
        '<p class="lead">What the playbooks would have done over these events, replayed on '
        "a simulated clock. Weeks start on Monday (UTC) and count by event time.</p>",
        "<h2>Overview</h2>",
        _side_by_side(runs, lambda i, r: _facts(r, sources[i])),
        "<h2>Stage funnel</h2>",
        '<p class="note">Accounts in each lifecycle stage at the end of each week, from the '
        "stage history.</p>",
        _img(_png(draw_funnel, runs, "accounts"), "accounts per stage per week"),
        "<h2>Signals</h2>",
        '<p class="note">Signals raised per kind per week (retracted ones left out): what '
        "the rules saw and what may start a playbook.</p>",
        _img(_png(draw_signals, runs, "signals"), "signals per kind per week"),
        "<h2>Playbooks</h2>",
        '<p class="note">Runs started (a signal for an account with an open run of the same '
        "playbook is coalesced into it), steps executed, messages by the outreach gate's "
        "decision and tasks opened.</p>",
        _side_by_side(runs, _each(playbooks_table)),
        "<h2>Gate decisions</h2>",
        '<p class="note">Every message asked the outreach gate: sent, suppressed (opted out, '
        "churn risk open for a promotion, no allowed channel, frequency cap) or deferred "
        "(quiet hours).</p>",
        _img(_png(draw_decisions, runs, "messages"), "messages per decision per week"),
        "<h3>Suppressed and deferred, by reason</h3>",
        _side_by_side(runs, _each(reasons_table)),
        "<h2>Tasks</h2>",
        '<p class="note">Tasks the playbooks opened for people, by role and owner.</p>',
        _side_by_side(runs, _each(tasks_table)),
        "<h2>Messages per contact per week</h2>",
        f'<p class="note">Bars: the most messages any one contact was sent that week; line: '
        f"the average over contacts messaged that week; dashed: the frequency cap "
        f"({cap.cap} per {cap.window_days:g} days). The cap counts only messages of the same "
        "or a higher priority, so a renewal message may still follow two upsell messages: a "
        "week above the cap is allowed, and listed below.</p>",
        _img(_png(draw_contact_load, runs, "messages to one contact"),
             "messages per contact per week against the cap"),
        _side_by_side(runs, _each(lambda r: contact_tables(r.contacts))),
    ]
    if diffs is not None:
        parts += ["<h2>Accounts whose actions differ</h2>",
                  f'<p class="note">{len(diffs):,} accounts got different actions (another '
                  "message, none, or another gate decision or reason) in the variant.</p>",
                  diffs_table(diffs)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{_e(title)}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def render_report(database_url: str, out_dir: Path, *, compare_url: str | None = None,
                  title: str = DEFAULT_TITLE, summary: Mapping[str, Any] | None = None) -> Path:
    """Write `out_dir/report.html` for a backtest database (and a variant's) and return it.

    The cap drawn is the one each run used, from `summary` (the run's summary.json, read from
    `out_dir` when not given; its `compare` part is the variant's).
    """
    if summary is None:
        path = out_dir / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    runs = [load_report(database_url, label="baseline" if compare_url else "this run",
                        policy=recorded_gate(summary))]
    sources = [source_label(database_url)]
    diffs = None
    if compare_url is not None:
        runs.append(load_report(compare_url, label="variant",
                                policy=recorded_gate(summary.get("compare") or {})))
        sources.append(source_label(compare_url))
        diffs = differing_accounts(database_url, compare_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(build_html(runs, sources, title, diffs), encoding="utf-8")
    return path
