"""A local SMTP sink for the demo and tests: accepts mail and keeps it in a mailbox file."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.generator import BytesGenerator
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _MailboxHandler:
    """Appends each message to an mbox file kept open (readable by `mailbox.mbox`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[Message] = []
        # `mailbox.mbox.add` re-reads the whole file and fsyncs per message: quadratic and
        # disk-bound in a demo that sends thousands. A sink only needs to append.
        self._file = path.open("ab")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = message_from_bytes(envelope.original_content or envelope.content)
        self.received.append(msg)
        sender = envelope.mail_from or "MAILER-DAEMON"
        msg.set_unixfrom(f"From {sender} {time.asctime(time.gmtime())}")
        BytesGenerator(self._file, mangle_from_=True).flatten(msg, unixfrom=True)
        self._file.write(b"\n")
        self._file.flush()
        return "250 Message accepted for delivery"

    def close(self) -> None:
        """Close the mailbox file."""
        self._file.close()


@dataclass
class LocalSmtp:
    """aiosmtpd on 127.0.0.1:`port`, writing every message to `mbox_path`."""

    mbox_path: Path
    port: int = 8025
    _controller: Controller | None = field(default=None, repr=False)
    _handler: _MailboxHandler | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start accepting mail."""
        self.mbox_path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = _MailboxHandler(self.mbox_path)
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def received(self) -> list[Message]:
        """Messages received since start."""
        return list(self._handler.received) if self._handler else []

    def message_ids(self) -> Counter[str]:
        """Copies received of each Message-ID: a retry after a lost answer repeats its id."""
        return Counter(str(m["Message-ID"]) for m in self.received)

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._handler is not None:
            self._handler.close()
