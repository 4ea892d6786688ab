"""`make bench`: concurrent real-time streams through the whole stack, next to the alternatives.

`python -m loadtest.bench [--quick]`

Starts everything itself on free loopback ports and stops it again (by PID, a time budget,
try/finally), then for each stack ramps the number of concurrent streams (each level
a fixed short run of `loadtest.drive`: real-time 40 ms chunks of the speech fixture) and
reports per level: streams, frames/s delivered, p50/p95/p99 added latency, frames lost,
errors, the two figures NVIDIA's NIM performance test reports (first-packet latency p50: a
stream's first frame after its first audio; frames/s per stream p50; the unpaced gRPC lines
give them counted the test's own way too) and the CPU (in cores) of the gateway, of tritonserver with its python-backend stubs,
and of the load generator. A run passes with p99 added latency <= 30 ms, nothing lost and
no errors; a level runs up to `--trials` times and passes when most of its runs do. The ramp
stops at the first level that fails, then tries the midpoint with the last level that passed.

Stacks, in the same run, on the same machine and audio:
* `triton`: the service as it ships (embedded Triton with dynamic batching + the gateway,
  which merges concurrent sessions' frames into few requests), at 30 and 60 fps;
* `grpc`: the same gateway at 30 fps through NVIDIA's gRPC API (`loadtest.drive_ace`, whose
  lean HTTP/2 client costs the shared cores what the WebSocket driver's does, not grpcio's
  twice that): real-time streams judged like the WebSocket's (the serving figure, its ratio
  to `triton`'s printed), then `grpc-unpaced` streams sending as fast as they can, as NVIDIA's NIM
  performance test does, at `--unpaced-levels` and the paced maximum, once each (throughput);
* `triton-merge1`: the same with one merged request in flight instead of two;
* `triton-nomerge`: the same, one Triton request per PushAudio (Triton's batcher only);
* `triton-nobatch`: no cross-session batching: Triton's dynamic batching and the gateway's
  merging both off;
* `naive`: `loadtest.naive_server`, ONNX Runtime per session per chunk;
* the raw ceiling: the network's windows/s in process with ONNX Runtime at its best batch;
* fair share (`loadtest.fairness`): tenant B's few streams beside tenant A's, which are more
  than the host can carry (`--a-streams`, 0: none), run until a majority agrees on B's verdict;
* uploads beside streams (`loadtest.uploads`): one tenant's `--files` uploads at once through
  `POST /v1/animate` beside `--upload-streams` real-time streams of another tenant (0 files:
  none), run until a majority agrees on the verdict (every upload complete, the streams
  within the goal with nothing lost).

`--quick` runs one level of the service at 30 fps, the same level over gRPC, a few unpaced
gRPC streams, then a small uploads-beside-streams run, and fails unless nothing was lost and
every upload completed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from a2f_triton.bench_triton import in_process_rate, in_process_session
from a2f_triton.gateway_process import run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import (
    LOOPBACK,
    accepts_connections,
    die_with_parent,
    free_port,
    running,
    terminate,
)
from a2f_triton.repository import NETWORK_WEIGHTS, manifest_path, network_directory
from prometheus_client.parser import text_string_to_metric_families

from a2f_protocol import ACE_FPS
from gateway.settings import Settings
from loadtest import fairness, uploads
from loadtest.accounting import LATENCY_GOAL_S, MODEL_REPOSITORY, SPEECH_FILE, passed
from loadtest.stack import RUN_DIR, STOP_GRACE_S, driver_result, start_driver, triton_server

MERGE_IN_FLIGHT = Settings().merge_in_flight  # the gateway's default
LEVELS = (4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 320)
RATE_BASE_STREAMS = 16  # the request-rate growth is measured from this level
FLOOD_CANARIES = 16  # real-time streams measured beside the flooding clients (loadtest.flood)
FLOOD_FPS = 30
FAIR_FPS = 30
UPLOAD_FPS = 30
# --quick's uploads run: small enough for its time promise, long enough to overlap the streams.
QUICK_UPLOADS = {"files": 2, "file_seconds": 10.0, "upload_streams": 4, "upload_run_seconds": 8.0}
GRPC_STACK = "grpc"  # real-time gRPC streams (loadtest.drive_ace) on the `triton` gateway
UNPACED_STACK = "grpc-unpaced"  # gRPC streams sent as fast as possible
DRIVERS = {
    GRPC_STACK: ("loadtest.drive_ace",),
    UNPACED_STACK: ("loadtest.drive_ace", "--unpaced"),
}  # the driver module and its flags by stack; the others are `loadtest.drive`'s
UNPACED_LEVELS = (1, 8, 32)
QUICK_UNPACED_STREAMS = 4
SETTLE_S = 3.0  # before each run; more than admission's 2 s window (gateway.inference.admission)
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Target:
    """A started server for one frame rate: its URL and the process trees to watch."""

    url: str
    watch: dict[str, int]
    triton_http: str | None = None
    grpc: str | None = None  # host:port of its ACE gRPC API
    metrics: str | None = None  # the gateway's Prometheus endpoint


@contextmanager
def gateway(
    triton: EmbeddedTriton, fps: int, merge_in_flight: int, workers: int = 1
) -> Iterator[Target]:
    port = free_port()
    flags = [
        "--fps", str(fps), "--max_sessions", "4096", "--merge_in_flight", str(merge_in_flight),
        "--log_level", "warning", "--model-repository", str(triton.model_repository),
        "--workers", str(workers),
    ]  # fmt: skip
    log = RUN_DIR / f"gateway-{port}.log"
    with run_gateway(triton.grpc_url, *flags, port=port, log=log, grpc_port=free_port()) as child:
        assert triton.pid is not None
        watch = {"gateway": child.process.pid, "triton": triton.pid}
        yield Target(child.url, watch, triton.http_url, child.grpc, f"{child.http}/metrics")


@contextmanager
def naive(fps: int, repository: Path) -> Iterator[Target]:
    port = free_port()
    command = [
        sys.executable, "-m", "loadtest.naive_server", "--port", str(port), "--fps", str(fps),
        "--model-repository", str(repository),
    ]  # fmt: skip
    with running(
        command,
        partial(accepts_connections, LOOPBACK, port),  # it has no HTTP routes
        name="naive server",
        timeout_s=READY_TIMEOUT_S,
        log=RUN_DIR / f"naive-{port}.log",
        grace_s=STOP_GRACE_S,
    ) as child:
        yield Target(f"ws://{LOOPBACK}:{port}/", {"server": child.pid})


def triton_counts(http_url: str) -> tuple[int, int, int]:
    """Requests to the ensemble, and windows and executions of the network, so far."""

    def stats(model: str) -> dict:
        with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=5) as reply:
            return json.load(reply)["model_stats"][0]

    network = stats("a2f_net")
    requests = stats("a2f")["inference_stats"]["success"]["count"]
    return int(requests), int(network["inference_count"]), int(network["execution_count"])


def sent_to_triton(metrics_url: str) -> tuple[float, float]:
    """Frames the gateway has sent to Triton so far, and the bytes of their inputs."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    frames = sent = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "a2f_dispatched_frames_total":
                frames += sample.value
            elif sample.name == "a2f_triton_input_bytes_total":
                sent += sample.value
    return frames, sent


