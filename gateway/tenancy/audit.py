"""The audit trail: one JSON line per session start and end and per rejected request.

Lines go to the `a2f.audit` logger (stderr by default), apart from uvicorn's logs so that a
log shipper can route them on their own; each starts with `{"log":"a2f.audit",` so that it can
be told from any other JSON on the same stream. A line names the tenant and the key id, never
a key or a ticket; no audio is ever written. How much of the client's address is kept is a
setting (`--audit_client_address`): `full`, `network` (IPv4 /24, IPv6 /48) or `none`.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time

import msgspec

from gateway.tenancy.tenants import Identity

ADDRESS_MODES = ("full", "network", "none")
AUDIT_LOG = "a2f.audit"  # the logger's name and every line's "log" field
log = logging.getLogger(AUDIT_LOG)


def _handler() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def redact_address(address: str, mode: str) -> str:
    if mode == "full":
        return address
    if mode == "none":
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class Audit:
    """Writes audit lines with client addresses kept as `address_mode` says."""

    def __init__(self, address_mode: str = "full") -> None:
        if address_mode not in ADDRESS_MODES:
            raise ValueError(f"audit_client_address must be one of {', '.join(ADDRESS_MODES)}")
        self.address_mode = address_mode
        _handler()

    def _write(self, event: str, client: str, identity: Identity | None, **fields: object) -> None:
        line = {
            "log": AUDIT_LOG,
            "ts": round(time.time(), 3),
            "event": event,
            "tenant": None if identity is None else identity.tenant_id,
            "key_id": None if identity is None else identity.key_id,
            "client": redact_address(client, self.address_mode),
            **fields,
        }
        log.info(msgspec.json.encode(line).decode())

    def session(
        self, event: str, session_id: str, client: str, identity: Identity, **counts: object
    ) -> None:
        self._write(event, client, identity, session_id=session_id, **counts)

    def rejected(
        self, reason: str, code: str, client: str, identity: Identity | None, entry: str
    ) -> None:
        """A request refused: `reason` (bad key, quota...), `code` as the client got it."""
        self._write("rejected", client, identity, reason=reason, code=code, entry=entry)
