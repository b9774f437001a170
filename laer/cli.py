"""`laer`: run the consumers, the dispatcher and the playbooks; inspect accounts."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from laer.bootstrap import container

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
kafka_app = typer.Typer(help="The local single-node Kafka broker (for tests and the demo).",
                        no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


# --- local services ---------------------------------------------------------------------


def _local_kafka() -> Any:
    from laer.local.kafka import LocalKafka

    settings = container().settings
    port = int(settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    return LocalKafka(settings.state_dir / "kafka", port=port)


@kafka_app.command("start")
def kafka_start() -> None:
    """Fetch the broker jars once, start the broker and create the LAER topics."""
    from laer.local.kafka import LocalServiceError

    k = container().settings.kafka
    broker = _local_kafka()
    try:
        broker.start(topics=[*k.source_topics, k.dlq_topic], partitions=k.partitions, echo=True)
    except LocalServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Kafka ready on {broker.bootstrap} (pid {broker.running_pid()})")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    _local_kafka().stop()
    console.print("Kafka stopped")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs."""
    pid = _local_kafka().running_pid()
    console.print(f"Kafka running (pid {pid})" if pid else "Kafka not running")
    raise typer.Exit(0 if pid else 1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest revision."""
    container().migrate()
    console.print("schema up to date")


# --- processes ----------------------------------------------------------------------------


@app.command()
def consume() -> None:
    """Ingest events from Kafka until Ctrl-C/SIGTERM (finishes the batch, commits, leaves)."""
    from consumers import metrics
    from consumers.dlq import kafka_dead_letter_sink
    from consumers.runner import ConsumerLoop

    c = container()
    sink: list[Any] = []
    loop = ConsumerLoop(c.settings.kafka, c.settings.consumer, c.sessions, c.policy,
                        lambda letters: sink[0](letters))
    loop.install_signal_handlers()  # before anything slow: SIGTERM during start-up exits 0
    c.migrate()
    if c.settings.consumer.metrics_port is not None:
        metrics.serve(c.settings.consumer.metrics_port)
    producer = c.producer()
    sink.append(kafka_dead_letter_sink(producer, c.settings.kafka.dlq_topic))
    try:
        loop.run()
    finally:
        producer.close()


@app.command()
def dispatch() -> None:
    """Start playbook runs for stored signals until Ctrl-C/SIGTERM."""
    from dispatch.dispatcher import Dispatcher
    from flows.kit.registry import discover

    c = container()
    c.migrate()
    dispatcher = Dispatcher(c.sessions, [d.playbook for d in discover()],
                            concurrency=c.settings.prefect.dispatch_concurrency)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await dispatcher.run_forever(c.settings.prefect.dispatch_interval_s, stop)

    asyncio.run(main())


@app.command()
def serve(limit: Annotated[int, typer.Option(help="Concurrent flow runs.")] = 8) -> None:
    """Serve every playbook's deployment from this process (small installs, tests, demo)."""
    from prefect import serve as prefect_serve

    from flows.kit.registry import discover
    from flows.kit.runtime import refuse_unsafe_start
    from laer.ops_flows import OPS_FLOWS

    refuse_unsafe_start()  # e.g. the default webhook secret outside the demo
    deployments = [
        d.flow.to_deployment(name="laer", tags=[f"playbook:{d.playbook.name}"],
                             description=d.playbook.description)
        for d in discover()
    ]
    deployments += [f.to_deployment(name="laer", cron=cron, tags=["ops"])
                    for f, cron in OPS_FLOWS]
    prefect_serve(*deployments, limit=limit, print_starting_message=True)


@app.command()
def up(
    accounts: Annotated[int, typer.Option(help="Accounts in the simulated cohort.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the cohort (same seed, same events).")] = 7,
    rate: Annotated[float, typer.Option(help="Events per second to publish; 0 = flat out.")]
    = 0.0,
    prefect_port: Annotated[int, typer.Option(help="Port of the local Prefect server/UI.")]
    = 4200,
    day_seconds: Annotated[float, typer.Option(help="Length of a playbook day in the demo.")]
    = 5.0,
    exit_after_summary: Annotated[bool, typer.Option(
        "--exit", help="Stop everything after the summary instead of serving.")] = False,
) -> None:
    """Run everything locally (Kafka, Prefect server + UI, consumer, dispatcher, playbooks),
    publish a simulated year of customers, print a summary and serve until Ctrl-C."""
    from laer.up import UpOptions, run_up

    code = run_up(container(), UpOptions(accounts=accounts, seed=seed, rate=rate,
                                         prefect_port=prefect_port, day_seconds=day_seconds,
                                         keep_running=not exit_after_summary), console)
    raise typer.Exit(code)


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(help="Accounts in the cohort.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed (same seed, same events).")] = 7,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = flat out.")] = 0.0,
    mode: Annotated[str, typer.Option(help="CloudEvents binding: structured or binary.")]
    = "structured",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print events as JSON lines.")]
    = False,
) -> None:
    """Publish a reproducible cohort (a year of events) to the configured broker."""
    from datetime import UTC, datetime

    from rich.progress import Progress

    from laer.publish import publish_paced
    from laer.simulate import CohortSpec, cohort

    if mode not in ("structured", "binary"):
        err.print("[red]--mode must be structured or binary[/red]")
        raise typer.Exit(2)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = cohort(CohortSpec(accounts=accounts, seed=seed, end=end))
    if dry_run:
        for e in events:
            sys.stdout.write(json.dumps(e) + "\n")
        return
    c = container()
    topics = {family: topic for topic, family in c.settings.kafka.source_topics.items()}
    producer = c.producer()
    with Progress(console=err) as bar:
        task = bar.add_task("publishing", total=len(events))
        sent = publish_paced(producer, events, topics, mode=mode,  # type: ignore[arg-type]
                             rate=rate, on_chunk=lambda n: bar.update(task, advance=n))
    producer.close()
    console.print(f"published {sent} events for {accounts} accounts (seed {seed})")


