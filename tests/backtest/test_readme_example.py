"""The simulated-clock example in flows/README.md runs as written and passes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "flows" / "README.md"


def _example() -> str:
    section = README.read_text().split("### On the simulated clock", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block under 'On the simulated clock'"
    return found.group(1)


def test_the_readme_example_runs(tmp_path: Path, no_network: None) -> None:
    code = _example()
    assert len(code.strip().splitlines()) <= 20, "the example stays short"
    scope: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the project's own README
    scope["test_renewal_sequence"](tmp_path)
