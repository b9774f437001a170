"""A local Prefect API server (with its UI) as a child process, for tests and the demo."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from laer.local.kafka import LocalServiceError
from laer.local.processes import stop_group


def prefect_env(home: Path, api_url: str | None = None, database_url: str | None = None
                ) -> dict[str, str]:
    """Environment for Prefect processes: private home, analytics off, optional API/DB."""
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    })
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


@dataclass
class LocalPrefectServer:
    """`prefect server start` with a private PREFECT_HOME; SQLite unless database_url is set."""

    home: Path
    port: int = 4200
    database_url: str | None = None
    # Run below the LAER processes: the API is the view of what steps did, so under load the
    # steps get the CPU first and the view catches up (a SQLite-backed server wants a core).
    niceness: int = 10
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """Whether the API answers its health check."""
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until its API is healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.healthy():
            raise LocalServiceError(f"Prefect: something already serves port {self.port}")
        log = (self.home / "server.log").open("ab")
        env = prefect_env(self.home, database_url=self.database_url)
        env.pop("PREFECT_API_URL", None)
        # The UI is a browser app: tell it where this server's API is, not the default port.
        env.update({"PREFECT_SERVER_API_HOST": "127.0.0.1",
                    "PREFECT_SERVER_API_PORT": str(self.port),
                    "PREFECT_UI_API_URL": self.api_url})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if self.niceness:
            # at once, before the interpreter starts threads or children (they inherit it)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.process.pid, self.niceness)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServiceError(
                    f"Prefect: server exited with {self.process.returncode}; "
                    f"see {self.home / 'server.log'}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise LocalServiceError(f"Prefect: server not healthy after {timeout:.0f}s")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's process group."""
        if self.process is not None:
            stop_group(self.process, timeout)