def run_level(
    target: Target, streams: int, fps: int, args: argparse.Namespace, stack: str = "triton"
) -> dict:
    """One level of `stack`'s streams (rows say which): the driver in its own process group,
    bounded in time."""
    # The last run's sessions close, and admission's window forgets its late frames: a run
    # after an overloaded one would otherwise have its sessions refused as busy.
    time.sleep(SETTLE_S)
    watch = [f"--watch={name}={pid}" for name, pid in target.watch.items()]
    before = triton_counts(target.triton_http) if target.triton_http else None
    sent_before = sent_to_triton(target.metrics) if target.metrics else None
    started = time.monotonic()
    driver, *flags = DRIVERS.get(stack, ("loadtest.drive",))
    url = target.grpc if driver == "loadtest.drive_ace" else target.url
    assert url is not None
    child = start_driver(url, streams, fps, args, *watch, *flags, driver=driver)
    result = driver_result(child, streams, args) | {"stack": stack}
    if "failed" in result:
        return {"streams": streams, "fps": fps, **result}
    if before is not None:
        # Over the whole level (connect and drain included), unlike the driver's figures.
        requests, windows, executions = (
            b - a for a, b in zip(before, triton_counts(target.triton_http), strict=True)
        )
        result["triton_requests_per_s"] = requests / (time.monotonic() - started)
        result["mean_batch"] = windows / max(executions, 1)
    if sent_before is not None and target.metrics:
        frames, sent = (
            b - a for a, b in zip(sent_before, sent_to_triton(target.metrics), strict=True)
        )
        if frames:
            result["triton_bytes_per_frame"] = sent / frames
    return result


