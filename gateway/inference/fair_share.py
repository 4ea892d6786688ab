"""Fair share between tenants on a host past capacity: who is held back, and by how much.

Round robin across tenants in the scheduler shares each request fairly, but that is not
enough once one tenant pushes the host past capacity: every process on the frames' path (the
gateway's event loop, Triton, the network's stub) is then saturated by that tenant's streams,
and a light tenant's frames queue in each of them. Measured on 2 cores (BENCHMARKS.md), 4
streams beside 160 of another tenant get a p99 of 55-90 ms, and still 95 ms when only the
heavy tenant's *dispatch* is slowed, because merely reading its audio saturates the loop.

So while the frames of tenants within their share are late, the tenants over their share
are throttled at both ends: their rows leave for Triton at a rate this policy sets, and
their connections are not read while they have rows waiting (the TCP backpressure that
`--max_queued_frames` applies, much earlier), so their excess costs no CPU at all. Their
streams fall behind and their new sessions get `busy`; nothing is dropped.

A tenant's share: each tenant with live streams in this gateway gets an equal part; one with
more streams than the mean is over it. The rate follows the light tenants' p95 dispatch
latency over the last `window_s`, decided once a period: cut to `decrease` times what the
heavy tenants took while it is above the bound (then judged on fresh frames only), grown by
`increase` while it is within, and let go once the heavy tenants take clearly less than it
allows (as when the light tenants leave: the others are then no longer over a share).

Two guards keep a host whose frames are late for other reasons (a slow model, a distant
Triton) from starving its busiest tenant: holding back starts only while rows wait beyond
what one request carries (the host is past capacity, not merely slow), and a hold that has
reached its floor with the light tenants still late helps nobody: it is let go, and not taken
up again for `rest_s`. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from gateway.inference.admission import Refusal
from gateway.inference.pacing import LatencyWindow, TokenBucket

# Heavy tenants are slowed, never stopped: one 30 fps stream's worth of rows per second.
FLOOR_ROWS_S = 30.0
# The limit is let go once the heavy tenants took less than this part of what it allowed.
RELEASE_USE = 0.5


class FairShare:
    """Live streams per tenant and light tenants' latencies in; a rate for the rest out."""

    def __init__(
        self,
        bound_s: float,
        *,
        burst_rows: int,
        period_s: float = 0.25,
        window_s: float = 1.0,
        min_samples: int = 8,
        decrease: float = 0.8,
        increase: float = 1.1,
        rest_s: float = 10.0,
    ) -> None:
        self.bound_s = bound_s  # 0: never throttle
        self.period_s = period_s
        self.window_s = window_s
        self.min_samples = min_samples
        self.decrease = decrease
        self.increase = increase
        self.rest_s = rest_s
        self.rate: float | None = None  # rows/s allowed to tenants over their share
        self._tenant_of: dict[Hashable, str] = {}
        self._streams: Counter[str] = Counter()
        self._total = 0  # streams of all tenants
        self._light = LatencyWindow(window_s)  # the light tenants' frames
        self._heavy_rows = 0  # rows heavy tenants took this period
        self._period_start: float | None = None
        self._bucket = TokenBucket(burst_rows)  # a throttled group's rows (one request at most)
        self._backlog = False  # rows waited beyond one request when last asked
        self._rest_until = -float("inf")  # no new hold before this

    # -- what the dispatcher tells it ---------------------------------------------------------

    def stream(self, owner: Hashable, tenant: str) -> None:
        """`owner` (a connection) streams for `tenant`; idempotent."""
        if owner not in self._tenant_of:
            self._tenant_of[owner] = tenant
            self._streams[tenant] += 1
            self._total += 1

    def ended(self, owner: Hashable) -> None:
        tenant = self._tenant_of.pop(owner, None)
        if tenant is not None:
            self._streams[tenant] -= 1
            self._total -= 1
            if not self._streams[tenant]:
                del self._streams[tenant]

    def observe(self, now: float, tenant: str, latency_s: float) -> None:
        """A live frame of `tenant` came back `latency_s` after it was ready."""
        if self.bound_s > 0 and self.contended and not self.over_share(tenant):
            self._light.add(now, latency_s)

    def taken(self, heavy_rows: int) -> None:
        """A request left carrying `heavy_rows` rows of tenants over their share."""
        self._heavy_rows += heavy_rows
        if self.rate is not None:
            self._bucket.take(heavy_rows)

    # -- what it answers ----------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """Some connection streams here."""
        return self._total > 0

    @property
    def contended(self) -> bool:
        """More than one tenant streams here: someone may be over a share."""
        return len(self._streams) > 1

    def over_share(self, tenant: str) -> bool:
        """More live streams than the mean of the tenants streaming here."""
        tenants = len(self._streams)
        return tenants > 1 and self._streams.get(tenant, 0) * tenants > self._total

    def tenant_over_share(self, owner: Hashable) -> bool:
        tenant = self._tenant_of.get(owner)
        return tenant is not None and self.over_share(tenant)

    @property
    def throttling(self) -> bool:
        return self.rate is not None

    def allowance(self, now: float, backlog: bool) -> int | None:
        """Rows the tenants over their share may take now; None: as many as they like.
        `backlog`: more rows wait than one request carries."""
        if self.bound_s <= 0:
            return None
        self._backlog = self._backlog or backlog
        self._control(now)
        if self.rate is None:
            return None
        return self._bucket.allowance(now, self.rate)

    def wait_s(self) -> float:
        """How long until the throttled tenants may take a row again."""
        if self.rate is None:
            return 0.0
        return self._bucket.wait_s(self.rate)

    def refusal(self, tenant: str) -> Refusal | None:
        """Why a new session of `tenant` is refused now, or None. Retry after the window:
        the soonest the hold can end is when the late frames it judged on are forgotten."""
        if self.rate is None or not self.over_share(tenant):
            return None
        message = (
            "Server busy: this tenant is over its fair share of a host past capacity "
            "(its streams are slowed so that other tenants' frames stay on time); retry later"
        )
        return Refusal(message, self.window_s)

    # -- the control loop ---------------------------------------------------------------------

    def _control(self, now: float) -> None:
        if self._period_start is None:
            self._period_start = now
        elapsed = now - self._period_start
        if elapsed < self.period_s:
            return
        taken = self._heavy_rows / elapsed
        backlog, self._backlog = self._backlog, False
        self._heavy_rows, self._period_start = 0, now
        light = self._light
        judged = light.forget(now) >= self.min_samples
        late = judged and light.percentile() > self.bound_s
        if late and self.rate == FLOOR_ROWS_S:
            self.rate, self._rest_until = None, now + self.rest_s  # holding back did not help
        elif late and (self.rate is not None or (backlog and now >= self._rest_until)):
            light.clear()  # the next decision sees only frames served under the new rate
            base = taken if self.rate is None else min(self.rate, taken)
            if self.rate is None:
                self._bucket.restart(now)
            self.rate = max(base * self.decrease, FLOOR_ROWS_S)
        elif self.rate is not None:
            if taken < self.rate * RELEASE_USE:
                self.rate = None  # the heavy tenants no longer ask for more than it allows
            elif judged:
                self.rate *= self.increase
