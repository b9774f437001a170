"""`laer up`: the whole system on one machine, fed by a simulated cohort, until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from laer.bootstrap import LOG_FORMAT, Container
from laer.local.kafka import LocalServiceError
from laer.local.prefect_server import LocalPrefectServer, prefect_env
from laer.local.processes import ManagedProcess
from laer.local.smtp import LocalSmtp
from laer.publish import publish_paced
from laer.simulate import CohortSpec, cohort
from laer.status import log_ends
from persistence.tables import (
    AccountRow,
    ActionRow,
    ConsumerOffsetRow,
    OutboxRow,
    PlaybookStepRow,
    SignalRow,
)


@dataclass
class UpOptions:
    accounts: int = 200
    seed: int = 7
    rate: float = 0.0  # events per second; 0 = as fast as the broker takes them
    prefect_port: int = 4200
    day_seconds: float = 5.0  # one playbook "day" lasts this long in the demo
    keep_running: bool = True
    wait_timeout_s: float = 600.0
    dispatch_wait_s: float = 240.0  # the summary does not wait for every playbook run
    steps_wait_s: float = 120.0  # ... nor for steps due later in the simulated year


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


class Up:
    """Starts every part, publishes the cohort, reports, serves, and stops all it started."""

    def __init__(self, c: Container, options: UpOptions, console: Console) -> None:
        self.c = c
        self.o = options
        self.console = console
        state = c.settings.state_dir.resolve()
        self.kafka = c.local_kafka()
        self.prefect = LocalPrefectServer(state / "prefect", port=options.prefect_port)
        self.processes: list[ManagedProcess] = []
        self.smtp = LocalSmtp(state / "mail" / "outbox.mbox", port=c.settings.smtp.port)
        self.log_dir = state / "logs"
        self._stop = False

    def _log_to_file(self) -> None:
        # The console is for the progress bars and the summary; library logs (HTTP requests,
        # the SMTP sink, Kafka) go to a file beside the children's logs.
        self.log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_dir / "up.log")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(logging.INFO)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._log_to_file()
        try:
            self._start_services()
            if self._stop:
                return 130
            self._publish()
            self._wait_until_settled()
            self.console.print(self.summary())
            self.console.print(
                f"\nPrefect UI: [bold]{self.prefect.ui_url}[/bold] (steps are task runs "
                f"named playbook/ACCOUNT/step)\nMailbox: [bold]{self.smtp.mbox_path}[/bold]"
                f"   logs: {self.log_dir}   database: {self.c.safe_database_url}\n"
                "Follow-ups of the simulated year keep running while this serves; "
                "`laer tasks`, `laer actions list` and `laer account ID` show them.")
            if self.o.keep_running and not self._stop:
                self.console.print("Serving until Ctrl-C ...")
                while not self._stop:
                    self._watch_children()
                    time.sleep(1)
            return 0
        except LocalServiceError as exc:
            self.console.print(f"[red]{exc}[/red]")
            return 1
        finally:
            self._shutdown()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop = True

    def _step(self, text: str, action: Callable[[], Any]) -> Any:
        with self.console.status(text):
            result = action()
        self.console.print(f"[green]✓[/green] {text.rstrip('.')}")
        return result

    def _start_services(self) -> None:
        k = self.c.settings.kafka
        self._step("Starting Kafka (fetching broker jars on first use) ...",
                   lambda: self.kafka.start(topics=[*k.source_topics, k.dlq_topic],
                                            partitions=k.partitions))
        self._step(f"Starting the Prefect server on port {self.o.prefect_port} ...",
                   self.prefect.start)
        self._step("Migrating the database ...", self.c.migrate)
        self._step(f"Starting a local SMTP sink on port {self.smtp.port} "
                   f"(mail kept in {self.smtp.mbox_path}) ...", self.smtp.start)
        env = prefect_env(self.prefect.home, api_url=self.prefect.api_url)
        env.setdefault("LAER_PLAYBOOK_DAY_SECONDS", str(self.o.day_seconds))
        env.setdefault("LAER_DEMO", "1")  # the demo may sign webhooks with the default secret
        env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
        for name in ("serve", "consume", "dispatch"):
            self.processes.append(ManagedProcess(name, [name], env, self.log_dir).start())
        self.console.print("[green]✓[/green] Started consumer, dispatcher and playbook server")

    def _publish(self) -> int:
        spec = CohortSpec(accounts=self.o.accounts, seed=self.o.seed,
                          end=datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                                        microsecond=0))
        events = cohort(spec)
        topics = {family: topic for topic, family in self.c.settings.kafka.source_topics.items()}
        producer = self.c.producer()
        with _progress(self.console) as bar:
            task = bar.add_task(f"Publishing {spec.accounts} accounts' year", total=len(events))
            sent = publish_paced(producer, events, topics, rate=self.o.rate,
                                 on_chunk=lambda n: bar.update(task, advance=n),
                                 stopped=lambda: self._stop)
        producer.close()
        return sent

    def _count(self, query: Any) -> int:
        with self.c.sessions() as s:
            return int(s.scalar(query) or 0)

    def _wait_until_settled(self) -> None:
        topics = list(self.c.settings.kafka.source_topics)
        group = self.c.settings.kafka.group_id
        consumed_q = select(func.coalesce(func.sum(ConsumerOffsetRow.next_offset), 0)).where(
            ConsumerOffsetRow.topic.in_(topics), ConsumerOffsetRow.group_id == group)
        already = self._count(consumed_q)
        # Offsets count every record ever written to the topics, earlier runs included.
        ends = sum(log_ends(self.c, topics).values())
        deadline = time.monotonic() + self.o.wait_timeout_s
        with _progress(self.console) as bar:
            ingest = bar.add_task("Ingesting", total=ends, completed=min(already, ends))
            while not self._stop and time.monotonic() < deadline:
                done = self._count(consumed_q)
                bar.update(ingest, completed=min(done, ends))
                self._watch_children()
                if done >= ends:
                    break
                time.sleep(0.5)
            pending_q = select(func.count()).select_from(OutboxRow).where(
                OutboxRow.status == "pending")
            total = self._count(select(func.count()).select_from(OutboxRow))
            dispatch = bar.add_task("Dispatching signals to playbooks", total=total)
            deadline = min(deadline, time.monotonic() + self.o.dispatch_wait_s)
            while not self._stop and time.monotonic() < deadline:
                pending = self._count(pending_q)
                bar.update(dispatch, completed=total - pending)
                self._watch_children()
                if pending == 0:
                    break
                time.sleep(0.5)
            self._wait_for_steps(bar)

    def _wait_for_steps(self, bar: Progress) -> None:
        """Until every step due by now has run (later ones run while `laer up` serves)."""
        started = datetime.now(UTC)
        due_q = select(func.count()).select_from(PlaybookStepRow).where(
            PlaybookStepRow.due_at <= started)
        left_q = due_q.where(PlaybookStepRow.status.in_(("due", "running")))
        task = bar.add_task("Executing playbook steps due now", total=self._count(due_q))
        deadline = time.monotonic() + self.o.steps_wait_s
        while not self._stop and time.monotonic() < deadline:
            left = self._count(left_q)
            bar.update(task, total=self._count(due_q), completed=self._count(due_q) - left)
            self._watch_children()
            if left == 0:
                break
            time.sleep(0.5)

    def _watch_children(self) -> None:
        for p in self.processes:
            if not p.alive():
                raise LocalServiceError(f"{p.name} stopped unexpectedly:\n{p.tail()}")

    def _table(self, title: str, *columns: Any, where: Any = None, limit: int = 12) -> Table:
        table = Table(*(c.key.replace("_", " ") for c in columns), "count", title=title,
                      min_width=30)
        stmt = select(*columns, func.count()).group_by(*columns)
        if where is not None:
            stmt = stmt.where(where)
        with self.c.sessions() as s:
            for *values, n in s.execute(stmt.order_by(func.count().desc()).limit(limit)):
                table.add_row(*(str(v) for v in values), str(n))
        return table

    def summary(self) -> Table:
        """Accounts by stage, signals by kind, steps by status, actions by kind and status,
        and why messages were held back."""
        grid = Table.grid(padding=(0, 3))
        grid.add_row(self._table("accounts by stage", AccountRow.stage),
                     self._table("signals by kind", SignalRow.kind))
        grid.add_row(self._table("playbook steps by status", PlaybookStepRow.status),
                     self._table("actions by kind and status", ActionRow.kind,
                                 ActionRow.status))
        grid.add_row(self._table("tasks by owner", ActionRow.role,
                                 where=ActionRow.kind == "task"),
                     self._table("messages held back, by reason", ActionRow.status,
                                 ActionRow.reason,
                                 where=ActionRow.status.in_(("suppressed", "deferred")),
                                 limit=6))
        return grid

    def _shutdown(self) -> None:
        self.console.print("Stopping ...")
        for p in reversed(self.processes):
            p.stop()
        self.smtp.stop()
        self.prefect.stop()
        self.kafka.stop()
        self.console.print("Stopped everything `laer up` started.")


def run_up(c: Container, options: UpOptions, console: Console) -> int:
    """Entry point of `laer up`."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return Up(c, options, console).run()
