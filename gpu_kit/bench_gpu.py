"""`make bench` on a GPU host, with the GPU's utilisation next to every level.

`python -m gpu_kit.bench_gpu [--workers N] [--levels ...] [--seconds S] [--budget S]`

Runs ``loadtest.bench`` for the shipped stack at 30 fps: embedded Triton (which picks the
pytorch flavour when PyTorch sees a CUDA device; this refuses to start otherwise) and
``--workers`` gateway processes, ramping real-time streams until p99 <= 30 ms or nothing-lost
fails. Meanwhile ``nvidia-smi`` samples the GPU (this Triton build may lack GPU metrics);
every table row gets the mean utilisation and the peak memory over the interval since the
row before it, that is over that level's run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from a2f_triton.launch import torch_sees_cuda

# Levels for one GPU host, past the 1,000-stream goal; the ramp stops at the first failure.
LEVELS = (64, 128, 256, 512, 768, 1024, 1280, 1536, 2048)
SAMPLE_MS = 500
GPU_HEADER = " GPU util % | GPU mem MiB |"
GPU_RULE = "---:|---:|"


class GpuSampler:
    """``nvidia-smi`` in loop mode on its own thread: (monotonic time, util %, memory MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.process: subprocess.Popen[str] | None = None
        if shutil.which("nvidia-smi") is None:
            return
        self.process = subprocess.Popen(
            [
                "nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits", f"--loop-ms={SAMPLE_MS}",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            values = [v.strip() for v in line.split(",")]
            try:
                util, memory = float(values[0]), float(values[1])
            except (ValueError, IndexError):
                continue
            self.samples.append((time.monotonic(), util, memory))

    def between(self, start: float, end: float) -> str:
        window = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not window:
            return " - | - |"
        mean = sum(u for u, _ in window) / len(window)
        return f" {mean:.0f} | {max(m for _, m in window):.0f} |"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def annotate(line: str, gpu: str) -> str:
    """A bench table line with the GPU columns appended."""
    stripped = line.rstrip("\n")
    if stripped.startswith("| stack |"):
        return stripped + GPU_HEADER
    if stripped.startswith("|---"):
        return stripped + GPU_RULE
    return stripped + gpu


def with_gpu_columns(lines: list[str], levels: list[str]) -> list[str]:
    """The bench report with the GPU columns: its i-th row ran as the i-th level."""
    out, row = [], 0
    for line in lines:
        if line.startswith("| triton"):
            line = annotate(line, levels[row] if row < len(levels) else " - | - |")
            row += 1
        elif line.startswith(("| stack |", "|---")):
            line = annotate(line, "")
        out.append(line.rstrip("\n"))
    return out


def run(args: argparse.Namespace) -> int:
    if not torch_sees_cuda():
        print("error: PyTorch sees no CUDA device; this benchmark is for a GPU host")
        return 1
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "loadtest.bench", "--stacks", "triton", "--fps", "30",
        "--workers", str(args.workers), "--levels", *map(str, args.levels),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--trials", "1",
        "--ceiling-seconds", "1", "--a-streams", "0", "--budget", str(args.budget), "--out", str(out),
    ]  # fmt: skip
    print(f"$ {' '.join(command)}", flush=True)
    sampler = GpuSampler()
    levels: list[str] = []  # GPU columns of each level, in the order bench ran them
    since = time.monotonic()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if line.startswith("# make bench"):
                break  # the final report: printed below with the GPU columns
            if line.lstrip().startswith("| triton"):
                now = time.monotonic()
                levels.append(sampler.between(since, now))
                line, since = annotate(line, levels[-1]), now
            print(line.rstrip("\n"), flush=True)
        child.stdout.read()  # the report is in the file too; let the child finish writing
    finally:
        code = child.wait()
        sampler.stop()
    if out.is_file():
        report = with_gpu_columns(out.read_text().splitlines(), levels)
        if sampler.samples:
            peak = max(u for _, u, _ in sampler.samples)
            report.append(f"- GPU (nvidia-smi every {SAMPLE_MS} ms): peak utilisation {peak:.0f}%")
        out.write_text("\n".join(report) + "\n")
        print("\n".join(report), flush=True)
        print(f"report: {out}")
    return code


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=6, help="gateway processes")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--seconds", type=float, default=8.0, help="per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--budget", type=float, default=200.0, help="the ramp, seconds")
    parser.add_argument("--out", default="../results/bench-gpu.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
