"""Windows/s through the ``a2f`` ensemble next to in-process ONNX Runtime on the same ONNX.

``make bench-triton``. Starts its own embedded tritonserver (loopback, free ports), then for
each batch size measures, in the same run (alternating short rounds, medians):

* **in-process** -- one ``InferenceSession`` on the ``model.onnx`` of the network version
  Triton serves (``--model_version``, the highest by default) with as many intra-op threads
  as Triton's network gets (instances x ORT threads), calling ``run`` back to back on
  ``batch`` windows;
* **triton** -- ``clients`` concurrent gRPC (asyncio) clients, each sending ``batch`` windows
  per request to the ensemble (network + postprocessor) and waiting for the answer.

The client, the server and anything else on the host share the same cores, so the figures
are a lower bound for Triton on a dedicated machine. Prints a markdown table and writes it
to ``--out`` (with the settings and the load average, since other jobs skew it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc.aio as grpcclient
from a2f_triton import repository
from a2f_triton.launch import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton
from a2f_triton.processes import free_port

GOAL = 0.8  # Triton must deliver 80% of in-process throughput at batch >= 32


def in_process_session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def in_process_rate(session: ort.InferenceSession, batch: int, width: int, seconds: float) -> float:
    windows = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
    session.run(None, {"AUDIO": windows})  # warm-up: allocations for this batch size
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"AUDIO": windows})
        done += batch
    return done / (time.perf_counter() - start)


async def triton_rate(url: str, batch: int, clients: int, seconds: float, width: int) -> float:
    client = grpcclient.InferenceServerClient(url)
    try:
        windows = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
        audio = grpcclient.InferInput("AUDIO", list(windows.shape), "FP32")
        audio.set_data_from_numpy(windows)  # serialised once, reused by every request
        await client.infer("a2f", [audio])
        done = 0
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def stream() -> None:
            nonlocal done
            while loop.time() - start < seconds:
                await client.infer("a2f", [audio])
                done += batch

        await asyncio.gather(*(stream() for _ in range(clients)))
        return done / (loop.time() - start)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--clients", type=int, default=8, help="concurrent requests in flight")
    parser.add_argument("--seconds", type=float, default=4.0, help="per batch size and side")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per point")
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--ort-threads", type=int, default=None)
    parser.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false")
    parser.add_argument("--max-queue-delay-us", type=int, default=None)
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    repository.add_model_version_argument(parser)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    settings = {
        k: v
        for k, v in (("instances", args.instances), ("ort_threads", args.ort_threads))
        if v is not None
    }
    server = EmbeddedTriton(
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        model_repository=args.model_repository,
        dynamic_batching=args.dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        model_version=args.model_version,
        **settings,
    )
    network = server.served_directory()
    model = network / repository.NETWORK_WEIGHTS
    manifest = json.loads((network / repository.MANIFEST_NAME).read_text())
    rows = []
    width = int(manifest["window"])
    with server:
        threads = server.instances * server.ort_threads
        session = in_process_session(model, threads)
        for batch in args.batches:
            # Alternate short rounds and keep the medians: other jobs on the host come and
            # go, and interleaving exposes both sides to the same contention.
            local, remote = [], []
            for _ in range(args.rounds):
                share = args.seconds / args.rounds
                local.append(in_process_rate(session, batch, width, share))
                remote.append(
                    asyncio.run(triton_rate(server.grpc_url, batch, args.clients, share, width))
                )
            rows.append((batch, float(np.median(local)), float(np.median(remote))))
            print(
                f"batch {batch:4d}: in-process {rows[-1][1]:9.0f}/s  triton {rows[-1][2]:9.0f}/s",
                flush=True,
            )

    lines = [
        f"Model {manifest.get('model_version')} ({manifest.get('macs_per_window')} MACs/window), "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average before/after {load_before:.2f} / {os.getloadavg()[0]:.2f}.",
        f"Triton: instances={server.instances}, ort_threads={server.ort_threads}, "
        f"dynamic_batching={args.dynamic_batching}, "
        f"max_queue_delay_us={args.max_queue_delay_us or 'config default'}, "
        f"{args.clients} concurrent clients, {args.seconds:g} s per point and side in "
        f"{args.rounds} alternating rounds (medians); "
        f"in-process ORT with {threads} intra-op thread(s).",
        "",
        "| batch | in-process windows/s | Triton ensemble windows/s | ratio |",
        "|------:|---------------------:|--------------------------:|------:|",
        *(f"| {b} | {lo:.0f} | {tr:.0f} | {tr / lo:.0%} |" for b, lo, tr in rows),
    ]
    met = all(tr / lo >= GOAL for b, lo, tr in rows if b >= 32)
    verdict = "met" if met else "NOT met"
    lines.append(f"\nGoal (Triton >= {GOAL:.0%} of in-process at batch >= 32): {verdict}.")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