def flood_pair(target: Target, args: argparse.Namespace) -> list[dict]:
    """Canary streams alone, then beside clients that push 4 MiB at once and open 10 s
    gaps: how far one session's backlog delays the others (the scheduler slices it)."""
    alone = run_level(target, FLOOD_CANARIES, FLOOD_FPS, args)
    command = [
        sys.executable, "-m", "loadtest.flood", "--url", target.url,
        "--clients", str(args.flood_clients), "--seconds", str(args.seconds + 5),
    ]  # fmt: skip
    flooder = subprocess.Popen(command, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        time.sleep(1)  # the first big push is in before the canaries start
        flooded = run_level(target, FLOOD_CANARIES, FLOOD_FPS, args, "triton+flood")
    finally:
        terminate(flooder, STOP_GRACE_S)
    for result in (alone, flooded):
        print("  " + row(result), flush=True)
    return [alone, flooded]


def flood_summary(results: list[dict]) -> list[str]:
    flooded = [r for r in results if r["stack"] == "triton+flood" and "failed" not in r]
    if not flooded:
        return []
    r = flooded[-1]
    return [
        f"- {r['streams']} canary streams at {r['fps']} fps beside clients pushing 4 MiB at once "
        f"and opening 10 s gaps: p99 {r['p99_ms']:.1f} ms, {r['lost']} frames lost, "
        f"{r['errors']} errors (the same canaries alone: the {FLOOD_CANARIES}-stream row before it)"
    ]


class Budget:
    """The whole run's time limit: levels past it are skipped, so the bench ends by itself."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds < self.deadline


def until_majority(
    run_once: Callable[[], list[dict]],
    verdict: Callable[[list[dict]], bool],
    args: argparse.Namespace,
    budget: Budget,
) -> list[dict]:
    """Runs (each one or more rows) until a majority of `args.trials` agrees on the verdict.

    p99 over a 10-second run rests on its few worst frames, so one scheduling hiccup of a
    shared host decides it; a majority verdict keeps one unlucky run from ending a ramp.
    """
    rows: list[dict] = []
    verdicts: list[bool] = []
    majority = args.trials // 2 + 1
    while budget.allows(args.seconds + 15):
        run = run_once()
        for result in run:
            print("  " + row(result), flush=True)
        rows += run
        verdicts.append(verdict(run))
        if verdicts.count(True) >= majority or verdicts.count(False) >= majority:
            break
    return rows


def trials(
    target: Target, stack: str, fps: int, streams: int, args: argparse.Namespace, budget: Budget
) -> list[dict]:
    """One level, run until a majority of `args.trials` runs agrees on pass or fail."""

    def level() -> list[dict]:
        return [run_level(target, streams, fps, args, stack)]

    return until_majority(level, lambda run: passed(run[0]), args, budget)


def fair_share(args: argparse.Namespace, budget: Budget) -> list[dict]:
    """Tenant B's few streams beside tenant A's past capacity (`loadtest.fairness`)."""
    at = argparse.Namespace(**{**vars(args), "fps": FAIR_FPS})
    return until_majority(lambda: fairness.run(at), lambda run: passed(run[1]), args, budget)


def fair_share_summary(results: list[dict]) -> list[str]:
    b_runs = [r for r in results if r["stack"] == fairness.STACK_B]
    a_runs = [r for r in results if r["stack"] == fairness.STACK_A and "failed" not in r]
    if not b_runs:
        return []
    within = sum(passed(r) for r in b_runs)
    p99 = ", ".join(f"{r['p99_ms']:.1f}" for r in b_runs if "failed" not in r)
    carried = ", ".join(f"{r['frames_per_s']:.0f}" for r in a_runs)
    return [
        f"- fair share at {FAIR_FPS} fps: tenant B's {b_runs[0]['streams']} streams beside "
        f"tenant A's {a_runs[0]['streams'] if a_runs else '?'} (past capacity): B within "
        f"p99 <= {LATENCY_GOAL_S * 1e3:.0f} ms with nothing lost in {within} of "
        f"{len(b_runs)} runs (B p99 {p99} ms); A held back to {carried} frames/s"
    ]


def uploads_beside_streams(args: argparse.Namespace, budget: Budget) -> list[dict]:
    """One tenant's uploads beside another's real-time streams (`loadtest.uploads`)."""
    at = uploads.scenario(args, UPLOAD_FPS)
    return until_majority(
        lambda: [uploads.run(at)], lambda run: uploads.verdict(run[0]), args, budget
    )


def uploads_summary(results: list[dict]) -> list[str]:
    return [uploads.summary(r) for r in results if r["stack"] == uploads.STACK]


def level_passed(runs: list[dict]) -> bool:
    return sum(passed(r) for r in runs) * 2 > len(runs)


def ramp(
    target: Target, stack: str, fps: int, args: argparse.Namespace, budget: Budget
) -> list[dict]:
    """Levels up to the first failure, then its midpoint with the last pass."""
    results: list[dict] = []
    best, failed_at = 0, 0
    for streams in args.levels:
        if not budget.allows(args.seconds + 15):
            print(f"  {stack} {fps} fps: time budget spent, ramp stopped", flush=True)
            break
        runs = trials(target, stack, fps, streams, args, budget)
        results += runs
        if not level_passed(runs):
            failed_at = streams
            break
        best = streams
    middle = (best + failed_at) // 2
    if failed_at and middle > best and budget.allows(args.seconds + 15):
        results += trials(target, stack, fps, middle, args, budget)
    return results


def passing_runs(results: list[dict], stack: str) -> list[dict]:
    """The passing runs of `stack`'s levels that passed by majority (any frame rate)."""
    levels: dict[tuple[int, int], list[dict]] = {}
    for r in results:
        if r["stack"] == stack:
            levels.setdefault((r["fps"], r["streams"]), []).append(r)
    return [r for runs in levels.values() if level_passed(runs) for r in runs if passed(r)]


def max_streams(results: list[dict], stack: str, fps: int) -> int:
    """The largest stream count whose runs passed by majority."""
    return max((r["streams"] for r in passing_runs(results, stack) if r["fps"] == fps), default=0)


def read_manifest(repository: Path) -> dict:
    """The manifest of the network version Triton serves by default (the highest)."""
    return json.loads(manifest_path(repository).read_text(encoding="utf-8"))


def raw_ceiling(seconds: float, repository: Path) -> tuple[float, int, int]:
    """(windows/s, batch, threads): the network in process with ONNX Runtime on every core."""
    manifest = read_manifest(repository)
    threads = os.cpu_count() or 1
    session = in_process_session(network_directory(repository) / NETWORK_WEIGHTS, threads)
    rates = {
        batch: in_process_rate(session, batch, int(manifest["window"]), seconds)
        for batch in (1, 8, 32, 128, 512)
    }
    batch = max(rates, key=rates.__getitem__)
    return rates[batch], batch, threads


HEADER = (
    "| stack | fps | streams | frames/s | p50 ms | p95 ms | p99 ms | lost | errors "
    "| 1st packet ms | fps/stream | Triton req/s | mean batch | CPU gateway | CPU triton "
    "| CPU server | CPU loadgen | pass |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def row(r: dict) -> str:
    if "failed" in r:
        return f"| {r.get('stack', '?')} | {r['fps']} | {r['streams']} | {r['failed']} |"
    cpu = r["cpu_cores"]

    def cores(name: str) -> str:
        return f"{cpu[name]:.2f}" if name in cpu else "-"

    batch = f"{r['mean_batch']:.1f}" if "mean_batch" in r else "-"
    requests = f"{r['triton_requests_per_s']:.0f}" if "triton_requests_per_s" in r else "-"
    return (
        f"| {r['stack']} | {r['fps']} | {r['streams']} | {r['frames_per_s']:.0f} "
        f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['lost']} "
        f"| {r['errors']} | {r['first_packet_p50_ms']:.0f} | {r['stream_fps_p50']:.1f} "
        f"| {requests} | {batch} | {cores('gateway')} | {cores('triton')} | {cores('server')} "
        f"| {cores('loadgen')} | {'yes' if passed(r) else 'no'} |"
    )


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}"


