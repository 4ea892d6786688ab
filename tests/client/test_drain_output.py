"""`a2f stream --realtime --out` through `make cluster` (HAProxy, 2 gateways, 2 Tritons) while
the gateway carrying it drains: the client reconnects through HAProxy to the other gateway and
the file holds every frame of an unbroken run once, in order, in each format (CSV, JSON lines,
A2FB), and the CLI says that it reconnected."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from a2f_triton.cluster import running_cluster
from conftest import listed_sessions
from websockets.asyncio.client import connect

from a2f_client import stream
from a2f_protocol.clock import FrameClock
from a2f_protocol.export_formats import Animation, parse_a2fb, parse_jsonl, parse_live_link_csv
from gateway.model_info import ModelInfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ModelInfo.load(PROJECT_ROOT / "model_repository").blendshapes
DRAIN_S = 2.0
BALLAST = 8  # idle sessions; those on the other gateway steer HAProxy's leastconn home
START = json.dumps({"type": "StartSession", "blinks": False})


def read(path: Path) -> Animation:
    match path.suffix:
        case ".csv":
            return parse_live_link_csv(path.read_text(), CHANNELS, Fraction(60))
        case ".jsonl":
            return parse_jsonl(path.read_bytes().splitlines())
        case _:
            return parse_a2fb(path.read_bytes(), CHANNELS)


def realtime_stream(audio: Path, url: str, out: Path) -> subprocess.Popen[str]:
    command = ["stream", str(audio), "--url", url, "--out", str(out), "--realtime", "--no-blinks"]
    return subprocess.Popen(
        [sys.executable, "-m", "a2f_client.cli", *command],
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )


def test_cli_output_survives_a_drain_whole_in_every_format(
    speech_path: Path, tmp_path: Path
) -> None:
    outs = [tmp_path / name for name in ("frames.csv", "frames.jsonl", "frames.a2fb")]
    clock = FrameClock(Fraction(60))

    async def frames_of(url: str) -> np.ndarray:
        return np.stack([f.weights async for f in stream(speech_path, url, blinks=False)])

    with running_cluster(drain_s=DRAIN_S, run_dir=tmp_path / "cluster") as cluster:
        whole = asyncio.run(frames_of(cluster.url))
        home = cluster.gateways[0].current

        def at_home() -> set[str]:  # /sessions lists the cluster's: the home pid's are home's
            return listed_sessions(home.http, home.process.pid)

        async def run() -> list[subprocess.CompletedProcess[str]]:
            async with AsyncExitStack() as stack:
                ballast = {}
                for _ in range(BALLAST):
                    ws = await stack.enter_async_context(connect(cluster.url))
                    await ws.send(START)
                    ballast[json.loads(await asyncio.wait_for(ws.recv(), 10))["session_id"]] = ws
                for session_id in at_home() & set(ballast):
                    await ballast.pop(session_id).close()  # home is now the least loaded
                assert len(ballast) >= 3, "HAProxy did not spread the ballast"
                deadline = time.monotonic() + 10
                while at_home():  # released (the shared store learns it a moment later)
                    assert time.monotonic() < deadline, "closed sessions still listed"
                    await asyncio.sleep(0.05)
                clis = [realtime_stream(speech_path, cluster.url, out) for out in outs]
                deadline = time.monotonic() + 30
                while len(at_home()) < len(clis):
                    assert time.monotonic() < deadline, "the streams did not all start at home"
                    await asyncio.sleep(0.05)
                # Through HAProxy, whichever gateway answers lists both gateways' sessions.
                everyone = set(ballast) | at_home()
                for _ in range(4):
                    assert listed_sessions(cluster.http) == everyone
                await asyncio.sleep(0.5)  # some frames written before the drain
                home.process.send_signal(signal.SIGTERM)
                done = await asyncio.gather(*(asyncio.to_thread(c.communicate) for c in clis))
                return [
                    subprocess.CompletedProcess(c.args, c.returncode, "", err)
                    for c, (_, err) in zip(clis, done, strict=True)
                ]

        results = asyncio.run(run())

    assert len(whole) == clock.frames_before(soundfile.info(str(speech_path)).frames)
    expected = list(range(len(whole)))
    for out, done in zip(outs, results, strict=True):
        assert done.returncode == 0, done.stderr
        assert f"{len(whole)} frames (1 reconnect)" in done.stderr, done.stderr
        got = read(out)
        assert list(got.frame_indices) == expected, out.name  # every frame once, in order
        np.testing.assert_allclose(got.select(CHANNELS), whole, atol=1e-5, err_msg=out.name)
