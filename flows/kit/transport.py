"""One attempt at delivering a message, over SMTP or as a signed webhook, and what became of it.

An attempt never raises for the receiver's answer: it says `sent`, `transient` (try again
later: SMTP 4xx or a lost connection, HTTP 5xx, 408, 429, a network error) or `permanent`
(SMTP 5xx, HTTP 4xx, a redirect, which is never followed). An unknown outcome, such as a
connection lost after the data went out, is transient: the retry repeats the same
Message-ID or webhook-id, so the receiver can drop the copy.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, parseaddr, parsedate_to_datetime
from typing import TYPE_CHECKING, Literal

import httpx

from flows.kit.settings import SmtpSettings
from flows.kit.webhooks import sign_headers

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

Status = Literal["sent", "transient", "permanent"]


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved; `retry_after_s` is the receiver's own wish, if it said one."""

    status: Status
    error: str | None = None
    retry_after_s: float | None = None
    code: int | None = None  # the HTTP status (webhooks) or SMTP reply code, when one came


SENT = Outcome("sent")


def _tls_context(smtp: SmtpSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(smtp.cafile) if smtp.cafile else None)


class _Smtp(smtplib.SMTP):
    """Says whether the message data went out (then a lost connection is an unknown outcome)."""

    data_sent = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        """Send the message data: past this point a repeat could deliver twice."""
        self.data_sent = True
        return super().data(msg)


class _SmtpSsl(smtplib.SMTP_SSL):
    """`_Smtp` over TLS from the first byte."""

    data_sent = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        """Send the message data: past this point a repeat could deliver twice."""
        self.data_sent = True
        return super().data(msg)


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.security == "ssl":
        client: smtplib.SMTP = _SmtpSsl(smtp.host, smtp.port, timeout=smtp.timeout_s,
                                        context=_tls_context(smtp))
    else:
        client = _Smtp(smtp.host, smtp.port, timeout=smtp.timeout_s)
    try:
        if smtp.security == "starttls":
            client.starttls(context=_tls_context(smtp))  # raises if the relay cannot
        if smtp.username and smtp.password:
            client.login(smtp.username, smtp.password.get_secret_value())
    except BaseException:
        client.close()
        raise
    return client


