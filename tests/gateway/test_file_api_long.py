"""A 10-minute file through the batch API: bounded gateway memory, faster than real time.

Prints the measured figures (run with `-s` to see them). The audio is the speech fixture
repeated; what matters is the length. About 12 s on the 2-core dev host with the stand-in
network: kept in the default run; mark it `slow` if a heavier network makes it long.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile
from conftest import run_gateway

from a2f_client import animate_to_sync
from a2f_protocol.export_formats import iter_a2fb

MINUTES = 10
# Peak RSS growth allowed while animating: the file alone is 19 MB as PCM16 and 38 MB as
# float32, its windows would be 1.2 GB; a bounded pipeline stays far below either.
MAX_RSS_GROWTH_MB = 200


def rss_kb(pid: int, field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_ten_minutes_bounded_memory_and_faster_than_real_time(
    triton, speech_path: Path, tmp_path: Path
) -> None:
    speech, rate = soundfile.read(speech_path, dtype="int16")
    seconds = MINUTES * 60
    audio = np.resize(speech, seconds * rate)
    source = tmp_path / "ten_minutes.wav"
    soundfile.write(source, audio, rate, subtype="PCM_16")

    # A fresh process, stopped after this test: its peak RSS is this request's.
    with run_gateway(triton.grpc_url, log=tmp_path / "gateway.log") as gateway:
        pid = gateway.process.pid
        before = rss_kb(pid, "VmRSS")
        out = tmp_path / "ten_minutes.a2fb"
        started = time.perf_counter()
        info = animate_to_sync(source, out, url=gateway.http)
        elapsed = time.perf_counter() - started
        peak = rss_kb(pid, "VmHWM")

    frames = sum(1 for _ in iter_a2fb(out.read_bytes()))
    assert frames == info.frame_count == seconds * 60
    growth_mb = (peak - before) / 1024
    factor = seconds / elapsed
    print(
        f"\n10-minute file: {frames} frames in {elapsed:.1f} s = {factor:.1f}x real time; "
        f"gateway RSS {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB "
        f"(+{growth_mb:.0f} MB)"
    )
    assert growth_mb < MAX_RSS_GROWTH_MB
    assert factor > 1.0
