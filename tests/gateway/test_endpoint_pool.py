"""The endpoint pool's policy against fake backends: no Triton, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pytest

from gateway.inference.contract import InferenceError, ModelContract, ProbeError, ProbeReport
from gateway.inference.endpoint_pool import EndpointPool, Rows
from gateway.inference.shared_inputs import Slot
from gateway.metrics import Metrics

CONTRACT = ModelContract(
    inputs=(("AUDIO", "FP32", (-1, 4)),),
    outputs=(("BLENDSHAPES", "FP32", (-1, 2)),),
    channels=("a", "b"),
)
OTHER_CONTRACT = ModelContract(CONTRACT.inputs, CONTRACT.outputs, channels=("a", "c"))
WINDOWS = np.zeros((3, 4), np.float32)


class FakeBackend:
    """Answers, fails, hangs or serves another contract, as a test sets it."""

    def __init__(self, url: str, contract: ModelContract = CONTRACT) -> None:
        self.url = url
        self.contract = contract
        # ok | slow (until released) | fail | down | hang | busy (probes hang, requests answer)
        self.mode = "ok"
        self.requests = 0
        self.probes = 0
        self.release = asyncio.Event()

    async def probe(self) -> ProbeReport:
        self.probes += 1
        if self.mode in ("hang", "busy"):
            await asyncio.Event().wait()
        if self.mode != "ok":
            raise ProbeError("model not ready")
        return ProbeReport(self.contract, {"a2f": "1", "url": self.url})

    async def infer(
        self, windows: Rows, parameters: Mapping[str, Rows], slot: Slot | None = None
    ) -> Rows:
        self.requests += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "fail":
            raise InferenceError("bad request")
        if self.mode == "down":
            raise InferenceError("unreachable", endpoint_fault=True)
        if self.mode == "slow":
            await self.release.wait()
        return np.full((windows.shape[0], 2), float(self.url[-1]), np.float32)

    async def close(self) -> None:
        pass


def pool_of(*backends: FakeBackend, timeout_s: float = 0.2) -> EndpointPool:
    return EndpointPool(
        backends,
        model="a2f",
        timeout_s=timeout_s,
        probe_interval_s=0.05,
        probe_timeout_s=0.1,
        metrics=Metrics(),
    )


def statuses(pool: EndpointPool) -> list[str]:
    return [report.status for report in pool.report()]


def test_requests_go_to_the_endpoint_with_fewest_outstanding_then_rotate() -> None:
    async def run() -> None:
        a, b = FakeBackend("a:1"), FakeBackend("b:2")
        pool = pool_of(a, b, timeout_s=5)
        await pool.start()
        a.mode = b.mode = "slow"
        first = asyncio.create_task(pool.infer(WINDOWS, {}))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(pool.infer(WINDOWS, {}))
        await asyncio.sleep(0.01)
        assert (a.requests, b.requests) == (1, 1)  # the busy one was skipped
        assert [r.outstanding for r in pool.report()] == [1, 1]
        a.release.set()
        b.release.set()
        await asyncio.gather(first, second)
        a.mode = b.mode = "ok"
        for _ in range(4):
            await pool.infer(WINDOWS, {})
        assert (a.requests, b.requests) == (3, 3)  # idle endpoints take turns
        await pool.close()

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["fail", "down", "hang"])
def test_a_failed_or_timed_out_request_is_retried_once_elsewhere(mode: str) -> None:
    async def run() -> None:
        a, b = FakeBackend("a:1"), FakeBackend("b:2")
        pool = pool_of(a, b)
        await pool.start()
        a.mode = mode
        for _ in range(3):
            rows = await pool.infer(WINDOWS, {})
            assert rows.shape == (3, 2) and rows[0, 0] == 2  # b answered
        # An unreachable or hung endpoint leaves the rotation at once; a failed request only
        # has it probed again (the request may have been the bad one), which takes it out here.
        await asyncio.sleep(0.2)
        assert statuses(pool) == ["unhealthy", "healthy"]
        assert pool.ready
        await pool.close()

    asyncio.run(run())


def test_no_healthy_endpoint_fails_the_request_and_recovery_follows_the_probe() -> None:
    async def run() -> None:
        a, b = FakeBackend("a:1"), FakeBackend("b:2")
        pool = pool_of(a, b)
        await pool.start()
        a.mode = b.mode = "down"
        with pytest.raises(InferenceError, match="unreachable"):
            await pool.infer(WINDOWS, {})
        assert not pool.ready
        with pytest.raises(InferenceError, match="no healthy Triton endpoint"):
            await pool.infer(WINDOWS, {})
        b.mode = "ok"
        await asyncio.sleep(0.2)  # a few probe intervals
        assert statuses(pool) == ["unhealthy", "healthy"]
        assert (await pool.infer(WINDOWS, {}))[0, 0] == 2
        await pool.close()

    asyncio.run(run())


def test_a_hung_probe_marks_the_endpoint_unhealthy_within_its_timeout() -> None:
    async def run() -> None:
        a = FakeBackend("a:1")
        pool = pool_of(a)
        await pool.start()
        assert pool.ready
        a.mode = "hang"
        await asyncio.sleep(0.3)
        assert not pool.ready
        assert "no answer within" in pool.report()[0].reason
        a.mode = "ok"
        await asyncio.sleep(0.3)
        assert pool.ready
        await pool.close()

    asyncio.run(run())


def test_a_slow_probe_of_an_endpoint_that_answers_requests_keeps_it_in() -> None:
    """Overload: the probe waits behind real work, which is still being answered."""

    async def run() -> None:
        a = FakeBackend("a:1")
        pool = pool_of(a)
        await pool.start()
        a.mode = "busy"
        for _ in range(10):
            await pool.infer(WINDOWS, {})
            await asyncio.sleep(0.03)
        assert pool.ready
        await asyncio.sleep(0.3)  # no request answered for longer than the probe's deadline
        assert not pool.ready
        await pool.close()

    asyncio.run(run())


def test_an_endpoint_serving_another_contract_stays_out_and_versions_are_reported() -> None:
    async def run() -> None:
        a, b = FakeBackend("a:1"), FakeBackend("b:2", OTHER_CONTRACT)
        pool = pool_of(a, b)
        await pool.start()
        reports = pool.report()
        assert statuses(pool) == ["healthy", "unhealthy"]
        assert "contract differs" in reports[1].reason
        assert [r.versions["url"] for r in reports] == ["a:1", "b:2"]
        for _ in range(3):
            await pool.infer(WINDOWS, {})
        assert b.requests == 0
        await pool.close()

    asyncio.run(run())


def test_served_versions_are_those_of_the_healthy_endpoints() -> None:
    """What `/health` shows as served: every healthy endpoint's versions (two during a rollout
    or a rollback, comma separated), none of an endpoint out of the pool."""

    async def run() -> None:
        pool = pool_of(FakeBackend("b:2"), FakeBackend("a:1"), FakeBackend("c:3", OTHER_CONTRACT))
        await pool.start()
        assert pool.served_versions() == {"a2f": "1", "url": "a:1,b:2"}
        await pool.close()

    asyncio.run(run())