class SmtpPool:
    """Open SMTP connections kept between messages: a connect, EHLO and QUIT per message
    cost more than the message. A connection idle longer than `idle_s` is closed, not
    reused (relays drop idle clients)."""

    def __init__(self, idle_s: float = 30.0, keep: int = 8) -> None:
        self.idle_s = idle_s
        self.keep = keep
        self._idle: dict[tuple[object, ...], list[tuple[smtplib.SMTP, float]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(smtp: SmtpSettings) -> tuple[object, ...]:
        secret = smtp.password.get_secret_value() if smtp.password else None
        return (smtp.host, smtp.port, smtp.security, smtp.username, secret, smtp.cafile)

    def take(self, smtp: SmtpSettings) -> tuple[smtplib.SMTP, bool]:
        """An open connection (and whether it was used before), or a new one."""
        now, found, stale = time.monotonic(), None, []
        with self._lock:
            idle = self._idle.get(self._key(smtp), [])
            while idle and found is None:
                client, since = idle.pop()
                if now - since < self.idle_s:
                    found = client
                else:
                    stale.append(client)
        for client in stale:
            _quit(client)
        return (found, True) if found is not None else (_connect(smtp), False)

    def give(self, smtp: SmtpSettings, client: smtplib.SMTP) -> None:
        """Keep `client` for the next message (or close it when enough are kept)."""
        with self._lock:
            idle = self._idle.setdefault(self._key(smtp), [])
            if len(idle) < self.keep:
                idle.append((client, time.monotonic()))
                return
        _quit(client)

    def close(self) -> None:
        """Close every kept connection."""
        with self._lock:
            kept = [c for idle in self._idle.values() for c, _ in idle]
            self._idle.clear()
        for client in kept:
            _quit(client)


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


POOL = SmtpPool()


def _smtp_error(exc: Exception) -> Outcome:
    text = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return Outcome("transient" if codes and all(400 <= c < 500 for c in codes)
                       else "permanent", text)
    if isinstance(exc, smtplib.SMTPResponseException):
        return Outcome("transient" if 400 <= exc.smtp_code < 500 else "permanent", text,
                       code=exc.smtp_code)
    if isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError):
        return Outcome("permanent", text)  # no STARTTLS, or a relay we cannot trust
    if isinstance(exc, smtplib.SMTPException | OSError):
        return Outcome("transient", text)  # refused, timed out, disconnected
    raise exc


_UTF8 = Charset("utf-8")
_UTF8.header_encoding = _UTF8.body_encoding = QP


def build_message(sender: str, to: str, subject: str, text: str, html: str | None,
                  message_id: str) -> Message:
    """The message as MIME parts: a third of the CPU of `EmailMessage` and its header
    parsing, which a step pays per message."""
    for name, value in (("From", sender), ("To", to), ("Subject", subject)):
        if "\r" in value or "\n" in value:  # never let a value start a header of its own
            raise ValueError(f"{name} header value contains a line break")
    # a Charset, not "utf-8": quoted-printable bodies, as EmailMessage would write them
    parts = [MIMEText(text, "plain", _UTF8)]  # type: ignore[arg-type]
    if html:
        parts.append(MIMEText(html, "html", _UTF8))  # type: ignore[arg-type]
    msg: Message = parts[0] if len(parts) == 1 else MIMEMultipart("alternative", None, parts)
    msg["From"] = sender if sender.isascii() else formataddr(parseaddr(sender), "utf-8")
    msg["To"] = to  # an address beyond ASCII needs the relay's SMTPUTF8, as before
    msg["Subject"] = (subject if subject.isascii()  # type: ignore[assignment]  # it folds
                      else Header(subject, _UTF8, header_name="Subject"))
    msg["Message-ID"] = f"<{message_id}@laer>"
    return msg


def send_email(smtp: SmtpSettings, *, to: str, subject: str, text: str, html: str | None,
               message_id: str) -> Outcome:
    """Send one message over SMTP; the Message-ID is fixed per message, so a repeat is seen."""
    msg = build_message(smtp.sender, to, subject, text, html, message_id)
    while True:
        try:
            client, reused = POOL.take(smtp)
        except Exception as exc:
            return _smtp_error(exc)
        client.data_sent = False  # type: ignore[attr-defined]  # _Smtp or _SmtpSsl
        try:
            client.send_message(msg)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
            # an answer: smtplib reset the transaction, the connection stays usable
            POOL.give(smtp, client)
            return _smtp_error(exc)
        except Exception as exc:
            client.close()
            if reused and isinstance(exc, smtplib.SMTPServerDisconnected | OSError) \
                    and not getattr(client, "data_sent", True):
                continue  # a kept connection the relay had dropped: nothing went out yet
            return _smtp_error(exc)
        POOL.give(smtp, client)
        return SENT


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_http(response: httpx.Response) -> Outcome:
    """A webhook receiver's answer as an outcome."""
    code = response.status_code
    if 200 <= code < 300:
        return Outcome("sent", code=code)
    error = f"http {code}"
    if 300 <= code < 400:  # never followed: a moved endpoint is for a person to confirm
        return Outcome("permanent", f"{error} redirect to {response.headers.get('location')}",
                       code=code)
    if code in (408, 429) or code >= 500:
        return Outcome("transient", error, retry_after(response.headers.get("retry-after")),
                       code=code)
    return Outcome("permanent", error, code=code)


def post_webhook(url: str, secret: str, body: bytes, msg_id: str, timeout_s: float = 15.0
                 ) -> Outcome:
    """POST a JSON body signed in the manner of Standard Webhooks (id, timestamp, body)."""
    headers = {"Content-Type": "application/json", **sign_headers(secret, msg_id, body)}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s,
                              follow_redirects=False)
    except httpx.TransportError as exc:
        return Outcome("transient", f"{type(exc).__name__}: {exc}"[:500])
    return classify_http(response)
