"""Browser tickets: short-lived, single-use, signed stand-ins for an API key.

A browser cannot set headers on a WebSocket, and a web page should never hold a long-lived
key, so the page's backend trades its key for a ticket (`POST /v1/tickets`) and the page
connects with `?ticket=...`. A ticket is `payload.signature`, both base64url: the payload
names the key id, an expiry and a random nonce; the signature is HMAC-SHA256 under the
tenants file's `ticket_secret`. The nonce is redeemed once in the shared `LimitStore`, so a
ticket opens one connection on any gateway sharing the store; a ticket whose key has been
revoked opens none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import msgspec


class TicketClaims(msgspec.Struct, frozen=True):
    key_id: str
    expires_at: float  # unix seconds
    nonce: str


class TicketError(ValueError):
    """Not a valid, unexpired ticket; the text says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def issue(secret: bytes, key_id: str, expires_at: float) -> str:
    claims = TicketClaims(key_id, expires_at, secrets.token_hex(16))
    payload = _b64(msgspec.json.encode(claims))
    return f"{payload}.{_signature(secret, payload)}"


def verify(secret: bytes, ticket: str, now: float) -> TicketClaims:
    """The claims of a ticket signed with `secret` that has not expired at `now`."""
    payload, _, signature = ticket.partition(".")
    if not hmac.compare_digest(_signature(secret, payload), signature):
        raise TicketError("invalid ticket")
    try:
        claims = msgspec.json.decode(_unb64(payload), type=TicketClaims)
    except (binascii.Error, ValueError) as exc:  # msgspec's errors are ValueErrors
        raise TicketError("invalid ticket") from exc
    if claims.expires_at <= now:
        raise TicketError("ticket expired")
    return claims
