"""The gateway's Triton client merges concurrent calls into few requests, invisibly."""

from __future__ import annotations

import asyncio

import numpy as np

from gateway.triton_client import TritonClient

WINDOW = 8320


def windows(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (rows, WINDOW)).astype(np.float32)


async def test_merged_calls_equal_separate_requests(triton) -> None:
    merging = TritonClient(triton.grpc_url, "a2f", merge_in_flight=1)
    single = TritonClient(triton.grpc_url, "a2f", merge_in_flight=0)
    joy = {"EMOTION": np.eye(10, dtype=np.float32)[6], "EMOTION_STRENGTH": np.ones(1, np.float32)}
    calls = [(windows(1 + i % 3, i), joy if i % 2 else {}) for i in range(12)]
    try:
        merged = await asyncio.gather(*(merging.submit(w, p) for w, p in calls))
        alone = [await single.submit(w, p) for w, p in calls]
    finally:
        await merging.close()
        await single.close()
    for got, want, (w, _) in zip(merged, alone, calls, strict=True):
        assert got.shape == (w.shape[0], 52 + 15)
        np.testing.assert_allclose(got, want, atol=1e-5)


async def test_a_cancelled_call_does_not_disturb_the_others(triton) -> None:
    client = TritonClient(triton.grpc_url, "a2f", merge_in_flight=1)
    try:
        first = client.submit(windows(2, 0), {})
        gone = client.submit(windows(2, 1), {})  # waits behind `first`
        kept = client.submit(windows(3, 2), {})
        await asyncio.sleep(0)
        gone.cancel()
        results = await asyncio.gather(first, kept)
    finally:
        await client.close()
    assert [r.shape[0] for r in results] == [2, 3]
    assert gone.cancelled()