deployments_app = typer.Typer(help="Prefect deployment definitions.", no_args_is_help=True)
app.add_typer(deployments_app, name="deployments")


@deployments_app.command("render")
def deployments_render(
    out: Annotated[Path, typer.Option(help="Where to write the prefect.yaml.")]
    = Path("deployments/prefect.yaml"),
) -> None:
    """Write prefect.yaml (work-pool mode) for every playbook and scheduled flow."""
    from laer.deploy import render_prefect_yaml

    out.write_text(render_prefect_yaml())
    console.print(f"wrote {out}")


@app.command()
def sweep(at: Annotated[str | None, typer.Option(
        help="Instant to evaluate (RFC 3339); default now.")] = None,
          as_json: JsonFlag = False) -> None:
    """Apply the time-based rules (renewal window, lapsed terms, stalls) as of an instant."""
    from collections import Counter
    from datetime import UTC, datetime

    from laer_domain.service import LifecycleService

    instant = datetime.fromisoformat(at) if at else datetime.now(UTC)
    if instant.tzinfo is None:
        err.print("[red]--at needs a UTC offset, e.g. 2026-11-23T06:00:00Z[/red]")
        raise typer.Exit(2)
    c = container()
    c.migrate()
    with c.uow() as uow:
        outcomes = LifecycleService(uow.accounts, c.policy).sweep(instant)
        uow.commit()
    kinds = Counter(s.kind.value for o in outcomes for s in o.signals)
    if as_json:
        _print_json({"at": instant.isoformat(), "accounts": len(outcomes), "signals": kinds})
        return
    console.print(f"swept {len(outcomes)} accounts at {instant.isoformat()}: "
                  + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "no signals"))


