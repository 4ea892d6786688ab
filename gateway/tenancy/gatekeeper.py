"""Who is calling: API keys, browser tickets, Origins, failed-attempt limits, key reload.

Every entry point (the WebSocket, `/sessions`, `/metrics`, the batch API, `/v1/tickets`)
asks `Gatekeeper.authenticate` first. Without a tenants file the gateway is open, as it has
always been on loopback: everyone is the default tenant. With one, a request carries a key
(`Authorization: Bearer <key>` or `X-API-Key: <key>`) or, on the WebSocket, a `ticket` query
parameter; failures are 401 (no or bad credentials), 403 (Origin not allowed for the tenant)
or 429 (too many failures from this address), as HTTP statuses or as close codes 4401, 4403,
4429 after a protocol `Error` on the WebSocket.

The shared store (Redis) may not answer: failed attempts are then counted in this process
(the limit still holds, per process), and a ticket, whose single use only the store can
vouch for, is refused with 503 / close 4503 `store_unavailable` (the caller may fetch a new
one, or use its key).

The tenants file is read again on SIGHUP and whenever it changes; connections whose key has
gone are told so and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from a2f_protocol.messages import Error
from gateway.defaults import DEFAULT_TENANT
from gateway.metrics import Metrics
from gateway.settings import Settings, is_loopback
from gateway.stores.base import STORE_RETRY_S, LimitStore, StoreUnavailable
from gateway.stores.local import MemoryLimits
from gateway.tenancy import tickets
from gateway.tenancy.audit import ADDRESS_MODES, Audit
from gateway.tenancy.tenants import (
    Identity,
    Tenant,
    TenantDirectory,
    TenantsFileError,
    load_tenants,
)

log = logging.getLogger(__name__)

OPEN = Identity(DEFAULT_TENANT, "", Tenant())  # everyone, when there is no tenants file
CLOSE_CODES = {401: 4401, 403: 4403, 429: 4429, 503: 4503}


class AuthFailure(Exception):
    """A refused request: HTTP `status`, protocol `code`, the text for the client."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def close_code(self) -> int:
        return CLOSE_CODES[self.status]

    def error(self) -> Error:
        return Error(str(self), self.code, self.retry_after_s)

    def headers(self) -> dict[str, str]:
        """The HTTP headers that go with this refusal."""
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="open-a2f"'
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
        return headers


@dataclass(frozen=True, slots=True)
class Caller:
    """What every transport (HTTP, WebSocket, gRPC) knows of a caller: its peer address, its
    headers or metadata (lower-case names) and its query parameters."""

    peer: str
    headers: Mapping[str, str]
    query: Mapping[str, str]


class Revocable(Protocol):
    def revoke(self, message: str) -> None:
        """End this connection, telling the client `message`."""


def startup_problem(settings: Settings) -> str | None:
    """Why these settings must not start, or None: secure by default."""
    if settings.audit_client_address not in ADDRESS_MODES:
        return f"--audit_client_address must be one of {', '.join(ADDRESS_MODES)}"
    if (
        min(settings.ticket_ttl_s, settings.tenants_reload_s, settings.auth_failures_per_minute)
        <= 0
    ):
        return "--ticket_ttl_s, --tenants_reload_s and --auth_failures_per_minute must be positive"
    if settings.ssl_keyfile and not settings.ssl_certfile:
        return "--ssl_keyfile needs --ssl_certfile"
    if settings.ssl_client_ca and not settings.ssl_certfile:
        return "--ssl_client_ca needs --ssl_certfile (client certificates need TLS)"
    if settings.demo_tenant and not settings.tenants_file:
        return "--demo_tenant needs --tenants_file (without one the demo page needs no tenant)"
    if not settings.tenants_file:
        if not is_loopback(settings.host) and not settings.insecure_open:
            return (
                f"refusing to serve {settings.host} without --tenants_file: anyone who reaches "
                "the port could use it (give a tenants file, or --insecure_open to mean it)"
            )
        return None
    if settings.workers > 1 and not settings.redis_url:
        return "--workers > 1 with --tenants_file needs --redis_url: quotas are shared there"
    try:
        tenants = load_tenants(Path(settings.tenants_file))
    except TenantsFileError as exc:
        return str(exc)
    demo = tenants.tenants.get(settings.demo_tenant) if settings.demo_tenant else None
    if settings.demo_tenant and (demo is None or not demo.keys or not demo.allowed_origins):
        return (
            f"--demo_tenant {settings.demo_tenant}: the tenants file needs that tenant with a key "
            "(the demo's tickets are issued on it) and the demo page's origin in allowed_origins"
        )
    return None


class FailureLimiter:
    """At most `per_minute` failed attempts per client address in each calendar minute,
    counted in the `LimitStore` (so across workers and hosts when it is Redis). While the
    store does not answer they are counted in this process too, and the higher count holds:
    an outage neither locks every client out nor lifts the limit."""

    def __init__(self, per_minute: int, store: LimitStore) -> None:
        self.per_minute = per_minute
        self.store = store
        self._local = MemoryLimits()

    async def check(self, client: str) -> None:
        failures, minute_left = await self._local.failures(client)
        with contextlib.suppress(StoreUnavailable):
            shared, minute_left = await self.store.failures(client)
            failures = max(failures, shared)
        if failures >= self.per_minute:
            raise AuthFailure(
                429, "rate_limited", "Too many failed attempts; slow down", minute_left
            )

    async def record(self, client: str) -> None:
        try:
            await self.store.count_failure(client)
        except StoreUnavailable:
            await self._local.count_failure(client)


