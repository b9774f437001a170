"""`laer actions list` and `laer actions retry`: messages that failed, and sending them again.

A message whose delivery failed for good (a permanent refusal, or every retry used) is
`failed` with its last error. Once the cause is fixed (the relay, the receiver, a setting),
`laer actions retry --id N` or `--failed` sets it `retrying` with a fresh count and creates
its retry run; the reconciler creates any that could not be created now.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

actions_app = typer.Typer(help="Playbook messages: list them, retry failed ones.",
                          no_args_is_help=True)


@actions_app.command("list")
def actions_list(
    status: Annotated[str | None, typer.Option(
        help="Only this status (sent, retrying, failed, deferred, suppressed, pending).")]
    = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
    = False,
) -> None:
    """Show messages with their status, attempts, next attempt and last error."""
    from flows.kit.retries import messages
    from laer.bootstrap import container

    rows = [{"id": r.id, "account_id": r.account_id, "playbook": r.playbook, "kind": r.kind,
             "recipient": r.recipient, "subject": r.subject, "status": r.status,
             "attempts": r.attempts, "next_attempt_at": r.next_attempt_at,
             "last_error": r.last_error}
            for r in messages(container().sessions, status, limit)]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "account", "playbook", "kind", "status", "attempts", "next attempt",
                  "last error", title=f"{len(rows)} messages")
    for r in rows:
        nxt = r["next_attempt_at"]
        table.add_row(str(r["id"]), str(r["account_id"]), str(r["playbook"]), str(r["kind"]),
                      str(r["status"]), str(r["attempts"]),
                      nxt.isoformat(timespec="seconds") if isinstance(nxt, datetime) else "",
                      str(r["last_error"] or "")[:60])
    Console().print(table)


@actions_app.command("retry")
def actions_retry(
    ids: Annotated[list[int] | None, typer.Option(
        "--id", help="A failed message to send again (repeatable).")] = None,
    every_failed: Annotated[bool, typer.Option(
        "--failed", help="Every failed message.")] = False,
) -> None:
    """Re-queue failed messages: retrying now, with a fresh count of attempts."""
    from rich.console import Console

    from flows.kit.reconcile import ensure_retry_runs
    from flows.kit.retries import requeue
    from laer.bootstrap import container

    err = Console(stderr=True)
    if bool(ids) == every_failed:
        err.print("[red]give --id N (repeatable) or --failed[/red]")
        raise typer.Exit(2)
    c = container()
    c.migrate()
    targets = requeue(c.sessions, datetime.now(UTC), None if every_failed else ids)
    if not targets:
        err.print("[yellow]no failed message matched[/yellow]")
        raise typer.Exit(1)
    try:
        made = ensure_retry_runs(targets)
    except Exception as exc:  # Prefect unreachable: the reconciler creates them later
        err.print(f"[yellow]re-queued; retry runs not created now ({exc}); the reconciler "
                  "will create them[/yellow]")
        return
    Console().print(f"re-queued {len(targets)} step(s); retry runs: {len(made)} created")
