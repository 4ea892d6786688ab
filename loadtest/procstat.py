"""CPU time of process trees from /proc (Linux), for per-process CPU shares during a level."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may contain spaces: split after it.
    return text[text.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _tree_cpu(root: int, tree: dict[int, list[int]]) -> dict[int, float]:
    """User + system CPU seconds of `root` and of each live descendant (`tree`: children by
    parent, from `_children`), by PID."""
    seconds: dict[int, float] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        fields = _stat_fields(pid)
        if fields is not None:
            # utime and stime are fields 14 and 15 of stat; index 11/12 after the name.
            seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
        pending.extend(tree.get(pid, ()))
    return seconds


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (Triton's python stubs)."""
    return sum(_tree_cpu(root, _children()).values())


def component(pid: int) -> str:
    """What a process is: a Triton python backend stub is named for the model it runs (its
    first argument is `<repository>/<model>/<version>/model.py`), any other process for its
    executable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    program = Path(os.fsdecode(argv[0])).name
    if program == "triton_python_backend_stub" and len(argv) > 1:
        return Path(os.fsdecode(argv[1])).parent.parent.name
    return program or "?"


def cpu_snapshot(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree (`name`), and of its parts
    (`name/part`: for Triton, `tritonserver` and one part per python backend model)."""
    snapshot: dict[str, float] = {}
    tree = _children()  # one pass over /proc for every tree
    for name, root in roots.items():
        processes = _tree_cpu(root, tree)
        snapshot[name] = sum(processes.values())
        for pid, seconds in processes.items():
            key = f"{name}/{component(pid)}"
            snapshot[key] = snapshot.get(key, 0.0) + seconds
    return snapshot


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two snapshots (a part started in between counts from zero)."""
    return {key: seconds - before.get(key, 0.0) for key, seconds in after.items()}