def model_summary(repository: Path) -> str:
    manifest = read_manifest(repository)
    return (
        f"a2f_net {manifest['model_version']}, {manifest.get('macs_per_window', '?')} MACs/window"
    )


def report(
    results: list[dict], ceiling: tuple[float, int, int] | None, args: argparse.Namespace
) -> str:
    lines = [
        f"# make bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.2f}.",
        f"Model: {model_summary(args.model_repository)}.",
        f"Command: `python -m loadtest.bench {' '.join(sys.argv[1:])}`; each level "
        f"{args.seconds:g} s of real-time streams (40 ms chunks of {args.audio.name}, looped), "
        f"latencies after a {args.warmup:g} s warm-up; up to {args.trials} runs per level, the "
        "majority decides (every run is a row); CPU in cores over the measured interval.",
        "",
        HEADER,
        *(row(r) for r in results),
        "",
    ]
    stacks = sorted({(r["stack"], r["fps"]) for r in results if r["stack"] in STACKS})
    best = {(s, f): max_streams(results, s, f) for s, f in stacks}
    for (stack, fps), count in best.items():
        lines.append(
            f"- {stack} at {fps} fps: max {count} streams with p99 <= "
            f"{LATENCY_GOAL_S * 1e3:.0f} ms and nothing lost"
        )
    for fps in sorted({f for _, f in stacks}):
        ours = best.get(("triton", fps), 0)
        for other in STACKS[1:]:
            if (other, fps) in best:
                theirs = best[(other, fps)]
                ratio = f"{ours / theirs:.1f}x" if theirs else "inf (0 streams)"
                lines.append(f"- {fps} fps: triton / {other} max streams = {ratio}")
    lines += grpc_summary(results)
    lines += cost_per_frame(results)
    for fps in sorted({f for s, f in stacks if s == "triton"}):
        lines += request_rate_growth(results, fps)
    lines += flood_summary(results)
    lines += fair_share_summary(results)
    lines += uploads_summary(results)
    if ceiling is not None:
        rate, batch, threads = ceiling
        delivered = max((r["frames_per_s"] for r in passing_runs(results, "triton")), default=0)
        # Throughput when latency does not matter: the busiest level that still lost nothing.
        peak = max(
            (
                r["frames_per_s"]
                for r in results
                if r["stack"] == "triton" and "failed" not in r and r["lost"] == r["errors"] == 0
            ),
            default=0,
        )
        lines += [
            f"- raw ceiling: {rate:.0f} windows/s (ONNX Runtime in process, batch {batch}, "
            f"{threads} threads)",
            f"- delivered frames/s at the best passing level / raw ceiling = "
            f"{delivered:.0f} / {rate:.0f} = {delivered / rate:.0%}",
            f"- peak delivered frames/s at any level without loss (latency goal ignored) / raw "
            f"ceiling = {peak:.0f} / {rate:.0f} = {peak / rate:.0%}",
        ]
    return "\n".join(lines) + "\n"


