"""Who the client is and whom it trusts: an API key (or, on the WebSocket, a browser ticket)
and the TLS settings for a gateway with its own certificate.

A gateway with a tenants file wants `Authorization: Bearer <key>` on the WebSocket upgrade and
on every HTTP request; without `api_key=` the client uses `$A2F_API_KEY` when it is set. A
ticket (`POST /v1/tickets`) opens one WebSocket only and travels in the URL's query. TLS
verifies the server against the system's CAs unless `ca_file=` names the certificate(s) to
trust (a self-signed one, say) or `insecure=True` turns verification off.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

API_KEY_ENV = "A2F_API_KEY"
CA_FILE_ENV = "A2F_CA_FILE"
TICKET_PARAMETER = "ticket"


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str | None = None
    ticket: str | None = None
    ca_file: str | os.PathLike[str] | None = None
    insecure: bool = False

    @classmethod
    def resolve(
        cls,
        api_key: str | None = None,
        ticket: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> Credentials:
        """The given values, the environment's where none is given."""
        return cls(
            api_key or os.environ.get(API_KEY_ENV) or None,
            ticket,
            ca_file or os.environ.get(CA_FILE_ENV) or None,
            insecure,
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """None: the library's default verification (the system's CAs, `SSL_CERT_FILE`)."""
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.ca_file is None:
            return None
        try:
            return ssl.create_default_context(cafile=os.fspath(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use CA file {os.fspath(self.ca_file)!r}: {exc}") from None

    def websocket_address(self, url: str) -> str:
        """`url` with the ticket in its query, when there is one."""
        if self.ticket is None:
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != TICKET_PARAMETER]
        query.append((TICKET_PARAMETER, self.ticket))
        return urlunsplit(parts._replace(query=urlencode(query)))


def redacted(url: str) -> str:
    """`url` fit for a message: a ticket is a credential."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "<redacted>" if k == TICKET_PARAMETER else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="<>")))


def unreachable(address: str, exc: BaseException) -> str:
    """Why a connection to `address` failed, saying what to do about an untrusted certificate
    (the usual case with a self-signed one)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return f"cannot connect to {address}: {exc}"
    return untrusted(address, cause.verify_message)


def untrusted(address: str, why: str) -> str:
    return (
        f"cannot connect to {address}: its certificate is not trusted ({why}): "
        "give the certificate that signed it (ca_file=, a2f --ca-file, $A2F_CA_FILE)"
    )


def has_ticket(url: str) -> bool:
    return any(k == TICKET_PARAMETER for k, _ in parse_qsl(urlsplit(url).query))
