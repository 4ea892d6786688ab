"""Several Triton endpoints as one: health-checked, least-loaded first, one retry elsewhere.

Policy only: an endpoint is a `Backend` (the transport, `gateway.inference.triton_client.TritonClient`,
or a fake in the unit tests). Each endpoint is probed in the background (`Backend.probe`: server
and models ready, the contract, a one-window inference) every `probe_interval_s`, each probe
bounded by `probe_timeout_s` (one that times out while real requests are being answered says
the endpoint is busy, not gone); a failed request probes its endpoint again at once. A request
goes to the healthy endpoint with the fewest requests outstanding (ties: the one picked least
recently), bounded by `timeout_s`; if it fails or misses the deadline it is sent once more to
another healthy endpoint: requests are stateless windows, so losing one Triton costs latency,
not frames. Only when no endpoint is healthy does a caller see `InferenceError`.

Every endpoint must serve the contract (tensors and channel names) the first probed endpoint
served; one that differs is kept out of rotation. Model versions may differ (a rolling
upgrade) and are reported per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from gateway.inference.contract import (
    InferenceError,
    ModelContract,
    ProbeError,
    ProbeReport,
)
from gateway.inference.shared_inputs import Slot
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

Rows = npt.NDArray[np.float32]
T = TypeVar("T")
EndpointStatus = Literal["healthy", "unhealthy", "unknown"]


class Backend(Protocol):
    """One endpoint's transport."""

    url: str

    async def probe(self) -> ProbeReport: ...

    async def infer(
        self, windows: Rows, parameters: Mapping[str, Rows], slot: Slot | None = None
    ) -> Rows: ...

    async def close(self) -> None: ...


class EndpointReport(msgspec.Struct, frozen=True):
    """One endpoint as `/ready`, `/health` and operators see it."""

    url: str
    status: EndpointStatus
    reason: str  # why it is unhealthy; empty when healthy
    outstanding: int
    versions: dict[str, str]


@dataclass(eq=False)
class _Endpoint:
    backend: Backend
    status: EndpointStatus = "unknown"
    reason: str = "not probed yet"
    outstanding: int = 0
    last_pick: int = -1
    versions: dict[str, str] = field(default_factory=dict)
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    answered_at: float = -float("inf")  # loop time of the last request it answered

    def report(self) -> EndpointReport:
        return EndpointReport(
            self.backend.url, self.status, self.reason, self.outstanding, dict(self.versions)
        )


