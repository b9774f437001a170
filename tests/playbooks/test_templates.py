"""Message templates render in the sandbox, escaped, from files."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from flows.kit.templates import available, environment, render

CTX = {
    "contact": {"name": "<b>Bob</b> {{ 7*7 }}", "email": "b@x.example", "role": "buyer"},
    "account": {"id": "acme", "stage": "adopt", "plan": "team", "seats": 5,
                "term_end": "2027-01-05", "health_score": 80, "health_band": "green",
                "goals": [{"key": "<i>k</i>", "target": "1", "achieved": True,
                           "value": "2"}]},
    "links": {"training": "https://t", "survey": "https://s", "guide": "https://g"},
    "features": ["reports"], "opportunity": None,
}


@pytest.mark.parametrize("name", available())
def test_every_template_renders_inert(name: str) -> None:
    out = render(name, CTX)
    assert "\n" not in out.subject
    assert "<b>Bob</b>" not in out.html and "49" not in out.html + out.text
    assert "&lt;b&gt;Bob&lt;/b&gt;" in out.html


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    template = environment().from_string("{{ ''.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        template.render()
