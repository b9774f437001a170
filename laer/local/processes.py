"""Child processes of `laer up` and the end-to-end tests: started, watched, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process's group, then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class ManagedProcess:
    """One `laer <command>` child with its own log file and process group."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> ManagedProcess:
        """Start the child (its output goes to the log file)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "laer.cli", *self.args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (clean shutdown), SIGKILL if it does not exit within `timeout`."""
        if self.process is None:
            return None
        stop_group(self.process, timeout)
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
