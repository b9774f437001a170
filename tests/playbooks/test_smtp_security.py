"""SMTP over STARTTLS and SMTPS against a real aiosmtpd with a certificate made here; a login
only over TLS unless allowed by name; a relay that cannot do TLS gets nothing."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from flows.kit.settings import SmtpSettings
from flows.kit.transport import send_email
from tests.conftest import free_port


@dataclass
class Relay:
    """What the relay saw: each message with whether it came over TLS, and each login."""

    received: list[tuple[bool, bytes]] = field(default_factory=list)
    logins: list[tuple[bool, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((_over_tls(server), envelope.content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((_over_tls(server), data.login.decode()))
        return AuthResult(success=data.password == b"s3cret")


def _over_tls(server: Any) -> bool:
    return server.transport.get_extra_info("ssl_object") is not None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), made with `cryptography`."""
    home = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "laer test relay")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = home / "relay.pem", home / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    return ctx


@pytest.fixture
def relay_factory(certificate: tuple[Path, Path]) -> Iterator[Any]:
    started: list[Controller] = []

    def start(mode: str) -> tuple[Relay, int]:
        relay, port = Relay(), free_port()
        kw: dict[str, Any] = {"authenticator": relay.authenticate}
        if mode == "starttls":
            kw |= {"tls_context": _server_context(certificate), "require_starttls": True,
                   "auth_require_tls": True}
        elif mode == "ssl":  # aiosmtpd counts only STARTTLS as TLS for AUTH; this is TLS too
            kw |= {"ssl_context": _server_context(certificate), "auth_require_tls": False}
        else:  # a plain relay that offers no TLS, and takes a login in clear if given one
            kw |= {"auth_require_tls": False}
        controller = Controller(relay, hostname="127.0.0.1", port=port, **kw)
        controller.start()
        started.append(controller)
        return relay, port

    yield start
    for c in started:
        c.stop()


def _send(smtp: SmtpSettings) -> Any:
    return send_email(smtp, to="buyer@acme.example", subject="hello", text="hi", html=None,
                      message_id="msg_tls")


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_a_login_and_the_message_go_over_tls(mode: str, relay_factory: Any,
                                              certificate: tuple[Path, Path]) -> None:
    relay, port = relay_factory(mode)
    smtp = SmtpSettings(host="127.0.0.1", port=port, security=mode, cafile=certificate[0],
                        username="laer", password=SecretStr("s3cret"))
    assert _send(smtp).status == "sent"
    assert relay.logins == [(True, "laer")]
    assert len(relay.received) == 1 and relay.received[0][0] is True
    assert b"Message-ID: <msg_tls@laer>" in relay.received[0][1]


def test_a_relay_whose_certificate_is_not_trusted_gets_nothing(relay_factory: Any) -> None:
    relay, port = relay_factory("starttls")
    outcome = _send(SmtpSettings(host="127.0.0.1", port=port, security="starttls",
                                 username="laer", password=SecretStr("s3cret")))
    assert outcome.status == "permanent" and "CERTIFICATE_VERIFY_FAILED" in str(outcome.error)
    assert relay.logins == [] and relay.received == []


def test_starttls_asked_of_a_relay_without_it_sends_nothing(relay_factory: Any) -> None:
    relay, port = relay_factory("plain")
    outcome = _send(SmtpSettings(host="127.0.0.1", port=port, security="starttls",
                                 username="laer", password=SecretStr("s3cret")))
    assert outcome.status == "permanent" and "STARTTLS" in str(outcome.error)
    assert relay.logins == [] and relay.received == []


def test_a_relay_that_requires_starttls_refuses_a_plain_sender(relay_factory: Any) -> None:
    relay, port = relay_factory("starttls")
    outcome = _send(SmtpSettings(host="127.0.0.1", port=port))
    assert outcome.status == "permanent" and "530" in str(outcome.error)
    assert relay.received == []


def test_a_login_without_tls_must_be_allowed_by_name(relay_factory: Any) -> None:
    with pytest.raises(ValidationError, match="needs SECURITY starttls or ssl"):
        SmtpSettings(username="laer", password=SecretStr("s3cret"))
    relay, port = relay_factory("plain")
    smtp = SmtpSettings(host="127.0.0.1", port=port, username="laer",
                        password=SecretStr("s3cret"), allow_plain_login=True)
    assert _send(smtp).status == "sent"
    assert relay.logins == [(False, "laer")]


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.kit.settings import FlowSettings

    monkeypatch.setenv("LAER_SMTP__SECURITY", "ssl")
    monkeypatch.setenv("LAER_SMTP__PORT", "465")
    monkeypatch.setenv("LAER_SMTP__USERNAME", "laer")
    assert FlowSettings().smtp.security == "ssl"
    monkeypatch.setenv("LAER_SMTP__SECURITY", "tls-please")
    with pytest.raises(ValidationError):
        FlowSettings()
