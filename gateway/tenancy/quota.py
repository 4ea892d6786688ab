"""Per-tenant limits: one connection's tenant policy, and audio charged in leases.

The ledgers live in a `LimitStore` (`gateway.stores`). Audio, and failed authentications per
client address, are counted in fixed calendar minutes: a tenant may use its
`audio_seconds_per_minute` in each, so a burst across a minute's end can reach twice that,
never more.

`TenantPolicy` is what the connection core asks about one tenant's connection: which
`StartSession` extensions it may use, its session limit, whether a push of audio fits its
rate; it also writes the audit lines and per-tenant metrics of the sessions it sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from a2f_protocol.messages import ProtocolError, SetEmotion, StartSession
from gateway.metrics import Metrics
from gateway.stores.base import MINUTE_S, LimitStore, SessionCounters
from gateway.tenancy.audit import Audit
from gateway.tenancy.tenants import Identity


class LeasedAudio:
    """A shared `LimitStore` asked for audio in blocks, not for every push.

    Each `PushAudio` (25 a second per stream) would otherwise be a round trip to the shared
    store. A process takes a lease of a tenant's minute (a tenth of it, at most `LEASE_S`, or
    what one push needs if more) and spends it locally. What a process leased and did not use
    by the minute's end is lost to the tenant: at most a lease per process and minute.
    """

    LEASE_S = 5.0

    def __init__(self, shared: LimitStore, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self._clock = clock
        self._held: dict[str, tuple[int, float]] = {}  # tenant -> (minute, seconds leased)

    def charge_audio(self, tenant: str, seconds: float, per_minute: float) -> float:
        minute = int(self._clock() // MINUTE_S)
        counted, held = self._held.get(tenant, (minute, 0.0))
        if counted != minute:
            held = 0.0
        if held < seconds:
            need = seconds - held
            lease = max(need, min(self.LEASE_S, per_minute / 10))
            retry = self.shared.charge_audio(tenant, lease, per_minute)
            if retry and lease > need:  # the minute's rest may still hold what this push needs
                lease = need
                retry = self.shared.charge_audio(tenant, lease, per_minute)
            if retry:
                self._held[tenant] = (minute, held)
                return retry
            held += lease
        self._held[tenant] = (minute, held - seconds)
        return 0.0

    def redeem(self, nonce: str, expires_at: float) -> bool:
        return self.shared.redeem(nonce, expires_at)

    def failures(self, client: str) -> tuple[int, float]:
        return self.shared.failures(client)

    def count_failure(self, client: str) -> None:
        self.shared.count_failure(client)


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
        refused = [name for name in used if name not in self.identity.tenant.extensions]
        if refused:
            raise ProtocolError(
                f"This key may not use {', '.join(refused)} (tenant {self.tenant_id})", "forbidden"
            )

    def refused(self, quota: str) -> None:
        self.metrics.quota_rejections.labels(self.tenant_id, quota).inc()
        self.audit.rejected(quota, "quota", self.client, self.identity, self.entry)

    def charge_audio(self, seconds: float) -> None:
        """Counts `seconds` of audio against the tenant's rate, or refuses them (`quota`)."""
        per_minute = self.identity.tenant.audio_seconds_per_minute
        if per_minute is None:
            return
        retry = self.limits.charge_audio(self.tenant_id, seconds, per_minute)
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
