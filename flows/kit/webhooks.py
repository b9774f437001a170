"""Webhook signatures in the manner of the Standard Webhooks specification.

A delivery carries `webhook-id` (the same on every retry of one message), `webhook-timestamp`
(Unix seconds of this attempt) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}`. Signing the id and the time with the body lets a receiver reject
a captured request replayed later. A secret `whsec_<base64>` is decoded as the specification
says; any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300


class WebhookVerificationError(Exception):
    """The request is not a valid, fresh delivery signed with the secret."""


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: base64-decoded after `whsec_`, else the text's UTF-8."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    if not secret:
        raise ValueError("the webhook secret is empty")
    return secret.encode()


def signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str | bytes, msg_id: str, body: bytes,
                 now: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at delivering `body`."""
    timestamp = int((now or datetime.now(UTC)).timestamp())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body)}


def verify(headers: Mapping[str, str], body: bytes, secret: str | bytes,
           tolerance: float = TOLERANCE_S, now: datetime | None = None) -> str:
    """Check a received delivery; returns its `webhook-id` or raises WebhookVerificationError.

    Rejects a missing header, a timestamp more than `tolerance` seconds old or ahead, and a
    signature that does not match (compared in constant time).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    raw_ts = lower.get("webhook-timestamp")
    sent = lower.get("webhook-signature")
    if not msg_id or not raw_ts or not sent:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    age = (now or datetime.now(UTC)).timestamp() - timestamp
    if age > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is {age:.0f}s old")
    if age < -tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is {-age:.0f}s in the future")
    expected = signature(secret, msg_id, timestamp, body).encode()
    # Several signatures may be sent (space-separated) while a secret is rotated.
    if not any(hmac.compare_digest(expected, candidate.encode())
               for candidate in sent.split() if candidate.startswith("v1,")):
        raise WebhookVerificationError("no matching signature")
    return msg_id
