"""The shared-memory slots request audio is built in (no Triton here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.inference.shared_inputs import SharedInputs, is_local_url


def test_slots_are_disjoint_views_and_the_region_is_unlinked_on_close() -> None:
    shared = SharedInputs(2, 4 * 10)
    first, second = shared.acquire(), shared.acquire()
    assert first is not None and second is not None and shared.acquire() is None
    first.windows(4, 10)[:] = 1.0
    second.windows(2, 10)[:] = 2.0
    assert first.values.sum() == 40 and second.values.sum() == 40
    assert second.offset == shared.slot_bytes
    shared.release(first)
    assert shared.acquire() is first
    assert Path("/dev/shm", shared.region).exists()
    shared.close()
    assert not Path("/dev/shm", shared.region).exists()


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("127.0.0.1:8001", True),
        ("localhost:8001", True),
        ("[::1]:8001", True),
        ("10.0.0.5:8001", False),
        ("triton:8001", False),
    ],
)
def test_only_a_triton_on_this_host_gets_shared_memory(url: str, local: bool) -> None:
    assert is_local_url(url) is local


def test_windows_fill_the_slot_in_place() -> None:
    shared = SharedInputs(1, 3 * 5)
    slot = shared.acquire()
    assert slot is not None
    view = slot.windows(3, 5)
    view[:] = np.arange(15, dtype=np.float32).reshape(3, 5)
    assert np.shares_memory(view, slot.values)
    assert slot.values[14] == 14
    del view, slot
    shared.close()
