"""Fixtures for the pure domain tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the repo root first: a stale editable install may see laer_domain as a namespace package
sys.path[:0] = [str(Path(__file__).parents[2]), str(Path(__file__).parent)]

from domain_sim import Sim  # noqa: E402


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep LAER_POLICY_* variables of the developer's shell out of the tests."""
    for name in list(os.environ):
        if name.startswith("LAER_POLICY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def sim() -> Sim:
    """A fresh simulator with default policy."""
    return Sim()
