"""Playbook tests: a real Prefect API, a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import email
import email.policy
import threading
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
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real aiosmtpd server collecting what the playbooks send."""
    box = Mailbox("127.0.0.1", free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    yield box
    controller.stop()


@dataclass
class Hooks:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """A real HTTP server recording webhook deliveries."""
    got = Hooks(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
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
        h = PlaybookHarness(url, env={**base, **env}).__enter__()
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
