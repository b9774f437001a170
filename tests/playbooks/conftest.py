"""Playbook tests: a real Prefect API, a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.kit.testing import PlaybookHarness
from laer.local.prefect_server import LocalPrefectServer
from laer_domain.events import make_event
from tests.conftest import free_port

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SECRET = "test-webhook-secret"


@pytest.fixture(scope="package")
def prefect_api(prefect_server: LocalPrefectServer) -> Iterator[str]:
    """Point this process's Prefect client at the session's real API server."""
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url


@dataclass
class Mailbox:
    """What a real SMTP server received; `refuse` answers the next MAIL FROMs with 451."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    refuse: int = 0  # transient refusals still to give
    refused: int = 0  # transient refusals given
    drop_after_data: int = 0  # messages to take, then drop the line before answering
    hold: threading.Event | None = None  # set: MAIL FROM waits until it is set again
    holding: threading.Event = field(default_factory=threading.Event)
    peers: list[tuple[str, int]] = field(default_factory=list)  # who said MAIL FROM
    controller: Controller | None = None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # noqa: N802
        self.peers.append(session.peer)
        if self.hold is not None:  # a test kills the sender meanwhile
            self.holding.set()
            self.hold.wait(120)
            self.hold = None
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        if self.drop_after_data > 0:  # taken, but the sender never hears so
            self.drop_after_data -= 1
            server.transport.close()
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def by_message_id(self) -> Counter[str]:
        """How many copies of each Message-ID arrived."""
        return Counter(str(m["Message-ID"]) for m in self.messages)

    def start(self) -> None:
        self.controller = Controller(self, hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        """Take the server down (connections are refused until `start`)."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real aiosmtpd server collecting what the playbooks send."""
    box = Mailbox("127.0.0.1", free_port())
    box.start()
    yield box
    box.stop()


@dataclass
class Hooks:
    """A webhook receiver: answers from `script` in turn (then 204), records every request."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    # Optional check of each request (headers, body) -> status; its answer overrides 204.
    check: Callable[[dict[str, str], bytes], int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.received.append((headers, body))
            code, extra = self.script.pop(0) if self.script else (204, {})
            if code == 204 and self.check is not None:
                code = self.check(headers, body)
            self.answered.append(code)
            return code, extra

    def accepted_ids(self) -> Counter[str]:
        """How many times each webhook-id was answered with a 2xx."""
        return Counter(h.get("webhook-id", "") for (h, _), code in zip(self.received,
                       self.answered, strict=True) if 200 <= code < 300)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """A real HTTP server recording webhook deliveries."""
    got = Hooks(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            code, extra = got.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(code)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/laer"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield got
    server.shutdown()
    server.server_close()


def daytime_zone(now: datetime | None = None) -> str:
    """An Etc/GMT zone where it is around noon right now (keeps quiet hours out of a test)."""
    hour = (now or datetime.now(UTC)).hour
    offset = 12 - hour  # hours east of UTC; Etc/GMT signs are inverted
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


HarnessFactory = Callable[..., PlaybookHarness]


@pytest.fixture
def harness(prefect_api: str, mailbox: Mailbox, tmp_path: Path
            ) -> Iterator[HarnessFactory]:
    """Build PlaybookHarness objects on a fresh SQLite file (or a given URL)."""
    made: list[PlaybookHarness] = []

    def make(database_url: str | None = None, **env: str) -> PlaybookHarness:
        url = database_url or f"sqlite:///{tmp_path / 'laer.db'}"
        base = {"LAER_SMTP__HOST": mailbox.host, "LAER_SMTP__PORT": str(mailbox.port),
                "LAER_WEBHOOK_SECRET": SECRET, "LAER_PLAYBOOK_DAY_SECONDS": "0.01",
                "LAER_STATE_DIR": str(tmp_path / "state")}
        h = PlaybookHarness(url, env={**base, **env}, report_to_prefect=True).__enter__()
        made.append(h)
        return h

    yield make
    for h in reversed(made):
        h.__exit__(None, None, None)


def contact(account: str, role: str = "buyer", **kw: Any) -> dict[str, Any]:
    base = {"email": f"{role}@{account}.example", "name": f"{role.title()} of {account}",
            "role": role, "channels": ["email"], "timezone": daytime_zone()}
    base.update(kw)
    return base


def landing(account: str, contacts: list[dict[str, Any]] | None = None, *,
            goals: list[dict[str, Any]] | None = None, term_days: int = 365,
            at: datetime = T0) -> list[dict[str, Any]]:
    """subscription_started + invoice_paid + provisioned: the account ends in adopt."""
    data: dict[str, Any] = {
        "plan": "team", "seats": 20, "mrr": "1500.00", "currency": "EUR",
        "term_start": at.isoformat(), "term_end": (at + timedelta(days=term_days)).isoformat(),
        "contacts": contacts if contacts is not None else [contact(account)],
    }
    if goals is not None:
        data["goals"] = goals
    return [
        make_event("laer.billing.subscription_started", account, at, data, source="billing"),
        make_event("laer.billing.invoice_paid", account, at + timedelta(days=1),
                   {"invoice_id": "inv-1", "amount": 1500, "currency": "EUR"},
                   source="billing"),
        make_event("laer.usage.provisioned", account, at + timedelta(days=2), {},
                   source="product"),
    ]
