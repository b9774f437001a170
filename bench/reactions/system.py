"""The system under test, started as `laer up` starts it: a Prefect server, an SMTP sink and
`laer serve` + `laer dispatch` as children, each logging to a file; stopped in reverse."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from laer.local.ports import free_port
from laer.local.postgres import reset_postgres
from laer.local.prefect_server import LocalPrefectServer, prefect_env
from laer.local.processes import ManagedProcess
from laer.local.smtp import LocalSmtp


def _sync_url(url: str) -> str:
    return url.replace("+asyncpg", "+psycopg")


def reset_prefect_postgres(url: str) -> None:
    """Empty the Prefect server's PostgreSQL database (its schema is rebuilt on start)."""
    reset_postgres(_sync_url(url))


@dataclass
class System:
    """One backend's running system; `start` and `stop` (safe to call twice, or half started)."""

    home: Path
    database_url: str  # the app database (LAER_DATABASE_URL)
    prefect_database_url: str | None  # None: the server's embedded SQLite
    day_seconds: float
    prefect: LocalPrefectServer = field(init=False)
    smtp: LocalSmtp = field(init=False)
    processes: list[ManagedProcess] = field(default_factory=list)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.prefect = LocalPrefectServer(self.home / "prefect", port=free_port(),
                                          database_url=self.prefect_database_url)
        self.smtp = LocalSmtp(self.home / "mail" / "outbox.mbox", port=free_port())

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def start_servers(self) -> None:
        """The Prefect server and the SMTP sink."""
        if self.prefect_database_url:
            reset_prefect_postgres(self.prefect_database_url)
        self.stack.callback(self.prefect.stop)
        self.prefect.start()
        self.stack.callback(self.smtp.stop)
        self.smtp.start()

    def env(self) -> dict[str, str]:
        """The children's environment, as `laer up` builds it."""
        env = prefect_env(self.prefect.home, api_url=self.prefect.api_url)
        env.update({"LAER_DATABASE_URL": self.database_url,
                    "LAER_SMTP__PORT": str(self.smtp.port),
                    "LAER_STATE_DIR": str(self.home / "state"),
                    "LAER_DEMO": "1",
                    "LAER_PLAYBOOK_DAY_SECONDS": str(self.day_seconds),
                    "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
        return env

    def start_processes(self) -> None:
        """`laer serve` and `laer dispatch`, as `laer up` starts them."""
        env = self.env()
        for name in ("serve", "dispatch"):
            process = ManagedProcess(name, [name], env, self.log_dir)
            self.stack.callback(process.stop)
            self.processes.append(process.start())

    def groups(self) -> dict[str, int]:
        """Process group of each child (its CPU is read from /proc by bench.reactions.cpu)."""
        out = {p.name: p.process.pid for p in self.processes if p.process is not None}
        if self.prefect.process is not None:
            out["prefect"] = self.prefect.process.pid
        return out

    def check(self) -> None:
        """Raise if a child died (with the end of its log)."""
        for p in self.processes:
            if not p.alive():
                raise RuntimeError(f"laer {p.name} stopped unexpectedly:\n{p.tail()}")

    def stop_processes(self) -> None:
        """Stop the LAER children (the servers stay for the baseline)."""
        for p in reversed(self.processes):
            p.stop()

    def stop(self) -> None:
        """Stop everything started, last first."""
        self.stack.close()


def app_database(backend: str, home: Path, postgres_url: str) -> str:
    """The app database for a backend: a new SQLite file, or the PostgreSQL one emptied."""
    if backend == "embedded":
        return f"sqlite:///{home / 'laer.db'}"
    reset_postgres(postgres_url)
    return postgres_url

