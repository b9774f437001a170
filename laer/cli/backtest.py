"""`laer backtest`: replay events through the real rules and playbooks on a simulated clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laer.cli.output import JsonFlag, console, err, log_to_file, print_json

if TYPE_CHECKING:
    from backtest.stats import BacktestStats


def _instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        err().print(f"[red]{name} needs a UTC offset, e.g. 2026-01-01T00:00:00Z[/red]")
        raise typer.Exit(2)
    return at


def _events(from_simulation: bool, from_file: Path | None, from_topics: bool, accounts: int,
            seed: int, since: str | None, until: str | None) -> tuple[list[Any], str]:
    from backtest import inputs

    if from_simulation + (from_file is not None) + from_topics != 1:
        err().print("[red]give one input: --from-simulation, --from-file PATH or "
                    "--from-topics[/red]")
        raise typer.Exit(2)
    if from_file is not None:
        if not from_file.exists():
            err().print(f"[red]{from_file}: no such file[/red]")
            raise typer.Exit(2)
        return list(inputs.from_file(from_file)), str(from_file)
    if from_topics:
        from backtest.topics import read_topics
        from laer.bootstrap import container

        settings = container().settings
        begin, end = _instant(since, "--since"), _instant(until, "--until")
        events = list(read_topics(settings.kafka, settings.consumer, since=begin, until=end))
        return events, (f"topics {', '.join(sorted(settings.kafka.source_topics))} at "
                        f"{settings.kafka.bootstrap_servers} from {since or 'the start'} to "
                        f"{until or 'the end'}")
    return inputs.from_simulation(accounts=accounts, seed=seed), (
        f"simulation accounts={accounts} seed={seed}")


def _table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    run = summary["run"]
    out = console()
    out.print(f"replayed {run['handled']} events ({run['statuses']}) from "
              f"{run['first_event']} to {run['simulated_until']} in {run['elapsed_s']} s "
              f"({run['events_per_s']} events/s, CPU {run['cpu_s']} s)")
    table = Table(title="actions by playbook, kind and decision")
    for col in ("playbook", "kind", "status", "base"):
        table.add_column(col, justify="right" if col == "base" else "left")
    other = summary.get("compare", {}).get("by_playbook", {})
    if "compare" in summary:
        table.add_column("compare", justify="right")
    for key in sorted(set(summary["by_playbook"]) | set(other)):
        row = [*key.split(":"), str(summary["by_playbook"].get(key, 0))]
        if "compare" in summary:
            row.append(str(other.get(key, 0)))
        table.add_row(*row)
    out.print(table)
    held = summary["held_back"]
    out.print("held back: " + (", ".join(f"{k} {n}" for k, n in held.items()) or "nothing"))
    if "compare" in summary:
        out.print(f"accounts whose actions differ: "
                  f"{summary['compare']['diff']['accounts_differing']}")
    out.print(f"files in {Path(summary['database']).parent}: actions.jsonl, summary.json, "
              "backtest.db" + (", report.html" if summary.get("report") else ""))


def backtest(
    out: Annotated[Path, typer.Option(help="Folder for actions.jsonl, summary.json, the "
                                      "database and the report.")] = Path("backtest-out"),
    from_simulation: Annotated[bool, typer.Option(
        "--from-simulation", help="Replay `laer simulate`'s cohort.")] = False,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", help="Replay CloudEvents from a JSON Lines file (.gz too).")] = None,
    from_topics: Annotated[bool, typer.Option(
        "--from-topics", help="Replay the event topics (a group of its own; commits nothing).")]
    = False,
    since: Annotated[str | None, typer.Option(
        help="--from-topics: records written from this instant (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(
        help="--from-topics: records written up to this instant (RFC 3339).")] = None,
    accounts: Annotated[int, typer.Option(help="Accounts in the simulated cohort.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the simulated cohort.")] = 7,
    playbooks: Annotated[str | None, typer.Option(
        help="Comma-separated playbooks to run (default: all).")] = None,
    policy: Annotated[Path | None, typer.Option(
        help="Policy file (JSON or TOML): thresholds and playbook settings to replay with.")]
    = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE override, e.g. frequency_cap=3, renewal_window_days=120.")]
    = None,
    compare: Annotated[Path | None, typer.Option(
        help="A second policy file: replay with it too and diff the actions per account.")]
    = None,
    after_days: Annotated[float, typer.Option(
        min=0, help="Go on running due steps and daily sweeps this many days after the last "
        "event.")] = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Replay events through the real rules and playbooks on a simulated clock; nothing is
    sent (every message and task is recorded with the gate's decision)."""
    from backtest.overrides import BadOverride, Overrides, from_pairs
    from backtest.overrides import from_file as policy_file
    from laer.settings import load_policy

    events, source = _events(from_simulation, from_file, from_topics, accounts, seed,
                             since, until)
    try:
        overrides = (policy_file(policy) if policy else Overrides()).merged(
            from_pairs(set_ or []))
        other = policy_file(compare) if compare else None
        overrides.check()
        if other is not None:
            overrides.merged(other).check()
    except (BadOverride, OSError, ValueError) as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    log_to_file(out / "backtest.log")
    from backtest.run import FolderRun, run_folder

    run = FolderRun(events=events, out=out, overrides=overrides, compare=other,
                    playbooks=[p.strip() for p in playbooks.split(",") if p.strip()]
                    if playbooks else None, base_policy=load_policy(), source=source,
                    after_days=after_days)
    try:
        if as_json:
            summary = run_folder(run)
        else:
            summary = _with_progress(run, len(events))
    except KeyError as exc:
        err().print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        print_json(summary)
    else:
        _table(summary)


def _with_progress(run: Any, total: int) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from backtest.run import run_folder

    passes = 2 if run.compare is not None else 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s  sim {task.fields[now]}"))
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task("replaying", total=total * passes, rate="-", now="-")
        done_before = [0, 0]  # events of finished passes, last count seen

        def show(stats: BacktestStats) -> None:
            if stats.done < done_before[1]:  # a new pass began
                done_before[0] += done_before[1]
            done_before[1] = stats.done
            bar.update(task, completed=done_before[0] + stats.done,
                       rate=f"{stats.done / max(stats.elapsed_or_now(), 1e-9):,.0f}",
                       now=f"{stats.now:%Y-%m-%d}" if stats.now else "-")

        return run_folder(run, progress=show)
