"""The one place that sends frames to Triton: the scheduler's requests, paced and in flight.

Sessions `submit` jobs; a single loop turns the `FairScheduler`'s picks into Triton
requests. Two rules keep the request rate from growing with the number of streams:

* at most `in_flight` requests run at once, and
* a new request leaves at most once per `tick_s`, unless a full request is waiting.

An idle gateway therefore sends a frame at once; a busy one sends one request per tick that
carries every session's frames. Measured on 2 cores (BENCHMARKS.md), the per-request cost
in Triton (ensemble scheduling, two python-backend round trips) and in gRPC dominates the
per-window cost of the network, so fewer, fuller requests are what lets more streams fit;
the tick is a few milliseconds, a small part of the latency budget.

Frames of file uploads (the batch API's `Job.bulk`) take only the room that streams leave.
They go in requests of their own, beside the streams' `in_flight`: a live frame never waits
for a request slot or inside its request because of them. While any stream is open here,
one upload request at a time is out, of at most half a request's rows, at the rate
`gateway.inference.bulk_share` allows while the live frames stay on time; in Triton a live
request then waits behind at most that half request. With no stream open, uploads use
`IDLE_BULK_IN_FLIGHT` whole requests at once: nothing is there to be delayed. Upload rows
riding in the streams' requests instead (tried first) made a live frame wait for the upload
rows taken with it and for the slot an upload's request held: beside 8 uploads of 60 s, 16
streams' p95 was 158 ms against 43 ms with requests of their own (one run each on the
shared 2-core dev host, loaded by other runs; BENCHMARKS.md, "Uploads beside streams").

With tenants, the rows of those over their share of a host past capacity leave at the rate
`gateway.inference.fair_share` allows, and `holds` tells the WebSocket driver to stop reading their
connections meanwhile.

Each request's input buffer is built once: every slice's windows are cut from its session's
audio straight into it. Sessions whose requests carry postprocessing parameters share
requests with those that carry none: their rows get the neutral values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Hashable, Mapping

import numpy as np
import numpy.typing as npt

from gateway.inference.admission import Admission, Refusal
from gateway.inference.batch import Job
from gateway.inference.bulk_share import BulkShare
from gateway.inference.contract import InferenceError
from gateway.inference.endpoint_pool import EndpointPool
from gateway.inference.fair_share import FairShare
from gateway.inference.scheduler import FairScheduler, Slice
from gateway.inference.shared_inputs import SharedInputs, Slot
from gateway.metrics import Metrics

MIN_REFILL_S = 0.001  # a throttled group's next look is never sooner (no busy loop)
# With no stream to protect, uploads pipeline as streams' requests do: one request computing
# in Triton while the next is built.
IDLE_BULK_IN_FLIGHT = 2
log = logging.getLogger(__name__)


class Dispatcher:
    """Jobs in, Triton requests out; results go back through each job's `done`."""

    def __init__(
        self,
        triton: EndpointPool,
        scheduler: FairScheduler,
        *,
        window: int,
        offset: int,
        neutral: Mapping[str, npt.NDArray[np.float32]],
        in_flight: int,
        tick_s: float,
        metrics: Metrics,
        admission: Admission,
        fair: FairShare | None = None,
        bulk: BulkShare | None = None,
        shared: SharedInputs | None = None,
    ) -> None:
        self.triton = triton
        self.scheduler = scheduler
        self.window = window
        self.offset = offset
        self.neutral = dict(neutral)
        # 0: a request as soon as frames are ready, however many run (for comparisons).
        self.in_flight = in_flight if in_flight > 0 else sys.maxsize
        self.tick_s = tick_s if in_flight > 0 else 0.0
        self.metrics = metrics
        self.admission = admission
        self.fair = fair if fair is not None else FairShare(0.0, burst_rows=scheduler.max_rows)
        self.bulk = bulk if bulk is not None else BulkShare(0.0, burst_rows=scheduler.max_rows)
        self.shared = shared  # request audio in shared memory, when Triton is on this host
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._last_start = -float("inf")
        self._refill: asyncio.TimerHandle | None = None  # wakes the loop for throttled rows
        self._fair_rate: float | None = None  # as last reported
        self._review: asyncio.TimerHandle | None = None
        self._bulk_running: set[asyncio.Task[None]] = set()  # upload requests
        self._bulk_timer: asyncio.TimerHandle | None = None  # wakes the loop for uploads

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    async def close(self) -> None:
        tasks = [*self._running, *self._bulk_running, *([self._loop] if self._loop else [])]
        for timer in (self._refill, self._review, self._bulk_timer):
            if timer is not None:
                timer.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def submit(self, job: Job) -> None:
        # Only a live job that waits for no earlier job of its own session measures the host:
        # a client pushing faster than real time queues behind itself, not behind the others,
        # and the tails of sessions that all end at once are not live streams.
        measures = job.live and not self.scheduler.waiting(job.owner)
        job.ready_at = time.monotonic() if measures else -1.0
        if not job.bulk:  # an upload is no stream: it takes only the room streams leave
            self.fair.stream(job.owner, job.tenant)
        self.scheduler.add(job)
        self._wake.set()

    def withdraw(self, owner: Hashable) -> None:
        self.scheduler.withdraw(owner)
        self.fair.ended(owner)

    def refusal(self, tenant: str) -> Refusal | None:
        """Why new work of `tenant` (a session, an upload) is refused now as busy, or None:
        the host's live frames are late (admission), or the tenant is over its fair share of
        a host past capacity."""
        refused, reason = self.admission.refusal(time.monotonic()), "capacity"
        if refused is None:
            refused, reason = self.fair.refusal(tenant), "fair_share"
        if refused is not None:
            self.metrics.busy_rejections.labels(tenant, reason).inc()
        return refused

    def holds(self, owner: Hashable) -> bool:
        """Whether to stop reading this connection: its tenant is being throttled
        (`gateway.inference.fair_share`) and rows of it already wait."""
        fair = self.fair
        return fair.throttling and self.scheduler.waiting(owner) and fair.tenant_over_share(owner)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._start_uploads()
            while self.scheduler.pending_rows and len(self._running) < self.in_flight:
                wait = self._last_start + self.tick_s - time.monotonic()
                # A held-back tenant's waiting rows do not fill a request: still one per tick.
                full = self.scheduler.pending_rows >= self.scheduler.max_rows
                if wait > 0 and (not full or self.fair.throttling):
                    await asyncio.sleep(wait)
                    continue
                if not self._start_request():
                    self._refill_later()
                    break

    def _start_request(self) -> bool:
        # Its own frame: a local in the loop above would keep the last request's jobs, and
        # through them closed connections, alive until the next request.
        fair = self.fair
        now = time.monotonic()
        slices = self.scheduler.take(fair.allowance(now, self._backlog), fair.over_share)
        if fair.contended:
            fair.taken(sum(part.rows for part in slices if fair.over_share(part.job.tenant)))
        if fair.rate != self._fair_rate:
            self._report_fair_rate(fair.rate)
        if not slices:
            return False
        self._last_start = now
        task = asyncio.create_task(self._request(slices))
        self._running.add(task)
        task.add_done_callback(self._finished)
        self.metrics.dispatched_frames.labels("stream").inc(sum(part.rows for part in slices))
        return True

    def _start_uploads(self) -> None:
        """Upload requests, as many as `_upload_rows` allows now; if only the rate holds
        them back, a look again once it allows a row."""
        while rows := self._upload_rows():
            slices = self.scheduler.take_bulk(rows)
            taken = sum(part.rows for part in slices)
            self.bulk.taken(taken)
            self.metrics.dispatched_frames.labels("upload").inc(taken)
            task = asyncio.create_task(self._request(slices))
            self._bulk_running.add(task)
            task.add_done_callback(self._finished)
        if self.scheduler.bulk_rows and not self._bulk_running and self._bulk_timer is None:
            delay = max(self.bulk.wait_s(), MIN_REFILL_S)
            self._bulk_timer = asyncio.get_running_loop().call_later(delay, self._bulk_refilled)

    def _upload_rows(self) -> int:
        """Rows the next upload request may carry: 0 while the upload requests allowed are
        out, or the rate allows none now."""
        if not self.scheduler.bulk_rows:
            return 0
        if not self.fair.streaming:
            idle = len(self._bulk_running) < IDLE_BULK_IN_FLIGHT
            return self.scheduler.max_rows if idle else 0
        if self._bulk_running:
            return 0
        allowed = self.bulk.allowance(time.monotonic())
        half = max(self.scheduler.max_rows // 2, 1)
        return half if allowed is None else min(half, allowed)

    def _bulk_refilled(self) -> None:
        self._bulk_timer = None
        self._wake.set()

    @property
    def _backlog(self) -> bool:
        """More rows wait than one request carries: the host is past capacity."""
        return self.scheduler.pending_rows > self.scheduler.max_rows

    def _report_fair_rate(self, rate: float | None) -> None:
        if (rate is None) != (self._fair_rate is None):
            if rate is None:
                log.warning("fair share: tenants over their share are no longer held back")
            else:
                log.warning(
                    "fair share: frames of tenants within their share are late; tenants over "
                    "it are held to %.0f frames/s",
                    rate,
                )
        self._fair_rate = rate
        self.metrics.fair_share_rate.set(rate or 0.0)
        if rate is not None and self._review is None:
            # decided on again even when no request leaves (everyone went quiet or away)
            loop = asyncio.get_running_loop()
            self._review = loop.call_later(self.fair.period_s, self._reviewed)

    def _reviewed(self) -> None:
        self._review = None
        self.fair.allowance(time.monotonic(), self._backlog)
        self._report_fair_rate(self.fair.rate)

    def _refill_later(self) -> None:
        """Only throttled tenants' rows wait: look again once they may take one."""
        if self.scheduler.pending_rows and self._refill is None:
            delay = max(self.fair.wait_s(), MIN_REFILL_S)
            self._refill = asyncio.get_running_loop().call_later(delay, self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        self._wake.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._bulk_running.discard(task)
        self._wake.set()

    async def _request(self, slices: list[Slice]) -> None:
        slot = self.shared.acquire() if self.shared is not None else None
        try:
            await self._request_in(slices, slot)
        finally:
            if slot is not None and self.shared is not None:
                self.shared.release(slot)

    async def _request_in(self, slices: list[Slice], slot: Slot | None) -> None:
        started = time.perf_counter()
        try:
            outputs = await self.triton.infer(*self._inputs(slices, slot), slot)
        except InferenceError as exc:
            if len(slices) == 1:
                slices[0].job.fail(exc)
            else:  # one bad session must not fail the others: ask again slice by slice
                for part in slices:
                    with contextlib.suppress(InferenceError):
                        await self._request_alone(part)
            return
        self.metrics.triton_latency.observe(time.perf_counter() - started)
        self.metrics.triton_batch.observe(outputs.shape[0])
        row = 0
        for part in slices:
            part.job.deliver(part.start, outputs[row : row + part.rows])
            row += part.rows
        self._observe(slices)

    def _observe(self, slices: list[Slice]) -> None:
        """How late real-time frames are: what admission by capacity decides on."""
        now = time.monotonic()
        small = self.scheduler.session_rows
        for part in slices:
            if part.job.count <= small and part.job.ready_at >= 0:
                self.admission.observe(now, now - part.job.ready_at)
                self.fair.observe(now, part.job.tenant, now - part.job.ready_at)
                self.bulk.observe(now, now - part.job.ready_at)

    async def _request_alone(self, part: Slice) -> None:
        try:
            outputs = await self.triton.infer(*self._inputs([part], None))
        except InferenceError as exc:
            part.job.fail(exc)
            raise
        part.job.deliver(part.start, outputs)

    def _inputs(
        self, slices: list[Slice], slot: Slot | None
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        rows = sum(part.rows for part in slices)
        audio = (
            slot.windows(rows, self.window)
            if slot is not None
            else np.empty((rows, self.window), np.float32)
        )
        named = {name for part in slices for name in part.job.parameters}
        parameters = {name: np.empty((rows, self.neutral[name].size), np.float32) for name in named}
        row = 0
        for part in slices:
            end = row + part.rows
            part.job.batch.cut_windows(
                audio[row:end], slice(part.start, part.stop), self.window, self.offset
            )
            for name, buffer in parameters.items():
                buffer[row:end] = part.job.parameters.get(name, self.neutral[name])
            row = end
        self.metrics.triton_input_bytes.inc(
            audio.nbytes + sum(buffer.nbytes for buffer in parameters.values())
        )
        return audio, parameters
