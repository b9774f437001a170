"""Message templates: files under flows/templates/, rendered in Jinja2's sandbox.

Each message is a folder with `subject.txt.j2`, `body.txt.j2` and `body.html.j2`. The HTML
part is autoescaped; every part runs in the sandbox, so account data is only ever data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _autoescape(name: str | None) -> bool:
    # Plain-text parts are not HTML: escaping there would only garble names like O'Brien.
    return not (name or "").endswith(".txt.j2")


@cache
def environment() -> SandboxedEnvironment:
    """The one sandboxed, autoescaping environment for message templates."""
    return SandboxedEnvironment(loader=FileSystemLoader(str(TEMPLATES)),
                                autoescape=_autoescape, undefined=StrictUndefined,
                                trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Rendered:
    """A rendered message."""

    subject: str
    text: str
    html: str


def render(message: str, context: dict[str, Any]) -> Rendered:
    """Render the subject, text and HTML parts of `message` with `context`."""
    env = environment()
    subject = env.get_template(f"{message}/subject.txt.j2").render(context)
    subject = re.sub(r"\s+", " ", subject).strip()[:200]  # one header line, no injection
    text = env.get_template(f"{message}/body.txt.j2").render(context)
    html = env.get_template(f"{message}/body.html.j2").render(context)
    return Rendered(subject=subject, text=text, html=html)


def available() -> list[str]:
    """Names of every message template folder."""
    return sorted(p.name for p in TEMPLATES.iterdir() if (p / "subject.txt.j2").exists())
