"""The host-wide `SessionStore`: one table of session slots that every worker process maps.

Its coroutines never suspend: a claim is a short `flock` and a few writes in memory, over
before an event loop could do anything else.

The table is a file (made by the supervisor in the instance's run directory) of a header and
`max_sessions` fixed-size records, mapped into each worker. A slot is claimed and freed under
an exclusive `flock` of the file, so `--max_sessions` holds for the whole host. Each record
names the worker that owns it; a record whose worker is gone (crashed, killed) is free again.
The owner writes its record's counters in place without the lock: one writer per record, and
an aligned 8-byte value is never seen half-written, so readers get a consistent count each.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.defaults import DEFAULT_TENANT
from gateway.metrics import WEBSOCKET
from gateway.pids import alive
from gateway.stores.base import SessionsReport, SessionStats, StoreState, tenant_full

MAGIC = b"A2FSESS1"
HEADER = struct.Struct("<8sq")  # magic, number of records
HEADER_BYTES = 64
ID_BYTES, TENANT_BYTES, PROTOCOL_BYTES = 64, 32, 16
COUNTERS = ("audio_samples", "frames_sent", "requests_in_flight", "queued_frames", "errors")
# owner pid (0: free), session id, tenant, protocol, started_at, sample rate, then the counters
RECORD = struct.Struct(f"<q{ID_BYTES}s{TENANT_BYTES}s{PROTOCOL_BYTES}sdq{len(COUNTERS)}q")
COUNTERS_OFFSET = RECORD.size - 8 * len(COUNTERS)
TENANT_OFFSET = 8 + ID_BYTES
INT64 = struct.Struct("<q")


class _Counter:
    """One int64 counter of a `SharedCounters` record, read and written in the mapped table."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.offset = COUNTERS_OFFSET + 8 * COUNTERS.index(name)

    def __get__(self, handle: SharedCounters, owner: type | None = None) -> int:
        value: int = INT64.unpack_from(handle.table, handle.record + self.offset)[0]
        return value

    def __set__(self, handle: SharedCounters, value: int) -> None:
        INT64.pack_into(handle.table, handle.record + self.offset, value)


class SharedCounters:
    """The counters of one session held in its record (a `SessionCounters`)."""

    __slots__ = ("record", "session_id", "table")

    audio_samples = _Counter()
    frames_sent = _Counter()
    requests_in_flight = _Counter()
    queued_frames = _Counter()
    errors = _Counter()

    def __init__(self, session_id: str, table: mmap.mmap, record: int) -> None:
        self.session_id = session_id
        self.table = table
        self.record = record


def create_table(path: Path, max_sessions: int) -> None:
    """A new table of `max_sessions` free slots at `path`."""
    header = HEADER.pack(MAGIC, max_sessions).ljust(HEADER_BYTES, b"\0")
    path.write_bytes(header + bytes(RECORD.size * max_sessions))


class HostSessionStore:
    """The slots in the table at `path` (see `create_table`), shared by every process mapping it."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("r+b")
        self._table = mmap.mmap(self._file.fileno(), 0)
        magic, self.max_sessions = HEADER.unpack_from(self._table, 0)
        if magic != MAGIC:
            raise ValueError(f"{path} is not a session table")
        self._mine: dict[str, int] = {}  # this process's sessions: id -> record offset

    def close(self) -> None:
        self._table.close()
        self._file.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def _records(self) -> Iterator[tuple[int, int]]:
        """(offset, owner pid) of every record, the slots of dead owners freed first.

        Call with the lock held."""
        for index in range(self.max_sessions):
            offset = HEADER_BYTES + index * RECORD.size
            (pid,) = INT64.unpack_from(self._table, offset)
            if pid and not alive(pid):
                INT64.pack_into(self._table, offset, 0)
                pid = 0
            yield offset, pid

    async def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
        protocol: str = WEBSOCKET,
    ) -> SharedCounters | None:
        name, owner, via = session_id.encode(), tenant.encode(), protocol.encode()
        # struct would cut them silently
        if len(name) > ID_BYTES or len(owner) > TENANT_BYTES or len(via) > PROTOCOL_BYTES:
            raise ValueError(
                f"session id, tenant or protocol longer than "
                f"{ID_BYTES}/{TENANT_BYTES}/{PROTOCOL_BYTES} bytes"
            )
        with self._locked():
            records = list(self._records())
            free = [offset for offset, pid in records if not pid]
            if not free:
                return None
            if tenant_limit is not None:
                field = owner.ljust(TENANT_BYTES, b"\0")
                start, stop = TENANT_OFFSET, TENANT_OFFSET + TENANT_BYTES
                held = sum(
                    self._table[offset + start : offset + stop] == field
                    for offset, pid in records
                    if pid
                )
                if held >= tenant_limit:
                    raise tenant_full(tenant_limit)
            RECORD.pack_into(
                self._table, free[0], os.getpid(), name, owner, via,
                time.time(), sample_rate, *(0 for _ in COUNTERS),
            )  # fmt: skip
        self._mine[session_id] = free[0]
        return SharedCounters(session_id, self._table, free[0])

    async def release(self, session_id: str) -> None:
        offset = self._mine.pop(session_id, None)
        if offset is None:
            return
        with self._locked():
            INT64.pack_into(self._table, offset, 0)

    def _live(self) -> list[SessionStats]:
        with self._locked():
            offsets = [offset for offset, pid in self._records() if pid]
            records = [RECORD.unpack_from(self._table, offset) for offset in offsets]
        return [
            SessionStats(
                session_id=session_id.rstrip(b"\0").decode(),
                tenant=tenant.rstrip(b"\0").decode(),
                protocol=protocol.rstrip(b"\0").decode(),
                worker_pid=pid,
                started_at=started_at,
                sample_rate=sample_rate,
                **dict(zip(COUNTERS, counters, strict=True)),
            )
            for pid, session_id, tenant, protocol, started_at, sample_rate, *counters in records
        ]

    async def count(self, tenant: str | None = None) -> int:
        return sum(tenant is None or stats.tenant == tenant for stats in self._live())

    async def report(self) -> SessionsReport:
        sessions = self._live()
        return SessionsReport(len(sessions), self.max_sessions, sessions)

    def state(self) -> StoreState:
        return StoreState("host")
