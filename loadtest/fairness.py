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
import contextlib
import io
import json
import sys
from pathlib import Path

from a2f_triton.gateway_process import run_gateway

from gateway.tenancy.cli import main as tenants_cli
from loadtest.accounting import MODEL_REPOSITORY, SPEECH_FILE, passed
from loadtest.stack import RUN_DIR, driver_result, start_driver, triton_server

STACK_A, STACK_B = "tenant A (past capacity)", "tenant B"


def new_key(path: Path, tenant: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tenants_cli(["add", str(path), tenant])
    return out.getvalue().strip().rsplit(" ", 1)[1]


def bearer(key: str) -> tuple[str, str]:
    return "--header", f"Authorization: Bearer {key}"


def run(args: argparse.Namespace) -> list[dict]:
    """One run: A's and B's results as `make bench` rows (CPU watched by A's driver)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tenants = RUN_DIR / "fairness-tenants.toml"
    tenants.unlink(missing_ok=True)
    key_a, key_b = new_key(tenants, "tenant-a"), new_key(tenants, "tenant-b")
    flags = [
        "--fps", str(args.fps), "--max_sessions", "4096", "--log_level", "warning",
        "--model-repository", str(args.model_repository),
        "--tenants_file", str(tenants), "--audit_client_address", "none",
    ]  # fmt: skip
    with (
        triton_server(dynamic_batching=True, repository=args.model_repository) as triton,
        run_gateway(triton.grpc_url, *flags, log=RUN_DIR / "fairness-gateway.log") as gateway,
    ):
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
