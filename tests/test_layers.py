"""The layers, read from the source: no import runs back up or into the domain's pure core.

Every `import` and `from ... import` of the project's packages counts, also those inside
functions or under `if TYPE_CHECKING:`, read with `ast` (no module is imported). A module may
import its own package, the standard library, any third-party package (except in the domain,
which keeps to pydantic), and of the project only the packages its layer lists below.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each layer may import of the project, besides itself. `laer/` (entrypoints and the
# composition root) may import everything; no one imports it.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "laer_domain": frozenset(),
    "persistence": frozenset({"laer_domain"}),
    "consumers": frozenset({"laer_domain", "persistence"}),
    "dispatch": frozenset({"laer_domain", "persistence", "flows.kit.registry"}),
    "flows": frozenset({"laer_domain", "persistence"}),
    # the backtest is a second driver of the whole chain, on a simulated clock
    "backtest": frozenset({"laer_domain", "persistence", "consumers", "dispatch", "flows"}),
}
# Modules that compose parts the way an entrypoint does, with the reason. The playbook test
# harness drives the real dispatcher, so a playbook test sees what production runs.
HARNESSES: dict[str, frozenset[str]] = {"flows.kit.testing": frozenset({"dispatch"}),
                                        # replays `laer simulate`'s cohort, lazily imported
                                        "backtest.inputs": frozenset({"laer.simulate"})}
PROJECT = frozenset({*MAY_IMPORT, "laer", "bench", "tests", "deployments"})
# The domain's only third-party packages: pydantic and what pydantic itself requires.
PURE = frozenset({"pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                  "typing_inspection"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported} ({self.rule})"


def _within(name: str, allowed: str) -> bool:
    """Whether module `name` is `allowed` or inside it."""
    return name == allowed or name.startswith(allowed + ".")


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`, at any depth.

    `from a import b` names `a.b` (b may be a submodule; if it is a name in `a`, `a.b` is
    still within `a`, which is what the rules look at).
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[:len(package) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            found.extend((node.lineno, f"{origin}.{alias.name}") for alias in node.names)
    return found


def check_source(source: str, module: str, path: str, is_package: bool = False
                 ) -> list[Violation]:
    """The imports of one module (`module`, read from `path`) that break its layer's rules."""
    layer = module.split(".")[0]
    allowed = MAY_IMPORT.get(layer)
    if allowed is None:  # laer/ and anything outside the layers: not constrained
        return []
    allowed = allowed | HARNESSES.get(module, frozenset())
    broken: dict[tuple[int, str], list[str]] = {}  # (line, rule): names, one entry a statement
    for line, name in _imported(ast.parse(source, path), module, is_package):
        top = name.split(".")[0]
        if top == layer or any(_within(name, a) for a in allowed):
            continue
        if top == "laer":
            rule = "nothing outside laer/ imports the application layer"
        elif top in PROJECT:
            rule = (f"{layer} may import only "
                    + (", ".join(sorted(allowed)) if allowed else "itself") + " of the project")
        elif layer == "laer_domain" and top not in sys.stdlib_module_names and top not in PURE:
            rule = "laer_domain is pure: the standard library and pydantic only"
        else:
            continue
        broken.setdefault((line, rule), []).append(name)
    return [Violation(path, line, module, ", ".join(names), rule)
            for (line, rule), names in broken.items()]


def check_tree(root: Path = ROOT) -> list[Violation]:
    """Every violation in the layered packages under `root`."""
    violations: list[Violation] = []
    for layer in sorted(MAY_IMPORT):
        for file in sorted((root / layer).rglob("*.py")):
            rel = file.relative_to(root)
            is_package = file.name == "__init__.py"
            parts = rel.parent.parts if is_package else (*rel.parent.parts, file.stem)
            violations += check_source(file.read_text(), ".".join(parts), str(rel), is_package)
    return violations


def test_no_import_runs_against_the_layers() -> None:
    violations = check_tree()
    if violations:
        pytest.fail("imports against the layers:\n" + "\n".join(map(str, violations)),
                    pytrace=False)


def test_every_layer_is_read() -> None:
    for layer in MAY_IMPORT:
        assert any((ROOT / layer).rglob("*.py")), layer


@pytest.mark.parametrize(("module", "source", "imported"), [
    ("consumers.runner", "def run():\n    from laer.settings import Settings\n",
     "laer.settings.Settings"),
    ("flows.kit.runtime", "import laer.bootstrap\n", "laer.bootstrap"),
    ("laer_domain.policy", "from pydantic_settings import BaseSettings\n",
     "pydantic_settings.BaseSettings"),
    ("laer_domain.model", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    import sqlalchemy\n", "sqlalchemy"),
    ("laer_domain.rules", "from persistence.tables import AccountRow\n",
     "persistence.tables.AccountRow"),
    ("persistence.repository", "from consumers.ingest import BatchReport\n",
     "consumers.ingest.BatchReport"),
    ("consumers.ingest", "from dispatch import dispatcher\n", "dispatch.dispatcher"),
    ("flows.kit.machine", "from dispatch.dispatcher import Dispatcher\n",
     "dispatch.dispatcher.Dispatcher"),
    ("flows.kit.testing", "from consumers.runner import ConsumerLoop\n",
     "consumers.runner.ConsumerLoop"),
    ("dispatch.dispatcher", "from consumers.records import decode\n",
     "consumers.records.decode"),
    ("dispatch.dispatcher", "from flows.kit.runtime import run\n", "flows.kit.runtime.run"),
    ("persistence.db", "from ..laer import settings\n", "laer.settings"),
])
def test_the_checker_reports_a_forbidden_import(module: str, source: str,
                                                imported: str) -> None:
    last_line = source.count("\n")  # each snippet's forbidden import is its last line
    found = check_source(source, module, "snippet.py")
    assert [v.imported for v in found] == [imported], found
    assert str(found[0]).startswith(f"snippet.py:{last_line}: {module} imports {imported} (")


@pytest.mark.parametrize(("module", "source"), [
    ("dispatch.dispatcher", "from flows.kit.registry import Playbook\n"),
    ("dispatch.dispatcher", "from flows.kit import registry\n"),
    ("laer_domain.model", "import json\nfrom pydantic import BaseModel\nfrom . import events\n"),
    ("consumers.ingest", "import kafka\nfrom persistence.uow import UnitOfWork\n"
     "from laer_domain.events import CloudEvent\n"),
    ("flows.kit.steps", "from .registry import Playbook\nfrom ..kit import api\n"),
    ("laer.cli", "from consumers.runner import ConsumerLoop\nfrom flows import kit\n"),
])
def test_the_checker_lets_allowed_imports_pass(module: str, source: str) -> None:
    assert check_source(source, module, "snippet.py") == []
