"""What git tracks stays source-sized: output committed by mistake (profiler dumps of 3-10 MB
each once made up 91 % of the tracked bytes and pushed the GPU kit past its 60 MiB bound) fails
here instead of in a kit build."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LARGE = 1_000_000  # bytes: a tracked file over this must be named below
ALLOWED_LARGE = frozenset({"model_repository/a2f_net/1/model.onnx"})  # the network's weights
# About 1.5 times the tracked total when this test was written (5.3 MB): room to grow, not
# room for a dump.
TOTAL_BOUND = 8_000_000


def tracked_sizes() -> dict[str, int]:
    """Every tracked path and its size as git stores it (the index, not the working tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--stage"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    entries = [line.split("\t", 1) for line in listed.split("\0") if line]
    # Submodules (mode 160000) are commits, not files.
    objects = {path: meta.split()[1] for meta, path in entries if not meta.startswith("160000")}
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectname) %(objectsize)"],
        cwd=ROOT, input="\n".join(objects.values()).encode(), capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    by_object = dict(line.split() for line in sizes.splitlines())
    return {path: int(by_object[obj]) for path, obj in objects.items()}


def test_large_tracked_files_are_only_the_allowed_ones() -> None:
    sizes = tracked_sizes()
    large = {path: size for path, size in sizes.items() if size > LARGE}
    assert set(large) <= ALLOWED_LARGE, (
        f"tracked files over {LARGE} bytes that are not in ALLOWED_LARGE: "
        f"{ {p: s for p, s in large.items() if p not in ALLOWED_LARGE} } (output? ignore it)"
    )


def test_the_tracked_total_stays_under_its_bound() -> None:
    total = sum(tracked_sizes().values())
    assert 0 < total <= TOTAL_BOUND, f"{total} tracked bytes, bound {TOTAL_BOUND}"
