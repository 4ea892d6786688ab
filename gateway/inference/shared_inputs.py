"""Request audio in POSIX shared memory, for a Triton on the same host to read in place.

Each streamed frame sends Triton a whole 8,320-sample float32 window (33 KB). Through gRPC
that is protobuf serialisation, HTTP/2 framing and loopback TCP on both sides: measured on
the 2-core development machine, 154 us of gateway CPU per window at 10 windows a request,
and 4.7 ms per request end to end. Written into a region Triton has registered, the request
carries only the region's name and offset: 37 us per window and 2.4 ms (BENCHMARKS.md).

The dispatcher cuts each request's windows straight into a free slot, so the audio is
copied once, from the session's buffer into the slot; the slot is free again when the
response is back. With no free slot (more requests in flight than slots) or no Triton on
this host, requests carry their audio as bytes, as before.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np
import numpy.typing as npt

from gateway.settings import is_loopback

# A region is named for its process (then a random token): whoever finds one whose process is
# gone may remove it (`gateway.processes.leftovers`).
REGION_PREFIX = "a2f-gateway-"


def is_local_url(url: str) -> bool:
    """Whether a `host:port` Triton URL is on this host (only then is shared memory shared)."""
    return is_loopback(url.rsplit(":", 1)[0].strip("[]"))


@dataclass(frozen=True, slots=True)
class Slot:
    """One request's input area: `offset` bytes into the region."""

    index: int
    offset: int
    values: npt.NDArray[np.float32]  # the whole slot, as float32

    def windows(self, rows: int, window: int) -> npt.NDArray[np.float32]:
        """The first `rows` windows of the slot, to be filled in place."""
        return self.values[: rows * window].reshape(rows, window)


class SharedInputs:
    """A shared-memory region of equal slots, each big enough for one request's audio."""

    def __init__(self, slots: int, slot_values: int) -> None:
        self.slot_bytes = slot_values * np.dtype(np.float32).itemsize
        # The name says whose it is; the token keeps two gateways of one process (tests) apart.
        name = f"{REGION_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._memory = shared_memory.SharedMemory(name, create=True, size=slots * self.slot_bytes)
        self.region = name  # Triton's name for the region
        self.key = f"/{name}"  # the shm_open key Triton maps
        self.byte_size = slots * self.slot_bytes
        everything: npt.NDArray[np.float32] = np.ndarray(
            (slots * slot_values,), np.float32, self._memory.buf
        )
        self._slots = [
            Slot(i, i * self.slot_bytes, everything[i * slot_values : (i + 1) * slot_values])
            for i in range(slots)
        ]
        self._free = list(reversed(range(slots)))

    def acquire(self) -> Slot | None:
        return self._slots[self._free.pop()] if self._free else None

    def release(self, slot: Slot) -> None:
        self._free.append(slot.index)

    def close(self) -> None:
        """Unmap and unlink the region (Triton must have unregistered it first)."""
        self._slots.clear()
        self._memory.close()
        self._memory.unlink()
