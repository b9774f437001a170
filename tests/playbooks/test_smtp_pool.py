"""SMTP connections are kept between messages; one the relay dropped is replaced unseen."""

from __future__ import annotations

from flows.kit.settings import SmtpSettings
from flows.kit.transport import POOL, Outcome, send_email
from tests.playbooks.conftest import Mailbox


def _send(box: Mailbox, n: int) -> Outcome:
    return send_email(SmtpSettings(host=box.host, port=box.port), to="buyer@acme.example",
                      subject=f"hello {n}", text="hi", html=None, message_id=f"pool-{n}")


def test_messages_share_one_connection(mailbox: Mailbox) -> None:
    POOL.close()
    assert [_send(mailbox, n).status for n in range(3)] == ["sent"] * 3
    assert len(mailbox.messages) == 3
    assert len(set(mailbox.peers)) == 1  # one client port: one connection for all three


def test_a_dropped_kept_connection_is_replaced_and_nothing_sent_twice(mailbox: Mailbox
                                                                     ) -> None:
    POOL.close()
    assert _send(mailbox, 1).status == "sent"
    mailbox.stop()  # the relay restarts: the kept connection is dead
    mailbox.start()
    assert _send(mailbox, 2).status == "sent"
    assert [m["Subject"] for m in mailbox.messages] == ["hello 1", "hello 2"]


def test_a_refusal_keeps_the_connection(mailbox: Mailbox) -> None:
    POOL.close()
    mailbox.refuse = 1
    assert _send(mailbox, 1).status == "transient"
    assert _send(mailbox, 2).status == "sent"
    assert len(set(mailbox.peers)) == 1
