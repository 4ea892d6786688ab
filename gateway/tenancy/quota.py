"""Per-tenant limits: one connection's tenant policy, and audio charged in leases.

The ledgers live in a `LimitStore` (`gateway.stores`). Audio, and failed authentications per
client address, are counted in fixed calendar minutes: a tenant may use its
`audio_seconds_per_minute` in each, so a burst across a minute's end can reach twice that,
never more.

`TenantPolicy` is what a driver asks about one tenant's connection: which `StartSession`
extensions it may use, its session limit, whether a push of audio fits its rate; it also
writes the audit lines and per-tenant metrics of the sessions it sees.

While the shared store (Redis) cannot be reached, running sessions stream on for
`STORE_GRACE_S` on what this process counts itself (never past the tenant's rate in this
process), and that audio is charged to the tenant once the store answers again; after the
grace, audio is refused with `store_unavailable`, never with `quota`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from a2f_protocol.messages import ProtocolError, SetEmotion, StartSession
from gateway.metrics import Metrics
from gateway.stores.base import (
    MINUTE_S,
    STORE_RETRY_S,
    LimitStore,
    SessionCounters,
    StoreUnavailable,
    seconds_to_next_minute,
)
from gateway.tenancy.audit import Audit
from gateway.tenancy.tenants import Identity

# How long running sessions stream on uncounted by the shared store: long enough for a Redis
# restart or failover, short enough that an outage cannot hide a tenant's use for long.
STORE_GRACE_S = 60.0
STORE_UNAVAILABLE = "store_unavailable"


def store_error(refused: str, exc: StoreUnavailable) -> ProtocolError:
    """What a client is told when the shared store did not answer: not its fault, not quota."""
    return ProtocolError(
        f"{refused}: {exc}; retry in {STORE_RETRY_S:g} s",
        STORE_UNAVAILABLE,
        retry_after_s=STORE_RETRY_S,
    )


@dataclass(slots=True)
class _Lease:
    """One tenant's audio in this process and minute."""

    minute: int
    held: float = 0.0  # leased from the shared store and not spent yet
    leased: float = 0.0  # leased from the shared store in this minute
    refused_until: float = 0.0  # the store said the minute is full until then
    on_grace: float = 0.0  # streamed in this minute while the store was unreachable


