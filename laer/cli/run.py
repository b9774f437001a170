"""The processes and what they do: `laer consume`, `dispatch`, `serve`, `sweep`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from laer.bootstrap import container, prefect_api_configured
from laer.cli.output import JsonFlag, console, err, print_json

if TYPE_CHECKING:
    from consumers.dlq import DeadLetter, DeadLetterSink

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


def serve(
    threads: Annotated[int, typer.Option(
        min=1, envvar="LAER_SERVE_THREADS",
        help="Steps run at once in this process (they wait on SMTP, HTTP, the database).")] = 4,
    ops: Annotated[bool, typer.Option(
        help="Also serve the ops flows (daily sweep, health rollup, reconciler).")] = True,
    batch: Annotated[int, typer.Option(
        min=1, envvar="LAER_SERVE_BATCH",
        help="Steps leased at once; smaller shares a burst out among executors.")] = 50,
    lease_s: Annotated[float, typer.Option(
        min=1.0, help="Seconds a step is held; a step not finished by then (its executor "
        "died) is taken over by another.")] = 300.0,
    report_process: Annotated[bool, typer.Option(
        envvar="LAER_SERVE_REPORT_PROCESS",
        help="Report steps to Prefect from a child process (off: a thread of this one).")
    ] = True,
    register_retry_s: Annotated[float, typer.Option(
        min=0.01, envvar="LAER_SERVE_REGISTER_RETRY_S",
        help="First wait before registering the ops flows again when the Prefect API is busy "
        "(doubles up to 30 s; gives up after 10 min).")] = 1.0,
) -> None:
    """Execute due playbook steps, and serve the ops flows, until Ctrl-C/SIGTERM.

    Run more of these (here or on other machines, on the same database) to go faster:
    executors lease steps, so none runs twice.
    """
    import signal
    import threading

    from flows.kit.runtime import refuse_unsafe_start

    refuse_unsafe_start()  # e.g. the default webhook secret outside the demo
    c = container()
    c.migrate()
    executor = c.executor(threads=threads, batch=batch, lease_s=lease_s, report=False)
    if prefect_api_configured():
        from flows.kit.prefect_report import ProcessReporter, StepReporter

        executor.reporter = ProcessReporter() if report_process else StepReporter()
    stop = threading.Event()
    worker = threading.Thread(target=executor.run_forever, args=(stop,), name="laer-executor")
    worker.start()
    try:
        if ops:
            from flows.kit.registry import DEPLOYMENT_NAME
            from flows.kit.serve_ops import serve_ops
            from laer.ops_flows import OPS_FLOWS

            deployments: list[Any] = [f.to_deployment(name=DEPLOYMENT_NAME, cron=cron,
                                                      tags=["ops"]) for f, cron in OPS_FLOWS]
            serve_ops(deployments, retry_s=register_retry_s)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        stop.set()
        worker.join()
        if executor.reporter is not None:
            executor.reporter.close()


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
