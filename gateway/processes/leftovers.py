"""What gateway processes killed outright leave behind, and its removal.

A gateway's shared-memory region for Triton's inputs (`gateway.inference.shared_inputs`) and a
supervisor's run directory (session table, metrics files, state) are named for the process
that made them, which removes them when it stops. One killed with SIGKILL cannot: the
supervisor removes a dead worker's region at once, and every gateway removes, as it starts,
whatever on this host belongs to a process that no longer exists.
"""

from __future__ import annotations

import shutil
import tempfile
from multiprocessing import resource_tracker
from pathlib import Path

from gateway.inference.shared_inputs import REGION_PREFIX
from gateway.pids import alive

SHARED_MEMORY = Path("/dev/shm")
RUN_DIR_PREFIX = "a2f-gateway-"  # in the temporary directory, then the supervisor's PID


def run_dir_prefix(pid: int) -> str:
    return f"{RUN_DIR_PREFIX}{pid}-"


def _owner(name: str, prefix: str) -> int | None:
    """The PID in `<prefix><pid>-<token>`, or None for a name of another shape."""
    pid = name.removeprefix(prefix).split("-", 1)[0]
    return int(pid) if name.startswith(prefix) and pid.isdigit() else None


def _gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped: a killed worker whose
    supervisor died too is a zombie until init reaps it, which may take a second."""
    if not alive(pid):
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def remove_regions_of(pid: int, tracked: bool) -> list[str]:
    """Unlink the shared-memory regions of the process `pid` (gone); `tracked`: they are in
    this process's resource tracker (a worker it started), which is told, so it does not try
    and warn again when it stops. The names removed."""
    removed = []
    for path in SHARED_MEMORY.glob(f"{REGION_PREFIX}{pid}-*"):
        path.unlink(missing_ok=True)
        if tracked:
            resource_tracker.unregister(f"/{path.name}", "shared_memory")
        removed.append(path.name)
    return removed


def remove_leftovers() -> None:
    """Remove the shared-memory regions and run directories of gateways that are gone."""
    for path in SHARED_MEMORY.glob(f"{REGION_PREFIX}*"):
        owner = _owner(path.name, REGION_PREFIX)
        if owner is not None and _gone(owner):
            path.unlink(missing_ok=True)
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        owner = _owner(path.name, RUN_DIR_PREFIX)
        if owner is not None and _gone(owner) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
