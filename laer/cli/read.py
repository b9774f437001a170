"""The read side: `laer accounts`, `account`, `tasks`, `status`, `schema`, `playbooks`.

`accounts` and `account` are called once per account by scripts: they import SQLAlchemy and
the tables, and rich only for a table a person reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laer.bootstrap import container
from laer.cli.output import JsonFlag, console, err, print_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@contextmanager
def read_session() -> Iterator[Session]:
    """A session on the configured database; one without the schema yet is a clear error."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    c = container()
    try:
        with c.sessions() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            err().print(f"[red]no LAER tables in {c.safe_database_url}[/red]: run "
                        "`laer db upgrade` (or `laer up`) first")
        elif isinstance(exc, OperationalError):  # unreachable, refused, bad credentials
            reason = str(exc.orig).strip().splitlines()[-1] if exc.orig else type(exc).__name__
            err().print(f"[red]cannot read {c.safe_database_url}[/red]: {reason}")
        else:
            raise
        raise typer.Exit(1) from None


def accounts(stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
             as_json: JsonFlag = False) -> None:
    """List accounts: id, stage, since, health, owner."""
    from persistence.queries import list_accounts

    with read_session() as session:
        rows = list_accounts(session, stage)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("account", "stage", "since", "health", "owner", title=f"{len(rows)} accounts")
    for r in rows:
        h = r["health"]
        table.add_row(r["id"], r["stage"], r["stage_since"],
                      f"{h['score']} {h['band']}" if h["score"] is not None else "-", r["owner"])
    console().print(table)


def account(account_id: str, as_json: JsonFlag = False) -> None:
    """Show one account: stage history, health, term, goals, signals, runs, actions."""
    from persistence.queries import account_detail

    with read_session() as session:
        detail = account_detail(session, account_id)
    if detail is None:
        err().print(f"[red]no account {account_id!r}[/red]")
        raise typer.Exit(1)
    if as_json:
        print_json(detail)
        return
    from rich.table import Table

    h = detail["health"]
    console().print(f"[bold]{detail['id']}[/bold]  stage [bold]{detail['stage']}[/bold] since "
                    f"{detail['stage_since']}  owner {detail['owner']}  health {h['score']} "
                    f"{h['band']}")
    for title, rows, cols in (
        ("stage history", detail["history"], ("at", "from", "to", "reason")),
        ("signals", detail["signals"], ("at", "kind", "stage", "dispatch", "dispatch_error")),
        ("playbook runs", detail["playbook_runs"], ("id", "playbook", "name", "state")),
        ("playbook steps", detail["steps"], ("name", "status", "due_at", "attempts",
                                             "last_error")),
        # each action links to its chain: `laer why <id>`
        ("actions", detail["actions"], ("id", "kind", "subject", "recipient", "status", "reason",
                                        "why")),
    ):
        table = Table(*cols, title=title)
        for r in rows:
            table.add_row(*[str(r.get(c) or "") for c in cols])
        console().print(table)


def tasks(status: Annotated[str | None, typer.Option(help="Only this status (e.g. open).")]
          = None, role: Annotated[str | None, typer.Option(help="Only this role.")] = None,
          as_json: JsonFlag = False) -> None:
    """List tasks that playbooks assigned to people (role, account, due date, status)."""
    from persistence.queries import list_tasks

    with read_session() as session:
        rows = list_tasks(session, status, role)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("due", "role", "account", "task", "playbook", "status",
                  title=f"{len(rows)} tasks")
    for r in rows:
        table.add_row(r["due_at"] or "-", r["role"] or "-", r["account"], r["title"],
                      r["playbook"], r["status"])
    console().print(table)


def status(interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
           once: Annotated[bool, typer.Option("--once", help="Print once and exit.")] = False,
           as_json: JsonFlag = False) -> None:
    """Live overview: consumer lag, events per second, runs in flight, DLQ size."""
    import time

    from rich.live import Live

    from laer.status import collect, render

    c = container()
    if once or as_json:
        snap = collect(c, None)
        if as_json:
            print_json(snap)
        else:
            console().print(render(snap))
        return
    previous = None
    with Live(console=console(), refresh_per_second=4) as live:
        try:
            while True:
                snap = collect(c, previous)
                live.update(render(snap))
                previous = snap
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


def schema(out: Annotated[Path | None, typer.Option(help="Write one file per type here.")]
           = None) -> None:
    """Print (or write) the JSON Schema of every event type."""
    from laer_domain.events import event_json_schemas

    schemas = event_json_schemas()
    if out is None:
        print_json(schemas)
        return
    out.mkdir(parents=True, exist_ok=True)
    for event_type, doc in schemas.items():
        (out / f"{event_type}.schema.json").write_text(json.dumps(doc, indent=2) + "\n")
    console().print(f"{len(schemas)} schemas written to {out}")


def playbooks(as_json: JsonFlag = False) -> None:
    """List every playbook with its triggers, owner and priority."""
    from flows.kit.registry import discover

    found = discover()
    rows: list[dict[str, Any]] = [{"name": d.playbook.name, "deployment": d.playbook.deployment,
             "triggers": sorted(k.value for k in d.playbook.triggers),
             "stages": sorted(s.value for s in d.playbook.stages),
             "owner": d.playbook.owner.value, "priority": d.playbook.priority,
             "module": d.module, "description": d.playbook.description} for d in found]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("playbook", "triggers", "owner", "priority", "module", title="playbooks")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["triggers"]), r["owner"], str(r["priority"]),
                      r["module"])
    console().print(table)
