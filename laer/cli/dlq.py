"""`laer dlq list` and `laer dlq replay`: read the dead-letter topic, send fixed records back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from laer.bootstrap import container
from laer.cli.output import JsonFlag, console, err

dlq_app = typer.Typer(help="The dead-letter topic: list records, replay fixed ones.",
                      no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
             limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
             as_json: JsonFlag = False) -> None:
    """Show dead letters; --json prints one object per line (fix, then `laer dlq replay`)."""
    from consumers.dlq_tools import list_dead_letters

    rows = list_dead_letters(container().settings.kafka, reason=reason, limit=limit)
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    from rich.table import Table

    table = Table("dlq p/o", "at", "reason", "source", "key", "message",
                  title=f"{len(rows)} dead letters")
    for r in rows:
        table.add_row(f"{r['dlq_partition']}/{r['dlq_offset']}", r["at"], r["reason"],
                      f"{r['topic']}[{r['partition']}]@{r['offset']}", r["key"] or "",
                      r["message"][:80])
    console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    file: Annotated[Path | None, typer.Option(
        "--file", help="JSON Lines from `laer dlq list --json`, fixed.")] = None,
    select: Annotated[list[str] | None, typer.Option(
        "--select", help="DLQ PARTITION:OFFSET to resend as is (repeatable).")] = None,
    reason: Annotated[str | None, typer.Option(
        help="Resend every dead letter of this reason as is.")] = None,
    force: Annotated[bool, typer.Option(
        help="Send records that would fail validation again.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be sent.")]
    = False,
) -> None:
    """Send fixed dead letters back to their original topics (validated first)."""
    from consumers import dlq_tools

    settings = container().settings
    try:
        if file is not None:
            replays = dlq_tools.replays_from_file(file)
        elif select or reason:
            chosen = dlq_tools.parse_selection(select) if select else None
            replays = dlq_tools.replays_from_dlq(settings.kafka, chosen, reason)
        else:
            err().print("[red]give --file, --select or --reason[/red]")
            raise typer.Exit(2)
    except ValueError as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    report = dlq_tools.replay(settings.kafka, settings.consumer, replays, force=force,
                              dry_run=dry_run)
    for origin, problem in report.refused:
        err().print(f"[yellow]refused {origin}: {problem}[/yellow]")
    console().print(f"{'would send' if dry_run else 'sent'} {len(report.sent)}, "
                    f"refused {len(report.refused)}")
    raise typer.Exit(1 if report.refused and not report.sent else 0)
