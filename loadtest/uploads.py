"""Uploads beside streams: part of `make bench`, and on its own `python -m loadtest.uploads`.

Tenant U sends `--files` audio files of `--file-seconds` each at once through
`POST /v1/animate` while tenant S streams `--streams` real-time streams, against one gateway
with a tenants file. The uploads' frames go through the dispatcher in the room the streams'
frames leave (`gateway.inference.dispatcher`), so the streams should keep the latency goal and
lose nothing while every upload completes. The streams run through `loadtest.drive` (the same
accounting and CPU watch as `make bench`) and start first; the uploads start once the
streams' latencies are being kept, and the streams go on for `--upload-run-seconds`,
which should outlast the uploads. An upload refused as busy (503 with `Retry-After`: the
streams' frames are late) is sent again then, as a client would, and counted. Prints the streams' row as one JSON line, with every upload's completion
and the upload throughput (audio seconds per wall-clock second) under `"uploads"`, then a
summary line:

    python -m loadtest.uploads --files 8 --file-seconds 60 --upload-streams 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

from a2f_client import A2FError, ServerError, animate
from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from loadtest.accounting import MODEL_REPOSITORY, SPEECH_FILE, passed
from loadtest.stack import RUN_DIR, bearer, driver_result, start_driver, tenants_stack

STACK = "streams beside uploads"
START_DELAY_S = 1.0  # the driver connects its streams and starts them this long after launch
MAX_REFUSALS = 5  # an upload refused as busy (503, 429) is sent again this many times at most


def upload_file(source: Path, seconds: float) -> Path:
    """`seconds` of the speech fixture looped, as a 16 kHz PCM16 WAV file."""
    speech, rate = soundfile.read(source, dtype="int16")
    if rate != MODEL_SAMPLE_RATE:
        raise ValueError(f"{source} is {rate} Hz; the uploads are 16 kHz")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = RUN_DIR / f"upload-{seconds:g}s.wav"
    soundfile.write(path, np.resize(speech, round(seconds * rate)), rate, subtype="PCM_16")
    return path


async def _one(body: bytes, url: str, key: str, fps: int, started: float) -> dict:
    """One upload, sent again after `Retry-After` when refused as busy, as a client would."""
    refused = 0
    while True:
        try:
            animation = await animate(body, url=url, format="a2fb", api_key=key, fps=fps)
        except ServerError as exc:
            if exc.retry_after_s is None or refused == MAX_REFUSALS:
                return {"error": f"{type(exc).__name__}: {exc}", "refused": refused}
            refused += 1
            await asyncio.sleep(exc.retry_after_s)
            continue
        except A2FError as exc:  # the client's every other failure: this upload's result
            return {"error": f"{type(exc).__name__}: {exc}", "refused": refused}
        frames = int(animation.weights.shape[0])
        return {"done_s": time.monotonic() - started, "frames": frames, "refused": refused}


async def _all(path: Path, files: int, url: str, key: str, fps: int) -> tuple[list[dict], float]:
    body = path.read_bytes()
    started = time.monotonic()
    done = await asyncio.gather(*(_one(body, url, key, fps, started) for _ in range(files)))
    return list(done), time.monotonic() - started


def uploads_result(done: list[dict], wall_s: float, cpu_s: float, args: argparse.Namespace) -> dict:
    """Every upload's completion, and the throughput of those that completed."""
    expected = FrameClock(Fraction(args.fps)).frames_before(
        round(args.file_seconds * MODEL_SAMPLE_RATE)
    )
    complete = [d for d in done if d.get("frames") == expected]
    return {
        "files": args.files,
        "file_seconds": args.file_seconds,
        "fps": args.fps,
        "completed": len(complete),
        "done_s": [round(d["done_s"], 2) for d in complete],
        "errors": sorted({d["error"] for d in done if "error" in d})[:5],
        "refused": sum(d["refused"] for d in done),  # answers 503/429, each sent again
        "wall_s": wall_s,
        "audio_s_per_s": len(complete) * args.file_seconds / wall_s if complete else 0.0,
        "cpu_cores": {"uploader": cpu_s / wall_s if done else 0.0},
    }


def run(args: argparse.Namespace) -> dict:
    """One run: the streams' `make bench` row, the uploads' result under `"uploads"`."""
    path = upload_file(args.audio, args.file_seconds)
    with tenants_stack("uploads", ("streamer", "uploader"), args.fps, args.model_repository) as (
        triton,
        gateway,
        (stream_key, upload_key),
    ):
        watch = [f"--watch=gateway={gateway.process.pid}", f"--watch=triton={triton.pid}"]
        driver = start_driver(
            gateway.url, args.streams, args.fps, args, *bearer(stream_key), *watch
        )
        time.sleep(START_DELAY_S + args.warmup)  # the uploads fall in the measured interval
        cpu = time.process_time()
        done, wall_s = asyncio.run(_all(path, args.files, gateway.http, upload_key, args.fps))
        uploads = uploads_result(done, wall_s, time.process_time() - cpu, args)
        streams = driver_result(driver, args.streams, args)
    return {"stack": STACK, "streams": args.streams, "fps": args.fps, **streams, "uploads": uploads}


def verdict(streams: dict) -> bool:
    """Every upload complete, and the streams within the goal with nothing lost."""
    uploads = streams["uploads"]
    return uploads["completed"] == uploads["files"] and passed(streams)


def summary(streams: dict) -> str:
    """One line for the bench report."""
    uploads = streams["uploads"]
    seen = "failed: " + streams["failed"] if "failed" in streams else (
        f"p99 {streams['p99_ms']:.1f} ms, {streams['lost']} frames lost, "
        f"{streams['errors']} errors"
    )  # fmt: skip
    done = ", ".join(f"{s:.1f}" for s in uploads["done_s"]) or "none"
    errors = f"; errors: {'; '.join(uploads['errors'])}" if uploads["errors"] else ""
    return (
        f"- {uploads['files']} uploads of {uploads['file_seconds']:g} s at once beside "
        f"{streams['streams']} real-time streams of another tenant at {uploads['fps']} fps: "
        f"{uploads['completed']} of {uploads['files']} completed (after {done} s; "
        f"{uploads['refused']} refusals as busy, each sent again after Retry-After), "
        f"{uploads['audio_s_per_s']:.1f} audio s per wall s, uploader CPU "
        f"{uploads['cpu_cores']['uploader']:.2f} cores; the streams: {seen}{errors}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=8, help="uploads at once (0: none)")
    parser.add_argument("--file-seconds", type=float, default=60.0)
    parser.add_argument(
        "--upload-streams", type=int, default=16, help="real-time streams beside the uploads"
    )
    parser.add_argument(
        "--upload-run-seconds", type=float, default=40.0, help="the streams' run, > the uploads'"
    )


def scenario(args: argparse.Namespace, fps: int) -> argparse.Namespace:
    """`args` of `make bench` as this scenario's."""
    return argparse.Namespace(
        **{**vars(args), "fps": fps, "streams": args.upload_streams,
           "seconds": args.upload_run_seconds},
    )  # fmt: skip


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--audio", type=Path, default=SPEECH_FILE)
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    args = parser.parse_args(argv)
    return scenario(args, args.fps)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    streams = run(args)
    print(json.dumps(streams), flush=True)
    print(summary(streams), flush=True)
    return 0 if verdict(streams) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