def cost_per_frame(results: list[dict]) -> list[str]:
    """CPU per frame delivered, by process and by Triton's parts, and the bytes of inputs sent
    to Triton per frame, at each stack's largest level held (its first passing run there)."""
    lines = []
    for stack, fps in sorted({(r["stack"], r["fps"]) for r in results if "failed" not in r}):
        top = max_streams(results, stack, fps)
        run = next(
            (r for r in passing_runs(results, stack) if r["fps"] == fps and r["streams"] == top),
            None,
        )
        if run is None:
            continue
        cpu, rate = run["cpu_cores"], run["frames_per_s"]
        parts = [
            f"{key.partition('/')[2] if '/' in key else key} {cores / rate * 1e6:.0f}"
            for key, cores in sorted(cpu.items())
            if _shown(key, cpu) and cores / rate >= 1e-6  # idle parts (uploads' model) left out
        ]
        sent = run.get("triton_bytes_per_frame")
        moved = f"; inputs to Triton {sent:,.0f} bytes per frame" if sent else ""
        lines.append(
            f"- CPU us per frame, {stack} at {fps} fps, {top} streams: {', '.join(parts)}{moved}"
        )
    return lines


def _shown(key: str, cpu: dict[str, float]) -> bool:
    """A process tree's total, or its parts where it has more than one (Triton's)."""
    name, _, part = key.partition("/")
    parts = sum(1 for other in cpu if other.startswith(f"{name}/"))
    return bool(part) == (parts > 1)


