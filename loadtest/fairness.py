"""Fair share across tenants on a host past capacity: part of `make bench`, and on its own
`make bench-fairness`.

Tenant A opens more real-time streams than the host can serve while tenant B streams a few;
both run at once against one gateway with a tenants file, each through its own
`loadtest.drive` process (the same accounting as `make bench`). The gateway holds A back
while B's frames are late (`gateway.inference.fair_share`), so B should keep the latency goal and
lose nothing while A's streams fall behind. Prints one JSON line per tenant, then a summary:

    python -m loadtest.fairness --a-streams 160 --b-streams 4 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loadtest.accounting import MODEL_REPOSITORY, SPEECH_FILE, passed
from loadtest.stack import bearer, driver_result, start_driver, tenants_stack

STACK_A, STACK_B = "tenant A (past capacity)", "tenant B"


def run(args: argparse.Namespace) -> list[dict]:
    """One run: A's and B's results as `make bench` rows (CPU watched by A's driver)."""
    tenants = ("tenant-a", "tenant-b")
    with tenants_stack("fairness", tenants, args.fps, args.model_repository) as stack:
        triton, gateway, (key_a, key_b) = stack
        watch = [f"--watch=gateway={gateway.process.pid}", f"--watch=triton={triton.pid}"]
        overload = start_driver(gateway.url, args.a_streams, args.fps, args, *bearer(key_a), *watch)
        measured = start_driver(gateway.url, args.b_streams, args.fps, args, *bearer(key_b))
        b = driver_result(measured, args.a_streams, args)  # both run as long as A's
        a = driver_result(overload, args.a_streams, args)
    return [
        {"stack": STACK_A, "streams": args.a_streams, "fps": args.fps, **a},
        {"stack": STACK_B, "streams": args.b_streams, "fps": args.fps, **b},
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a-streams", type=int, default=160, help="tenant A: past capacity")
    parser.add_argument("--b-streams", type=int, default=4)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--audio", type=Path, default=SPEECH_FILE)
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a, b = run(parse_arguments(argv))
    for row in (a, b):
        print(json.dumps(row), flush=True)
    summary = {
        "a_streams": a["streams"],
        "a_p99_ms": a.get("p99_ms"),
        "b_streams": b["streams"],
        "b_p99_ms": b.get("p99_ms"),
        "b_lost": b.get("lost"),
        "b_errors": b.get("errors"),
        "b_within_goal": passed(b),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
