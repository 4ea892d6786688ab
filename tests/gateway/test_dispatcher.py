"""The dispatcher merges sessions' frames into few Triton requests, invisibly (real Triton)."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from a2f_protocol.clock import FrameClock
from gateway.inference.admission import Admission
from gateway.inference.batch import Job, Outcome, SpanBatch
from gateway.inference.dispatcher import Dispatcher
from gateway.inference.scheduler import FairScheduler
from gateway.inference.shared_inputs import SharedInputs
from gateway.inference.triton_client import TritonClient
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.session.audio import AudioAccumulator
from gateway.session.config import emotion_parameters, neutral_parameters

INFO = ModelInfo.load(Path(__file__).resolve().parents[2] / "model_repository")


def span(frames: int, seed: int) -> SpanBatch:
    accumulator = AudioAccumulator(FrameClock(Fraction(30)), INFO.window, INFO.offset)
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, 16000).astype(np.float32)
    accumulator.append(audio)
    batch = accumulator.take_span(frames)
    assert batch is not None and batch.count == frames
    return batch


async def run_jobs(
    triton: TritonClient,
    in_flight: int,
    jobs: list[tuple[SpanBatch, dict]],
    admission: Admission | None = None,
    shared: SharedInputs | None = None,
) -> list[Outcome]:
    dispatcher = Dispatcher(
        triton,
        FairScheduler(max_rows=8, session_rows=3),
        window=INFO.window,
        offset=INFO.offset,
        neutral=neutral_parameters(INFO),
        in_flight=in_flight,
        tick_s=0.002,
        metrics=Metrics(),
        admission=admission or Admission(0.05),
        shared=shared,
    )
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in jobs]
    dispatcher.start()
    try:
        for i, (batch, parameters) in enumerate(jobs):
            done = futures[i]
            dispatcher.submit(Job(i, batch, parameters, lambda _, out, f=done: f.set_result(out)))
        return await asyncio.gather(*futures)
    finally:
        await dispatcher.close()


async def test_merged_requests_equal_separate_requests(triton) -> None:
    client = TritonClient(triton.grpc_url, "a2f")
    joy = emotion_parameters({"joy": 1.0}, None, INFO)
    jobs = [(span(1 + i % 5, i), joy if i % 2 else {}) for i in range(12)]
    # a bound no real request meets: every observed small job is "late"
    admission = Admission(1e-9, min_samples=1)
    try:
        merged = await run_jobs(client, 1, jobs, admission)
        alone = [await client.infer(windows(b), p) for b, p in jobs]
    finally:
        await client.close()
    for got, want, (batch, _) in zip(merged, alone, jobs, strict=True):
        assert isinstance(got, np.ndarray)
        assert got.shape == (batch.count, 52 + 15)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert admission.refusal(time.monotonic()) is not None  # the dispatcher reported them


async def test_audio_through_shared_memory_equals_audio_in_the_request(triton) -> None:
    client = TritonClient(triton.grpc_url, "a2f")
    shared = SharedInputs(2, 8 * INFO.window)
    client.share_inputs(shared)
    jobs = [(span(1 + i % 4, 40 + i), {}) for i in range(10)]
    try:
        through_memory = await run_jobs(client, 2, jobs, shared=shared)
        # Triton forgets the region (as when it restarts): the same request goes as bytes
        # and the region is registered again
        await client._client.unregister_system_shared_memory(shared.region)
        after_loss = await run_jobs(client, 2, jobs, shared=shared)
        status = await client._client.get_system_shared_memory_status(shared.region)
        alone = [await client.infer(windows(b), p) for b, p in jobs]
    finally:
        await client.close()
        shared.close()
    for got, again, want in zip(through_memory, after_loss, alone, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(again, want)
    assert len(status.regions) == 1


async def test_an_unreachable_triton_fails_every_job(triton) -> None:
    client = TritonClient("127.0.0.1:9", "a2f", timeout_s=2.0)
    try:
        outcomes = await run_jobs(client, 2, [(span(2, 0), {}), (span(3, 1), {})])
    finally:
        await client.close()
    assert all(isinstance(outcome, Exception) for outcome in outcomes)


def windows(batch: SpanBatch) -> np.ndarray:
    out = np.empty((batch.count, INFO.window), np.float32)
    batch.cut_windows(out, slice(None), INFO.window, INFO.offset)
    return out
