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
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from flows.kit.settings import SmtpSettings
from flows.kit.webhooks import sign_headers

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


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.security == "ssl":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s,
                                context=_tls_context(smtp))
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    if smtp.security == "starttls":
        try:
            client.starttls(context=_tls_context(smtp))  # raises if the relay cannot
        except BaseException:
            client.close()
            raise
    return client


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


def send_email(smtp: SmtpSettings, *, to: str, subject: str, text: str, html: str | None,
               message_id: str) -> Outcome:
    """Send one message over SMTP; the Message-ID is fixed per message, so a repeat is seen."""
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}@laer>"
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    try:
        with _connect(smtp) as client:
            if smtp.username and smtp.password:
                client.login(smtp.username, smtp.password.get_secret_value())
            client.send_message(msg)
    except Exception as exc:
        return _smtp_error(exc)
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