class LeasedAudio:
    """A shared `LimitStore` asked for audio in blocks, not for every push, and never waited
    on for long.

    Each `PushAudio` (25 a second per stream) would otherwise be a round trip to the shared
    store. A process takes a lease of a tenant's minute (a tenth of it, at most `LEASE_S`, or
    what one push needs if more) and spends it locally; the next lease is asked for in the
    background once half of one is left, so a push rarely waits for the store. What a process
    leased and did not use by the minute's end is lost to the tenant: at most a lease per
    process and minute.

    A push that must wait waits at most `WAIT_S`; a store slower than that, or unreachable,
    puts the process on grace (`STORE_GRACE_S`, see the module): the audio is counted here and
    owed, and the owed seconds go first into the next charge that reaches the store (a
    charge that timed out after reaching it may be counted twice: the tenant's loss is at
    most one charge, never audio let through uncounted).
    """

    LEASE_S = 5.0
    # A push waits for the store at most this long (a healthy Redis answers in about a
    # millisecond): a stream's frames then come at most this much later than usual.
    WAIT_S = 0.05

    def __init__(
        self,
        shared: LimitStore,
        clock: Callable[[], float] = time.time,
        grace_s: float = STORE_GRACE_S,
    ) -> None:
        self.shared = shared
        self._clock = clock
        self.grace_s = grace_s
        self._leases: dict[str, _Lease] = {}
        self._owed: dict[str, float] = {}  # tenant -> seconds streamed on grace, not charged
        self._refills: dict[str, asyncio.Task[None]] = {}
        self._down_since: float | None = None  # the store's last failure to answer

    async def charge_audio(
        self, tenant: str, seconds: float, per_minute: float, owed: float = 0.0
    ) -> float:
        """`LimitStore.charge_audio`, from the lease where it can; `StoreUnavailable` only
        once the store has been unreachable for longer than the grace."""
        now = self._clock()
        if owed:
            self._owed[tenant] = self._owed.get(tenant, 0.0) + owed
        lease = self._lease(tenant, now)
        if lease.held < seconds and now >= lease.refused_until and self._down_since is None:
            await self._wait_for_lease(tenant, seconds, per_minute)
            now = self._clock()
            lease = self._lease(tenant, now)
        if now < lease.refused_until:
            return lease.refused_until - now
        if lease.held >= seconds:
            lease.held -= seconds
            if lease.held < min(self.LEASE_S, per_minute / 10) / 2:
                self._refill(tenant, 0.0, per_minute)  # ahead of the push that needs it
            return 0.0
        return self._on_grace(tenant, lease, seconds, per_minute, now)

    async def _wait_for_lease(self, tenant: str, seconds: float, per_minute: float) -> None:
        """At most `WAIT_S` for a lease that holds `seconds`, or for the store's no; the store
        counts as unreachable if it has not answered by then (the request goes on)."""
        try:
            async with asyncio.timeout(self.WAIT_S):
                while True:
                    lease = self._lease(tenant, self._clock())
                    short = seconds - lease.held
                    if short <= 0 or lease.refused_until or self._down_since is not None:
                        return
                    running = self._refills.get(tenant)
                    if running is None or running.done():
                        running = self._refill(tenant, short, per_minute)
                    await asyncio.shield(running)
        except TimeoutError:
            if self._down_since is None:
                self._down_since = self._clock()

    def _on_grace(
        self, tenant: str, lease: _Lease, seconds: float, per_minute: float, now: float
    ) -> float:
        """The store is unreachable: count the push here, or refuse it."""
        self._refill(tenant, 0.0, per_minute)  # the next attempt, fast while the store is down
        since = self._down_since if self._down_since is not None else now
        if now - since > self.grace_s:
            raise StoreUnavailable(f"the shared store has not answered for {now - since:.0f} s")
        if lease.leased + lease.on_grace + seconds > per_minute:  # over it in this process alone
            return seconds_to_next_minute(now)
        lease.on_grace += seconds
        self._owed[tenant] = self._owed.get(tenant, 0.0) + seconds
        return 0.0

    def _lease(self, tenant: str, now: float) -> _Lease:
        minute = int(now // MINUTE_S)
        lease = self._leases.get(tenant)
        if lease is None or lease.minute != minute:
            lease = self._leases[tenant] = _Lease(minute)
        return lease

    def _refill(self, tenant: str, need: float, per_minute: float) -> asyncio.Task[None]:
        """The tenant's lease being renewed (one request at a time per tenant)."""
        task = self._refills.get(tenant)
        if task is None or task.done():
            task = asyncio.create_task(self._renew(tenant, need, per_minute))
            self._refills[tenant] = task
        return task

    async def _renew(self, tenant: str, need: float, per_minute: float) -> None:
        lease_s = max(need, min(self.LEASE_S, per_minute / 10))
        owed = self._owed.pop(tenant, 0.0)
        try:
            retry = await self.shared.charge_audio(tenant, lease_s, per_minute, owed)
            if retry and need and lease_s > need:  # the minute's rest may still hold the push
                lease_s = need
                retry = await self.shared.charge_audio(tenant, lease_s, per_minute)
        except StoreUnavailable:
            if owed:
                self._owed[tenant] = self._owed.get(tenant, 0.0) + owed
            if self._down_since is None:
                self._down_since = self._clock()
            return
        self._down_since = None
        now = self._clock()
        lease = self._lease(tenant, now)
        if not retry:
            lease.held += lease_s
            lease.leased += lease_s
        elif need:  # a push's need refused (a refused lease ahead of time says nothing)
            lease.refused_until = now + retry

    async def settle(self) -> None:
        """Charge what was streamed on grace for tenants with no push since to carry it (their
        sessions ended during the outage); `StoreUnavailable` while the store does not answer."""
        for tenant in list(self._owed):
            owed = self._owed.pop(tenant)
            try:  # nothing asked beyond what is owed: a zero rate refuses it and counts the debt
                await self.shared.charge_audio(tenant, 0.0, 0.0, owed)
            except StoreUnavailable:
                self._owed[tenant] = self._owed.get(tenant, 0.0) + owed
                raise

    async def redeem(self, nonce: str, expires_at: float) -> bool:
        return await self.shared.redeem(nonce, expires_at)

    async def failures(self, client: str) -> tuple[int, float]:
        return await self.shared.failures(client)

    async def count_failure(self, client: str) -> None:
        await self.shared.count_failure(client)


def quota_error(message: str, retry_after_s: float) -> ProtocolError:
    return ProtocolError(message, "quota", retry_after_s=round(retry_after_s, 3))


class TenantPolicy:
    """One authenticated connection's tenant: limits, extensions, audit and metrics."""

    def __init__(
        self,
        identity: Identity,
        client: str,
        limits: LimitStore,
        audit: Audit,
        metrics: Metrics,
        entry: str = "websocket",
    ) -> None:
        self.identity = identity
        self.entry = entry
        self.client = client
        self.limits = limits
        self.audit = audit
        self.metrics = metrics
        self.session_limit = identity.tenant.max_sessions

    @property
    def tenant_id(self) -> str:
        return self.identity.tenant_id

    def check(self, request: StartSession | SetEmotion) -> None:
        """Refuses (`forbidden`) the extensions the tenant may not use."""
        used = []
        if request.emotions or request.emotion_strength is not None:
            used.append("emotions")
        if isinstance(request, StartSession):
            if request.channels is not None:
                used.append("channels")
            if request.postprocess is not None:
                used.append("postprocess")
            if request.idle:
                used.append("idle")
        refused = [name for name in used if name not in self.identity.tenant.extensions]
        if refused:
            raise ProtocolError(
                f"This key may not use {', '.join(refused)} (tenant {self.tenant_id})", "forbidden"
            )

    def refused(self, quota: str) -> None:
        self.metrics.quota_rejections.labels(self.tenant_id, quota).inc()
        self.audit.rejected(quota, "quota", self.client, self.identity, self.entry)

    async def charge_audio(self, seconds: float) -> None:
        """Counts `seconds` of audio against the tenant's rate, or refuses them (`quota`, or
        `store_unavailable` past the grace of an unreachable store)."""
        per_minute = self.identity.tenant.audio_seconds_per_minute
        if per_minute is None:
            return
        try:
            retry = await self.limits.charge_audio(self.tenant_id, seconds, per_minute)
        except StoreUnavailable as exc:
            raise store_error("Audio not counted, so refused", exc) from exc
        if retry:
            self.refused("audio_rate")
            raise quota_error(
                f"Quota: {per_minute:g} audio seconds per minute for this tenant; "
                f"audio refused, retry in {retry:.1f} s",
                retry,
            )

    def session_started(self, session_id: str) -> None:
        self.metrics.tenant_sessions.labels(self.tenant_id).inc()
        self.audit.session("session_start", session_id, self.client, self.identity)

    def session_ended(
        self, session_id: str, stats: SessionCounters, sample_rate: int, frames: int
    ) -> None:
        seconds = stats.audio_samples / sample_rate
        tenant = self.tenant_id
        self.metrics.tenant_audio_seconds.labels(tenant).inc(seconds)
        self.metrics.tenant_frames.labels(tenant).inc(frames)
        self.metrics.tenant_errors.labels(tenant).inc(stats.errors)
        self.audit.session(
            "session_end",
            session_id,
            self.client,
            self.identity,
            audio_seconds=round(seconds, 3),
            frames=frames,
            errors=stats.errors,
        )
