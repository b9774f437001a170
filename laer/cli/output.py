"""What every command writes with: JSON on stdout, or rich consoles made on first use."""

from __future__ import annotations

import json
import sys
from functools import cache
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
