"""Backtest tests: a small simulated cohort replayed with no network at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backtest.inputs import from_simulation
from backtest.overrides import from_pairs
from backtest.run import FolderRun, run_folder
from flows.kit import transport

ACCOUNTS = 6


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"a backtest opened a connection: {args!r}")


@contextmanager
def refusing_network() -> Iterator[None]:
    """Any socket connection, SMTP send or webhook POST in this block fails."""
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _refuse)
    mp.setattr(socket, "create_connection", _refuse)
    mp.setattr(transport, "send_email", _refuse)
    mp.setattr(transport, "post_webhook", _refuse)
    # and were the transport reached after all, its relay is a closed port
    mp.setenv("LAER_SMTP__PORT", "9")
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture
def no_network() -> Iterator[None]:
    """The test's own code may open no connection (function scope: a session fixture such as
    the Prefect server, first started by a later test, must not start under the patch)."""
    with refusing_network():
        yield


@pytest.fixture(scope="package")
def cohort() -> list[dict[str, Any]]:
    """A year of a few simulated accounts."""
    return from_simulation(accounts=ACCOUNTS, seed=7)


@pytest.fixture(scope="package")
def replayed(cohort: list[dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The cohort replayed as is, and again with a frequency cap of one message a week."""
    out = tmp_path_factory.mktemp("backtest")
    with refusing_network():
        summary = run_folder(FolderRun(events=cohort, out=out,
                                       compare=from_pairs(["frequency_cap=1"])))
    return out, summary
