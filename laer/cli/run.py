"""The processes and what they do: `laer consume`, `dispatch`, `serve`, `sweep`, `deployments`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from laer.bootstrap import container
from laer.cli.output import JsonFlag, console, err, print_json

if TYPE_CHECKING:
    from consumers.dlq import DeadLetter, DeadLetterSink

deployments_app = typer.Typer(help="Prefect deployment definitions.", no_args_is_help=True)


class DeadLetterTopic:
    """The consumer's dead-letter sink, given its producer once start-up reaches that step.

    The consumer loop is built before anything slow, so that its signal handlers make a
    SIGTERM during start-up exit cleanly; the producer comes later.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._send: DeadLetterSink | None = None

    def open(self, producer: Any) -> None:
        """Send through `producer` from now on."""
        from consumers.dlq import kafka_dead_letter_sink

        self._send = kafka_dead_letter_sink(producer, self.topic)

    def __call__(self, letters: list[DeadLetter]) -> None:
        if self._send is None:
            raise RuntimeError("dead letters before the dead-letter producer was opened")
        self._send(letters)


def consume() -> None:
    """Ingest events from Kafka until Ctrl-C/SIGTERM (finishes the batch, commits, leaves)."""
    from consumers import metrics

    c = container()
    dead_letters = DeadLetterTopic(c.settings.kafka.dlq_topic)
    loop = c.consumer_loop(dead_letters)
    loop.install_signal_handlers()  # before anything slow: SIGTERM during start-up exits 0
    c.migrate()
    if c.settings.consumer.metrics_port is not None:
        metrics.serve(c.settings.consumer.metrics_port)
    producer = c.producer()
    dead_letters.open(producer)
    try:
        loop.run()
    finally:
        producer.close()


def dispatch() -> None:
    """Start playbook runs for stored signals until Ctrl-C/SIGTERM."""
    import asyncio
    import signal

    c = container()
    c.migrate()
    dispatcher = c.dispatcher()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await dispatcher.run_forever(stop)

    asyncio.run(main())


def serve(limit: Annotated[int, typer.Option(help="Concurrent flow runs.")] = 8) -> None:
    """Serve every playbook's deployment from this process (small installs, tests, demo)."""
    from prefect import serve as prefect_serve

    from flows.kit.registry import DEPLOYMENT_NAME, discover
    from flows.kit.runtime import refuse_unsafe_start
    from laer.ops_flows import OPS_FLOWS

    refuse_unsafe_start()  # e.g. the default webhook secret outside the demo
    deployments = [
        d.flow.to_deployment(name=DEPLOYMENT_NAME, tags=[f"playbook:{d.playbook.name}"],
                             description=d.playbook.description)
        for d in discover()
    ]
    deployments += [f.to_deployment(name=DEPLOYMENT_NAME, cron=cron, tags=["ops"])
                    for f, cron in OPS_FLOWS]
    prefect_serve(*deployments, limit=limit, print_starting_message=True)


def sweep(at: Annotated[str | None, typer.Option(
        help="Instant to evaluate (RFC 3339); default now.")] = None,
          as_json: JsonFlag = False) -> None:
    """Apply the time-based rules (renewal window, lapsed terms, stalls) as of an instant."""
    from datetime import UTC, datetime

    from persistence.sweep import sweep_in_chunks

    instant = datetime.fromisoformat(at) if at else datetime.now(UTC)
    if instant.tzinfo is None:
        err().print("[red]--at needs a UTC offset, e.g. 2026-11-23T06:00:00Z[/red]")
        raise typer.Exit(2)
    c = container()
    c.migrate()
    report = sweep_in_chunks(c.sessions, c.policy, instant,
                             chunk_size=c.settings.sweep_chunk_size)
    kinds = report.signals
    if as_json:
        print_json({"at": instant.isoformat(), "accounts": report.swept, "signals": kinds,
                    "chunks": report.chunks, "skipped": report.skipped})
        return
    console().print(f"swept {report.swept} accounts at {instant.isoformat()}: "
                    + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "no signals"))
    if report.skipped:
        err().print(f"[yellow]{len(report.skipped)} accounts were locked throughout and are "
                    "left to the next sweep[/yellow]")


@deployments_app.command("render")
def deployments_render(
    out: Annotated[Path, typer.Option(help="Where to write the prefect.yaml.")]
    = Path("deployments/prefect.yaml"),
) -> None:
    """Write prefect.yaml (work-pool mode) for every playbook and scheduled flow."""
    from laer.deploy import render_prefect_yaml

    out.write_text(render_prefect_yaml())
    console().print(f"wrote {out}")
