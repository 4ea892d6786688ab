"""What git tracks stays source-sized: output committed by mistake (profiler dumps of 3-10 MB
each once made up 91 % of the tracked bytes and pushed the GPU kit past its 60 MiB bound) fails
here instead of in a kit build."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LARGE = 1_000_000  # bytes: a tracked file over this must be a network version's weights
WEIGHTS = re.compile(r"model_repository/a2f_net/[0-9]+/model\.onnx")
WEIGHTS_BOUND = 5_000_000  # per version: the model's own budget
# The served version and the one kept for rollback (and one in the making): older ones go.
MAX_VERSIONS = 3
# Everything but the weights: about 1.5 times the tracked source when this bound was set
# (3.2 MB): room to grow, not room for a dump.
SOURCE_BOUND = 5_000_000


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


def test_large_tracked_files_are_only_network_weights() -> None:
    large = {path: size for path, size in tracked_sizes().items() if size > LARGE}
    others = {path: size for path, size in large.items() if not WEIGHTS.fullmatch(path)}
    assert not others, f"tracked files over {LARGE} bytes: {others} (output? ignore it)"


def test_network_versions_stay_few_and_within_budget() -> None:
    weights = {path: size for path, size in tracked_sizes().items() if WEIGHTS.fullmatch(path)}
    assert 0 < len(weights) <= MAX_VERSIONS, f"{sorted(weights)}: at most {MAX_VERSIONS} versions"
    assert all(size <= WEIGHTS_BOUND for size in weights.values()), weights


def test_the_tracked_source_stays_under_its_bound() -> None:
    source = sum(s for path, s in tracked_sizes().items() if not WEIGHTS.fullmatch(path))
    assert 0 < source <= SOURCE_BOUND, (
        f"{source} tracked bytes besides weights, bound {SOURCE_BOUND}"
    )
