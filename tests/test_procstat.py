"""CPU of process trees by part: Triton's python backend stubs are told apart by their model
(real processes, read from /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.procstat import component, cpu_snapshot, spent


def test_a_python_backend_stub_is_named_for_its_model(tmp_path: Path) -> None:
    model = tmp_path / "repository" / "a2f_net" / "3" / "model.py"
    model.parent.mkdir(parents=True)
    model.write_text("import time\ntime.sleep(60)\n")
    stub = tmp_path / "triton_python_backend_stub"  # the name Triton's stub runs under
    stub.symlink_to(sys.executable)
    child = subprocess.Popen([str(stub), str(model), "region", "16777216"])
    try:
        deadline = time.monotonic() + 10
        while component(child.pid) != "a2f_net" and time.monotonic() < deadline:
            time.sleep(0.05)  # the exec is not done until the stub's command line shows
        assert component(child.pid) == "a2f_net"
        snapshot = cpu_snapshot({"triton": os.getpid()})
    finally:
        child.kill()
        child.wait()
    assert "triton/a2f_net" in snapshot
    # every other process is a part under its executable's name (here the test's interpreter)
    parts = {key: value for key, value in snapshot.items() if key.startswith("triton/")}
    assert len(parts) >= 2
    assert snapshot["triton"] == pytest.approx(sum(parts.values()))


def test_spent_counts_a_part_started_between_snapshots_from_zero() -> None:
    before = {"triton": 1.0, "triton/tritonserver": 1.0}
    after = {"triton": 3.0, "triton/tritonserver": 2.5, "triton/a2f_net": 0.5}
    assert spent(before, after) == {
        "triton": 2.0,
        "triton/tritonserver": 1.5,
        "triton/a2f_net": 0.5,
    }