def grpc_summary(results: list[dict]) -> list[str]:
    """gRPC streams held beside WebSocket streams at the same rate, in the same run, and the
    unpaced throughput as NVIDIA's performance test reports it."""
    lines = []
    if any(r["stack"] == GRPC_STACK for r in results):
        grpc_max = max_streams(results, GRPC_STACK, ACE_FPS)
        ws_max = max_streams(results, "triton", ACE_FPS)
        ratio = f"{grpc_max / ws_max:.2f}" if ws_max else "-"
        lines.append(
            f"- {ACE_FPS} fps: gRPC / WebSocket max streams held (p99 <= "
            f"{LATENCY_GOAL_S * 1e3:.0f} ms, nothing lost) = {grpc_max} / {ws_max} = {ratio} "
            "(goal: within 10 %)"
        )
    for r in results:
        if r["stack"] == UNPACED_STACK and "failed" not in r:
            lines.append(
                f"- gRPC unpaced, {r['streams']} streams of {r['seconds']:g} s: "
                f"{r['frames_per_s']:.0f} frames/s in all, per stream {r['stream_fps_p50']:.0f} "
                f"fps (min {r['stream_fps_min']:.0f}), first frame p50 "
                f"{r['first_packet_p50_ms']:.0f} ms (p99 {r['first_packet_p99_ms']:.0f}), "
                f"{r['lost']} frames lost; as NVIDIA's performance test counts: first packet "
                f"p50 {r['nim_first_packet_p50_ms']:.0f} ms (p99 "
                f"{r['nim_first_packet_p99_ms']:.0f}), {r['nim_fps_p50']:.0f} fps per stream "
                f"(min {r['nim_fps_min']:.0f})"
            )
    return lines


def unpaced(target: Target, best: int, args: argparse.Namespace, budget: Budget) -> list[dict]:
    """Unpaced gRPC streams, once per level: throughput has no majority to reach."""
    results = []
    for streams in sorted({*args.unpaced_levels, best} - {0}):
        if not budget.allows(args.seconds + 15):
            break
        results.append(run_level(target, streams, ACE_FPS, args, UNPACED_STACK))
        print("  " + row(results[-1]), flush=True)
    return results


def request_rate_growth(results: list[dict], fps: int) -> list[str]:
    """Triton requests/s at the top passing level against 16 streams: merging should keep the
    request rate nearly flat as streams grow (the batch grows instead)."""

    def rate(streams: int) -> float | None:
        runs = [
            r["triton_requests_per_s"]
            for r in passing_runs(results, "triton")
            if r["fps"] == fps and r["streams"] == streams and "triton_requests_per_s" in r
        ]
        return sum(runs) / len(runs) if runs else None

    top = max_streams(results, "triton", fps)
    low, high = rate(RATE_BASE_STREAMS), rate(top)
    if low is None or high is None or top <= RATE_BASE_STREAMS:
        return []
    return [
        f"- {fps} fps: Triton requests/s at {top} streams / at {RATE_BASE_STREAMS} streams = "
        f"{high:.0f} / {low:.0f} = {high / low:.2f}x (goal <= 1.5x)"
    ]


# Triton-backed stacks: (Triton dynamic batching, gateway merge_in_flight).
TRITON_STACKS = {
    "triton": (True, MERGE_IN_FLIGHT),  # the service as it ships
    "triton-merge1": (True, 1),  # the gateway's merging with one request in flight
    "triton-nomerge": (True, 0),  # one Triton request per PushAudio (Triton batcher only)
    "triton-nobatch": (False, 0),  # no cross-session batching anywhere
}
STACKS = (*TRITON_STACKS, "naive")


