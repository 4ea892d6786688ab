"""What every driver of the connection core does the same way, whatever its transport.

A driver (`gateway.drivers.websocket`, `gateway.drivers.ace_grpc`) owns one `Connection` and
carries out its actions: jobs go to the dispatcher, texts, frames and closes to the
transport's sender (through `_outgoing`), questions to the stores (`_asks`, answered in order
by `_answer` before the next client message is read), and the ticker runs while the core
wants ticks. The transport subclass reads its client, writes what `_outgoing` holds, and says
how it leaves when the process drains (`_say_goodbye`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from typing import Generic, TypeVar

from gateway.drain import Drain
from gateway.drivers.overdue import Overdue
from gateway.drivers.shared_state import StoreAction, carry_out, release_later
from gateway.inference.batch import Job, Outcome
from gateway.services import Services
from gateway.session.config import ServerProfile
from gateway.session.connection import (
    AcquireSlot,
    ChargeAudio,
    Close,
    Connection,
    ConnectionLimits,
    ReleaseSlot,
    SendFrames,
    SendText,
    Submit,
    Withdraw,
)
from gateway.tenancy.gatekeeper import OPEN
from gateway.tenancy.quota import TenantPolicy

Ending = TypeVar("Ending")  # how the transport's sender is told to end, besides a `Close`


class CoreDriver(Generic[Ending]):
    """One `Connection` and the queues between it, the stores and the transport's sender."""

    def __init__(
        self,
        services: Services,
        profile: ServerProfile,
        idle_timeout_s: float,
        drain: Drain,
        policy: TenantPolicy | None,
        protocol: str,
    ) -> None:
        self.services = services
        self.profile = profile
        self.idle_timeout_s = idle_timeout_s
        self.drain = drain
        self.policy = policy
        tenant = OPEN.tenant_id if policy is None else policy.tenant_id
        self.connection = Connection(
            services.model,
            profile,
            services.metrics,
            ConnectionLimits(services.max_queued_frames),
            tenant=tenant,
            protocol=protocol,
            tenant_hooks=policy,
            on_job_done=self._inference_done,
            refusal=lambda: services.dispatcher.refusal(tenant),
        )
        self._outgoing: deque[SendText | SendFrames | Close | Ending] = deque()
        self._asks: deque[StoreAction] = deque()  # for the stores, in order
        self._ready = asyncio.Event()  # something to send
        self._drained = asyncio.Event()  # units left the transport (or it ended)
        self._ticking = asyncio.Event()  # the core wants ticks
        self._leaving = False  # told to go: the goodbye is queued
        self._stalled = False  # the writes stalled: the sender was cancelled for it
        self._sender: asyncio.Task[object] | None = None  # while it runs (`_sending`)

    # -- the core's actions ------------------------------------------------------------------

    def _inference_done(self, job: Job, outcome: Outcome) -> None:
        self.connection.inference_done(job, outcome)
        self._act()

    def _act(self) -> None:
        dispatcher = self.services.dispatcher
        for action in self.connection.take_actions():
            match action:
                case Submit(job):
                    self._submitted(job)
                    dispatcher.submit(job)
                case Withdraw():
                    dispatcher.withdraw(self.connection)
                case SendText() | SendFrames() | Close():
                    self._outgoing.append(action)
                    self._ready.set()
                case ReleaseSlot(session_id) if self.connection.closed:
                    release_later(self.services.registry, session_id)  # no receiver to wait
                case AcquireSlot() | ChargeAudio() | ReleaseSlot():
                    self._asks.append(action)
        if self.connection.tick_period is not None:
            self._ticking.set()
        self._check_drain()

    def _idle(self) -> None:
        """The read in progress has waited `idle_timeout_s` for the client."""
        self.connection.idle(self.idle_timeout_s)
        self._act()

    def _submitted(self, job: Job) -> None:
        """A job goes to the dispatcher (a transport that tracks frames hooks in here)."""

    async def _answer(self) -> None:
        """The stores' answers to the connection's questions, in order."""
        self._act()
        while self._asks:
            ask = self._asks.popleft()
            await carry_out(ask, self.connection, self.services.registry, self.policy)
            self._act()

    # -- sending -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sending(self) -> Iterator[Overdue]:
        """Around the sender task's loop, the deadline for its writes: once a batch of them
        has waited `send_timeout_s` (the client stopped reading), the task is cancelled,
        which `_written` tells from any other cancellation. On the way out the task is
        forgotten: a cancelled sender's exception holds its frames, and through them this
        driver, which must not hold the task back (a cycle only the garbage collector would
        free)."""
        self._sender = asyncio.current_task()
        deadline = Overdue(self.services.send_timeout_s, self._stall)
        try:
            yield deadline
        finally:
            deadline.cancel()
            self._sender = None

    def _stall(self) -> None:
        self._stalled = True
        if self._sender is not None:
            self._sender.cancel()

    async def _written(self, deadline: Overdue, writes: Awaitable[None]) -> bool:
        """Whether `writes` (one item's) finished within the deadline; False: they stalled,
        the client stopped reading (counted as "too_slow")."""
        deadline.begin()
        try:
            await writes
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            sender = asyncio.current_task()
            assert sender is not None
            sender.uncancel()  # the deadline's cancellation, taken back
            self.services.metrics.errors.labels("too_slow").inc()
            return False
        deadline.end()
        return True

    async def _next_outgoing(self) -> SendText | SendFrames | Close | Ending:
        """What the transport's sender writes next, once there is something."""
        while not self._outgoing:
            self._ready.clear()
            await self._ready.wait()
        return self._outgoing.popleft()

    def _frames_sent(self, item: SendFrames) -> None:
        """`item`'s frames left: the counters, metrics and backpressure learn it."""
        count = len(item.frames)
        self.connection.sent(count)
        item.stats.queued_frames -= count
        item.stats.frames_sent += count
        metrics = self.services.metrics
        metrics.frames.inc(count)
        if not item.idle:
            metrics.frame_latency.observe(time.monotonic() - item.arrived)

    # -- draining and ending -----------------------------------------------------------------

    def _check_drain(self) -> None:
        """While draining: leave once the connection is idle or the grace period is over."""
        drain, connection = self.drain, self.connection
        if self._leaving or not drain.draining:
            return
        if (connection.session is None and connection.queued_units == 0) or drain.expired:
            self._say_goodbye()

    def _say_goodbye(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """The transport is gone: the core learns it, and only frees are still owed."""
        self.drain.unregister(self._check_drain)
        self.connection.connection_lost()
        self._act()
        self._outgoing.clear()
        for ask in self._asks:  # never carried out
            if isinstance(ask, ReleaseSlot):
                release_later(self.services.registry, ask.session_id)
        self._asks.clear()
