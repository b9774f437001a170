"""What every command writes with: JSON on stdout, or rich consoles made on first use."""

from __future__ import annotations

import json
import logging
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout (dates and the like as strings)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@cache
def console() -> Console:
    """Standard output for people (tables, progress); `--json` output never needs it."""
    from rich.console import Console

    return Console()


@cache
def err() -> Console:
    """Standard error for people: problems and progress bars."""
    from rich.console import Console

    return Console(stderr=True)


def log_to_file(path: Path) -> Path:
    """Send library logs (Kafka, SQLAlchemy, Prefect) to `path`: the terminal keeps the
    progress bars and tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path
