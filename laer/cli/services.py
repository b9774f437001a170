"""Local services and the demo: `laer kafka …`, `laer db upgrade`, `laer up`, `laer simulate`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from laer.bootstrap import container
from laer.cli.output import console, err

kafka_app = typer.Typer(help="The local single-node Kafka broker (for tests and the demo).",
                        no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@kafka_app.command("start")
def kafka_start() -> None:
    """Fetch the broker jars once, start the broker and create the LAER topics."""
    from laer.local.kafka import LocalServiceError

    c = container()
    k = c.settings.kafka
    broker = c.local_kafka()
    try:
        broker.start(topics=[*k.source_topics, k.dlq_topic], partitions=k.partitions, echo=True)
    except LocalServiceError as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console().print(f"Kafka ready on {broker.bootstrap} (pid {broker.running_pid()})")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    container().local_kafka().stop()
    console().print("Kafka stopped")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs."""
    pid = container().local_kafka().running_pid()
    console().print(f"Kafka running (pid {pid})" if pid else "Kafka not running")
    raise typer.Exit(0 if pid else 1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest revision."""
    container().migrate()
    console().print("schema up to date")


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
                                         keep_running=not exit_after_summary), console())
    raise typer.Exit(code)


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
        err().print("[red]--mode must be structured or binary[/red]")
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
    with Progress(console=err()) as bar:
        task = bar.add_task("publishing", total=len(events))
        sent = publish_paced(producer, events, topics, mode=mode,  # type: ignore[arg-type]
                             rate=rate, on_chunk=lambda n: bar.update(task, advance=n))
    producer.close()
    console().print(f"published {sent} events for {accounts} accounts (seed {seed})")