def client_address(peer: str, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the last address
    in `X-Forwarded-For` that is not a trusted proxy (those before it are the client's word)."""
    if peer not in trusted or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer


_TICKET_IN_TEXT = re.compile(r"(ticket=)[^&\s\"']+")


class RedactTickets(logging.Filter):
    """Tickets are credentials: uvicorn logs request paths with their query, so cut them out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TICKET_IN_TEXT.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def redact_tickets_in_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTickets) for f in logger.filters):
            logger.addFilter(RedactTickets())


class Gatekeeper:
    """The tenants in force, and the checks every entry point makes against them."""

    def __init__(
        self, settings: Settings, limits: LimitStore, audit: Audit, metrics: Metrics
    ) -> None:
        self.path = Path(settings.tenants_file) if settings.tenants_file else None
        self.limits = limits
        self.audit = audit
        self.metrics = metrics
        self.ticket_ttl_s = settings.ticket_ttl_s
        self.reload_s = settings.tenants_reload_s
        self.trusted = frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p)
        self.failures = FailureLimiter(settings.auth_failures_per_minute, limits)
        self.directory: TenantDirectory | None = None
        self._stamp: tuple[int, int] | None = None
        self._secret = secrets.token_bytes(32)  # one process; the file's secret is shared
        self._live: dict[Revocable, str] = {}  # open connections -> their key id
        if self.path is not None:
            self._load(self.path)

    @property
    def open(self) -> bool:
        return self.directory is None

    def _load(self, path: Path) -> None:
        stat = path.stat()
        tenants = load_tenants(path)
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self.directory = TenantDirectory(tenants)
        if tenants.ticket_secret is not None:
            self._secret = bytes.fromhex(tenants.ticket_secret)

    # -- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the tenants file again; a bad file keeps the tenants in force (and says so).
        Open connections on keys that are gone end."""
        if self.path is None:
            return
        try:
            self._load(self.path)
        except (TenantsFileError, OSError) as exc:
            log.error("tenants file not reloaded, keeping the previous one: %s", exc)
            return
        assert self.directory is not None
        keys = self.directory.key_ids
        revoked = [connection for connection, key in self._live.items() if key not in keys]
        log.info("tenants file reloaded: %d keys; ending %d connections", len(keys), len(revoked))
        for connection in revoked:
            connection.revoke("API key revoked")

    def _changed(self) -> bool:
        assert self.path is not None
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return (stat.st_mtime_ns, stat.st_size) != self._stamp

    async def watch(self) -> None:
        """Reload on SIGHUP and when the file changes, until cancelled."""
        if self.path is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            while True:
                await asyncio.sleep(self.reload_s)
                if self._changed():
                    self.reload()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)

    def register(self, connection: Revocable, identity: Identity) -> None:
        if not self.open:
            self._live[connection] = identity.key_id

    def unregister(self, connection: Revocable) -> None:
        self._live.pop(connection, None)

    # -- checks ------------------------------------------------------------------------------

    def client(self, caller: Caller) -> str:
        return client_address(caller.peer, caller.headers.get("x-forwarded-for"), self.trusted)

    async def authenticate(self, caller: Caller, entry: str, tickets_ok: bool = False) -> Identity:
        """The caller's identity, or `AuthFailure` (audited, counted). Awaits the shared store
        (failed attempts, tickets) for at most its deadline."""
        if self.directory is None:
            return OPEN
        client = self.client(caller)
        try:
            await self.failures.check(client)
            identity = await self._identify(caller.headers, caller.query, tickets_ok)
        except AuthFailure as failure:
            if failure.status == 401:
                await self.failures.record(client)
            self._refused(failure, client, None, entry)
            raise
        origin = caller.headers.get("origin")
        if origin is not None and origin not in identity.tenant.allowed_origins:
            refusal = AuthFailure(403, "forbidden", f"Origin {origin} is not allowed for this key")
            self._refused(refusal, client, identity, entry)
            raise refusal
        return identity

    def _refused(
        self, failure: AuthFailure, client: str, identity: Identity | None, entry: str
    ) -> None:
        self.metrics.auth_rejections.labels(failure.code).inc()
        self.audit.rejected(str(failure), failure.code, client, identity, entry)

    async def _identify(
        self, headers: Mapping[str, str], query: Mapping[str, str], tickets_ok: bool
    ) -> Identity:
        assert self.directory is not None
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else headers.get("x-api-key")
        ticket = query.get("ticket") if tickets_ok else None
        if key:
            identity = self.directory.identify(key)
            if identity is None:
                raise AuthFailure(401, "unauthorized", "Invalid or revoked API key")
            return identity
        if ticket:
            return await self._redeem(ticket)
        where = "or a ticket query parameter " if tickets_ok else ""
        raise AuthFailure(
            401,
            "unauthorized",
            f"API key required: Authorization: Bearer <key> or X-API-Key {where}".strip(),
        )

    async def _redeem(self, ticket: str) -> Identity:
        assert self.directory is not None
        try:
            claims = tickets.verify(self._secret, ticket, time.time())
        except tickets.TicketError as exc:
            raise AuthFailure(401, "unauthorized", f"Ticket refused: {exc}") from exc
        identity = self.directory.by_key_id(claims.key_id)
        if identity is None:
            raise AuthFailure(401, "unauthorized", "Ticket refused: its key was revoked")
        try:
            redeemed = await self.limits.redeem(claims.nonce, claims.expires_at)
        except StoreUnavailable as exc:  # its single use cannot be checked: refused, not failed
            raise AuthFailure(
                503, "store_unavailable", f"Ticket not checked: {exc}", STORE_RETRY_S
            ) from exc
        if not redeemed:
            raise AuthFailure(401, "unauthorized", "Ticket refused: already used")
        return identity

    def issue_ticket(self, identity: Identity) -> tuple[str, float]:
        expires_at = time.time() + self.ticket_ttl_s
        return tickets.issue(self._secret, identity.key_id, expires_at), self.ticket_ttl_s
