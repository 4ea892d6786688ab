"""Whether a process id names a live process: how leftovers of a process killed outright (a
session-table slot, a run directory) are told from those of one still running."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: checks only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