dlq_app = typer.Typer(help="The dead-letter topic: list records, replay fixed ones.",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


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
    table = Table("dlq p/o", "at", "reason", "source", "key", "message",
                  title=f"{len(rows)} dead letters")
    for r in rows:
        table.add_row(f"{r['dlq_partition']}/{r['dlq_offset']}", r["at"], r["reason"],
                      f"{r['topic']}[{r['partition']}]@{r['offset']}", r["key"] or "",
                      r["message"][:80])
    console.print(table)


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
            err.print("[red]give --file, --select or --reason[/red]")
            raise typer.Exit(2)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    report = dlq_tools.replay(settings.kafka, settings.consumer, replays, force=force,
                              dry_run=dry_run)
    for origin, problem in report.refused:
        err.print(f"[yellow]refused {origin}: {problem}[/yellow]")
    console.print(f"{'would send' if dry_run else 'sent'} {len(report.sent)}, "
                  f"refused {len(report.refused)}")
    raise typer.Exit(1 if report.refused and not report.sent else 0)


# --- read side ------------------------------------------------------------------------------


@app.command()
def accounts(stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
             as_json: JsonFlag = False) -> None:
    """List accounts: id, stage, since, health, owner."""
    from persistence.queries import list_accounts

    with container().sessions() as session:
        rows = list_accounts(session, stage)
    if as_json:
        _print_json(rows)
        return
    table = Table("account", "stage", "since", "health", "owner", title=f"{len(rows)} accounts")
    for r in rows:
        h = r["health"]
        table.add_row(r["id"], r["stage"], r["stage_since"],
                      f"{h['score']} {h['band']}" if h["score"] is not None else "-", r["owner"])
    console.print(table)


@app.command()
def account(account_id: str, as_json: JsonFlag = False) -> None:
    """Show one account: stage history, health, term, goals, signals, runs, actions."""
    from persistence.queries import account_detail

    with container().sessions() as session:
        detail = account_detail(session, account_id)
    if detail is None:
        err.print(f"[red]no account {account_id!r}[/red]")
        raise typer.Exit(1)
    if as_json:
        _print_json(detail)
        return
    h = detail["health"]
    console.print(f"[bold]{detail['id']}[/bold]  stage [bold]{detail['stage']}[/bold] since "
                  f"{detail['stage_since']}  owner {detail['owner']}  health {h['score']} "
                  f"{h['band']}")
    for title, rows, cols in (
        ("stage history", detail["history"], ("at", "from", "to", "reason")),
        ("signals", detail["signals"], ("at", "kind", "stage")),
        ("playbook runs", detail["playbook_runs"], ("playbook", "name", "state")),
        ("actions", detail["actions"], ("kind", "subject", "recipient", "status", "reason")),
    ):
        table = Table(*cols, title=title)
        for r in rows:
            table.add_row(*[str(r.get(c) or "") for c in cols])
        console.print(table)


@app.command()
def tasks(status: Annotated[str | None, typer.Option(help="Only this status (e.g. open).")]
          = None, role: Annotated[str | None, typer.Option(help="Only this role.")] = None,
          as_json: JsonFlag = False) -> None:
    """List tasks that playbooks assigned to people (role, account, due date, status)."""
    from sqlalchemy import select

    from persistence.tables import ActionRow

    query = select(ActionRow).where(ActionRow.kind == "task").order_by(ActionRow.due_at)
    if status:
        query = query.where(ActionRow.status == status)
    if role:
        query = query.where(ActionRow.role == role)
    with container().sessions() as session:
        rows = [{"account": a.account_id, "playbook": a.playbook, "role": a.role,
                 "title": a.subject, "due_at": a.due_at.isoformat() if a.due_at else None,
                 "status": a.status} for a in session.scalars(query)]
    if as_json:
        _print_json(rows)
        return
    table = Table("due", "role", "account", "task", "playbook", "status",
                  title=f"{len(rows)} tasks")
    for r in rows:
        table.add_row(r["due_at"] or "-", r["role"] or "-", r["account"], r["title"],
                      r["playbook"], r["status"])
    console.print(table)


@app.command()
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
            _print_json(snap)
        else:
            console.print(render(snap))
        return
    previous = None
    with Live(console=console, refresh_per_second=4) as live:
        try:
            while True:
                snap = collect(c, previous)
                live.update(render(snap))
                previous = snap
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


@app.command()
def schema(out: Annotated[Path | None, typer.Option(help="Write one file per type here.")]
           = None) -> None:
    """Print (or write) the JSON Schema of every event type."""
    from laer_domain.events import event_json_schemas

    schemas = event_json_schemas()
    if out is None:
        _print_json(schemas)
        return
    out.mkdir(parents=True, exist_ok=True)
    for event_type, doc in schemas.items():
        (out / f"{event_type}.schema.json").write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"{len(schemas)} schemas written to {out}")


@app.command()
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
        _print_json(rows)
        return
    table = Table("playbook", "triggers", "owner", "priority", "module", title="playbooks")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["triggers"]), r["owner"], str(r["priority"]),
                      r["module"])
    console.print(table)


if __name__ == "__main__":
    app()
