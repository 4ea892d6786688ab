"""Two ONNX models side by side on in-process ONNX Runtime (one thread): windows/s per batch.

Rounds alternate between the models so that host noise falls on both alike; the figure is
the median of the rounds. Used to price a model change, e.g. the served version against the
one kept for rollback:

    .venv/bin/python -m a2f_triton.compare_models model_repository/a2f_net/{1,2}/model.onnx
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from a2f_triton.bench_triton import in_process_rate, in_process_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    paths = (args.baseline, args.candidate)
    sessions = [in_process_session(path, threads=1) for path in paths]
    widths = [session.get_inputs()[0].shape[1] for session in sessions]
    for batch in args.batches:
        rates: list[list[float]] = [[], []]
        for _ in range(args.rounds):
            for session, width, runs in zip(sessions, widths, rates, strict=True):
                runs.append(in_process_rate(session, batch, width, args.seconds))
        base, cand = (statistics.median(runs) for runs in rates)
        print(
            f"batch {batch}: {args.baseline.name} {base:.0f} windows/s, "
            f"{args.candidate.name} {cand:.0f} windows/s, ratio {cand / base:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
