"""`laer steps list` and `laer steps retry`: playbook steps in the queue, and failed ones again.

A step that kept raising is `failed` after its attempts, with its last error, and its run is
`Failed`. Once the cause is fixed, `laer steps retry --id N` or `--failed` queues it again,
due now, with a fresh count; an executor runs it on its next claim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from laer.cli.output import JsonFlag, console, err, print_json

steps_app = typer.Typer(help="Playbook steps: list them, re-queue failed ones.",
                        no_args_is_help=True)


@steps_app.command("list")
def steps_list(
    status: Annotated[str | None, typer.Option(
        help="Only this status (due, running, done, failed).")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, latest due first.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Show steps with their status, due time, attempts and last error."""
    from laer.bootstrap import container
    from persistence.steps import list_steps

    rows = [{"id": r.id, "name": r.run_name, "status": r.status, "due_at": r.due_at,
             "attempts": r.attempts, "done_at": r.done_at, "last_error": r.last_error,
             "task_run_id": r.task_run_id}
            for r in list_steps(container().sessions, status, account, limit)]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "step", "status", "due", "attempts", "last error",
                  title=f"{len(rows)} steps")
    for r in rows:
        due = r["due_at"]
        table.add_row(str(r["id"]), str(r["name"]), str(r["status"]),
                      due.isoformat(timespec="seconds") if isinstance(due, datetime) else "",
                      str(r["attempts"]), str(r["last_error"] or "")[:60])
    console().print(table)


@steps_app.command("retry")
def steps_retry(
    ids: Annotated[list[int] | None, typer.Option(
        "--id", help="A failed step to run again (repeatable).")] = None,
    every_failed: Annotated[bool, typer.Option("--failed", help="Every failed step.")] = False,
) -> None:
    """Queue failed steps again, due now, with a fresh count of attempts."""
    from laer.bootstrap import container
    from persistence.steps import requeue_failed

    if bool(ids) == every_failed:
        err().print("[red]give --id N (repeatable) or --failed[/red]")
        raise typer.Exit(2)
    c = container()
    c.migrate()
    n = requeue_failed(c.sessions, None if every_failed else ids)
    if not n:
        err().print("[yellow]no failed step matched[/yellow]")
        raise typer.Exit(1)
    console().print(f"queued {n} step(s) again; an executor (`laer serve`) runs them next")
