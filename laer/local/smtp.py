"""A local SMTP sink for the demo and tests: accepts mail and keeps it in a mailbox file."""

from __future__ import annotations

import mailbox
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _MailboxHandler:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = message_from_bytes(envelope.original_content or envelope.content)
        self.received.append(msg)
        box = mailbox.mbox(str(self.path))
        try:
            box.add(msg)
            box.flush()
        finally:
            box.close()
        return "250 Message accepted for delivery"


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