def full(args: argparse.Namespace, budget: Budget) -> list[dict]:
    results: list[dict] = []
    for batching in (True, False):
        stacks = [s for s in args.stacks if s in TRITON_STACKS and TRITON_STACKS[s][0] == batching]
        if not stacks:
            continue
        with triton_server(batching, args.model_repository) as server:
            for stack in stacks:
                for fps in args.fps if stack == "triton" else args.alternatives_fps:
                    with gateway(server, fps, TRITON_STACKS[stack][1], args.workers) as target:
                        results += ramp(target, stack, fps, args, budget)
                        if stack == "triton" and fps == FLOOD_FPS and args.flood_clients:
                            results += flood_pair(target, args)
                        if stack == "triton" and fps == ACE_FPS and GRPC_STACK in args.stacks:
                            results += ramp(target, GRPC_STACK, ACE_FPS, args, budget)
                            best = max_streams(results, GRPC_STACK, ACE_FPS)
                            results += unpaced(target, best, args, budget)
    if "naive" in args.stacks:
        for fps in args.alternatives_fps:
            with naive(fps, args.model_repository) as target:
                results += ramp(target, "naive", fps, args, budget)
    if args.a_streams:
        results += fair_share(args, budget)
    if args.files:
        results += uploads_beside_streams(args, budget)
    return results


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one level, checks nothing is lost")
    parser.add_argument("--quick-streams", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--fps", type=int, nargs="+", default=[30, 60])
    parser.add_argument(
        "--stacks", nargs="+", choices=(*STACKS, GRPC_STACK), default=[*STACKS, GRPC_STACK]
    )  # grpc: on the `triton` gateway at 30 fps, so with `triton` only
    parser.add_argument(
        "--unpaced-levels", type=int, nargs="+", default=list(UNPACED_LEVELS),
        help="unpaced gRPC streams (besides the paced maximum)",
    )  # fmt: skip
    parser.add_argument("--alternatives-fps", type=int, nargs="+", default=[30])
    parser.add_argument("--seconds", type=float, default=10.0, help="per run of a level")
    parser.add_argument(
        "--trials", type=int, default=3, help="runs per level at most; the majority decides"
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--flood-clients",
        type=int,
        default=2,
        help="clients pushing 4 MiB at once (0: no flood run)",
    )
    fairness.add_arguments(parser)  # 0 A streams: no fair-share run
    uploads.add_arguments(parser)  # 0 files: no uploads run
    parser.add_argument("--ceiling-seconds", type=float, default=2.0, help="per batch size")
    # The gRPC ramp and its unpaced runs take about 6 minutes of it on 2 cores.
    parser.add_argument("--budget", type=float, default=1900.0, help="whole run, seconds")
    parser.add_argument("--audio", type=Path, default=SPEECH_FILE)
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    # SIGTERM unwinds like Ctrl-C, so every `with` stops its processes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.quick:
        with (
            triton_server(True, args.model_repository) as server,
            gateway(server, 30, MERGE_IN_FLIGHT, args.workers) as target,
        ):
            result = run_level(target, args.quick_streams, 30, args)
            grpc = run_level(target, args.quick_streams, ACE_FPS, args, GRPC_STACK)
            fast = run_level(target, QUICK_UNPACED_STREAMS, ACE_FPS, args, UNPACED_STACK)
        beside = uploads.run(
            uploads.scenario(argparse.Namespace(**{**vars(args), **QUICK_UPLOADS}), UPLOAD_FPS)
        )
        runs = (result, grpc, fast, beside)
        print(HEADER, *(row(r) for r in runs), sep="\n", flush=True)
        print(*grpc_summary(list(runs)), uploads.summary(beside), sep="\n", flush=True)
        print(*cost_per_frame([result, grpc]), sep="\n", flush=True)
        ok = (
            all("failed" not in r and r["lost"] == 0 and r["errors"] == 0 for r in runs)
            and beside["uploads"]["completed"] == beside["uploads"]["files"]
        )
        lost = ", ".join(f"{r['stack']} {r.get('lost')}" for r in runs)
        print(f"quick: {'ok' if ok else 'FAILED'} (frames lost: {lost})")
        return 0 if ok else 1
    ceiling = raw_ceiling(args.ceiling_seconds, args.model_repository)
    print(f"raw ceiling: {ceiling[0]:.0f} windows/s at batch {ceiling[1]}", flush=True)
    results = full(args, budget)
    text = report(results, ceiling, args)
    print(text, flush=True)
    out = args.out or RUN_DIR / f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every `with` has stopped its processes
        sys.exit("bench interrupted")
