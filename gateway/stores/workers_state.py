"""What the workers' supervisor tells every worker about the set: written by it
(`gateway.processes.workers`) into the instance's run directory, read by `/health`.

The file is named by an environment variable that the supervisor sets before it starts the
workers, the way prometheus_client's multiprocess directory is handed down. It is replaced
whole (write, then rename), so a reader never sees half of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

WORKERS_STATE_VARIABLE = "A2F_WORKERS_STATE"


class WorkersState(msgspec.Struct, frozen=True, kw_only=True):
    """The supervisor's account of its workers."""

    workers: int  # how many it keeps running (`--workers`)
    running: int  # alive now
    restarts: int  # workers started again after an exit, since the supervisor started
    crash_loop: bool = False  # a worker exited too often and is no longer restarted
    last_exit: str = ""  # the latest worker exit, in words


def write_workers_state(path: Path, state: WorkersState) -> None:
    partial = path.with_suffix(".partial")
    partial.write_bytes(msgspec.json.encode(state))
    partial.replace(path)


def read_workers_state() -> WorkersState | None:
    """The supervisor's latest state; None in a gateway without one (a single process)."""
    path = os.environ.get(WORKERS_STATE_VARIABLE)
    if not path:
        return None
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=WorkersState)
    except (OSError, msgspec.DecodeError):
        return None
