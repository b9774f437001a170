"""The message as sent: headers decode to what the step wrote, and no value adds a header."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from flows.kit.transport import build_message


def _parsed(subject: str, html: str | None = "<p>hé</p>") -> EmailMessage:
    raw = build_message("LAER <laer@example.com>", "buyer@acme.example", subject, "héllo\n",
                        html, "msg_1").as_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.parametrize("subject", ["Welcome aboard, <b>Jane</b> {{ 7*7 }}",
                                     "Bienvenue, Zoë Müller " * 6])
def test_headers_and_bodies_read_back_as_written(subject: str) -> None:
    msg = _parsed(subject)
    assert msg["Subject"] == subject and msg["To"] == "buyer@acme.example"
    assert msg["Message-ID"] == "<msg_1@laer>"
    assert msg.get_body(("plain",)).get_content() == "héllo\n"  # type: ignore[union-attr]
    assert msg.get_body(("html",)).get_content() == "<p>hé</p>"  # type: ignore[union-attr]
    assert _parsed(subject, html=None).get_content_type() == "text/plain"


@pytest.mark.parametrize("bad", ["hi\r\nBcc: all@example.com", "hi\nBcc: all@example.com"])
def test_a_line_break_in_a_header_value_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        build_message("laer@example.com", "a@example.com", bad, "text", None, "msg_2")