class EndpointPool:
    """Inference through whichever endpoint is healthy and least loaded."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        model: str,
        timeout_s: float,
        probe_interval_s: float,
        probe_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.metrics = metrics
        self._endpoints = [_Endpoint(backend) for backend in backends]
        self._contract: ModelContract | None = None
        self._picks = itertools.count()
        self._probers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Probe every endpoint once (so readiness is known at once), then keep probing."""
        await asyncio.gather(*(self._probe(endpoint) for endpoint in self._endpoints))
        self._probers = [asyncio.create_task(self._keep_probing(e)) for e in self._endpoints]

    async def close(self) -> None:
        for task in self._probers:
            task.cancel()
        await asyncio.gather(*self._probers, return_exceptions=True)
        await asyncio.gather(*(e.backend.close() for e in self._endpoints))

    @property
    def ready(self) -> bool:
        """At least one endpoint is healthy."""
        return any(e.status == "healthy" for e in self._endpoints)

    def report(self) -> list[EndpointReport]:
        return [endpoint.report() for endpoint in self._endpoints]

    def served_versions(self) -> dict[str, str]:
        """The model versions the healthy endpoints serve, as their probes read them (`a2f_net`:
        the network's version directory, `network`: its manifest's version): several, comma
        separated, while a rollout or a rollback is under way; empty while none is healthy."""
        served: dict[str, set[str]] = {}
        for endpoint in self._endpoints:
            if endpoint.status == "healthy":
                for model, version in endpoint.versions.items():
                    served.setdefault(model, set()).add(version)
        return {model: ",".join(sorted(served[model])) for model in sorted(served)}

    async def infer(
        self, windows: Rows, parameters: Mapping[str, Rows], slot: Slot | None = None
    ) -> Rows:
        """`[frames, 52 + 15]` for `windows` (see `TritonClient.infer`); a retry elsewhere
        reads the same shared `slot`, which stays untouched until this returns."""
        return await self._call(lambda backend: backend.infer(windows, parameters, slot))

    async def _call(self, request: Callable[[Backend], Awaitable[T]]) -> T:
        failed: _Endpoint | None = None
        error: InferenceError | None = None
        for _attempt in range(2):
            endpoint = self._pick(excluding=failed)
            if endpoint is None:
                break
            if failed is not None:
                self.metrics.triton_retries.inc()
            try:
                return await self._on(endpoint, request)
            except InferenceError as exc:
                failed, error = endpoint, exc
        if error is None:
            error = InferenceError("no healthy Triton endpoint")
        raise error

    async def _on(self, endpoint: _Endpoint, request: Callable[[Backend], Awaitable[T]]) -> T:
        endpoint.outstanding += 1
        url = endpoint.backend.url
        self.metrics.triton_endpoint_outstanding.labels(url).inc()
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await request(endpoint.backend)
            except TimeoutError as exc:
                raise InferenceError(
                    f"no answer from {url} within {self.timeout_s:g} s", endpoint_fault=True
                ) from exc
        except InferenceError as exc:
            self.metrics.triton_endpoint_requests.labels(url, "failed").inc()
            if exc.endpoint_fault:  # gone or hung: out of rotation until a probe passes
                self._set(endpoint, "unhealthy", str(exc))
            endpoint.recheck.set()
            raise
        finally:
            endpoint.outstanding -= 1
            self.metrics.triton_endpoint_outstanding.labels(url).dec()
        self.metrics.triton_endpoint_requests.labels(url, "ok").inc()
        endpoint.answered_at = asyncio.get_running_loop().time()
        return result

    def _pick(self, excluding: _Endpoint | None) -> _Endpoint | None:
        healthy = [e for e in self._endpoints if e.status == "healthy" and e is not excluding]
        if not healthy:
            return None
        chosen = min(healthy, key=lambda e: (e.outstanding, e.last_pick))
        chosen.last_pick = next(self._picks)
        return chosen

    async def _keep_probing(self, endpoint: _Endpoint) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the event is set, and the prober would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.probe_interval_s):
                    await endpoint.recheck.wait()
            endpoint.recheck.clear()
            await self._probe(endpoint)

    async def _probe(self, endpoint: _Endpoint) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                report = await endpoint.backend.probe()
        except TimeoutError:
            # Busy, not hung, if it answered real requests meanwhile: under overload the probe
            # waits in the same queues as they do, and taking the endpoint out would fail
            # every session it serves.
            waited = asyncio.get_running_loop().time() - endpoint.answered_at
            if waited > self.probe_timeout_s:
                reason = f"probe: no answer within {self.probe_timeout_s:g} s"
                self._set(endpoint, "unhealthy", reason)
            return
        except ProbeError as exc:
            self._set(endpoint, "unhealthy", f"probe: {exc}")
            return
        if self._contract is None:
            self._contract = report.contract
        endpoint.versions = dict(report.versions)
        if report.contract != self._contract:
            self._set(endpoint, "unhealthy", f"model contract differs: {report.contract}")
        else:
            self._set(endpoint, "healthy", "")

    def _set(self, endpoint: _Endpoint, status: EndpointStatus, reason: str) -> None:
        if status != endpoint.status:  # one line per change, not per probe
            if status == "healthy":
                log.info("triton endpoint %s healthy %s", endpoint.backend.url, endpoint.versions)
            else:
                log.warning("triton endpoint %s unhealthy: %s", endpoint.backend.url, reason)
        endpoint.status, endpoint.reason = status, reason
        self.metrics.triton_endpoint_healthy.labels(endpoint.backend.url).set(
            1 if status == "healthy" else 0
        )
