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


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (Triton's python stubs)."""
    tree = _children()
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        fields = _stat_fields(pid)
        if fields is not None:
            # utime and stime are fields 14 and 15 of stat; index 11/12 after the name.
            total += (int(fields[11]) + int(fields[12])) / _TICKS
        pending.extend(tree.get(pid, ()))
    return total


def cpu_snapshot(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree."""
    return {name: tree_cpu_seconds(pid) for name, pid in roots.items()}
