"""The whole service on one host, embedded Triton and the gateway in front of it: `make serve`,
``python -m a2f_triton.serve``.

Both bind to loopback unless told otherwise; a non-loopback address without a tenants file is
refused before anything starts. Ctrl-C or SIGTERM stops the gateway first (it drains its
sessions for up to `--drain_s`), then Triton; if this runner is killed outright, both children
get SIGTERM from the kernel. SIGHUP is passed on to the gateway (its workers read the tenants
file again). The gateway flags (``--max_sessions``, ``--fps``, ``--workers``, ...) are passed on
to it; ``--help`` lists them all. Every port is checked before anything starts: a second
instance fails at once, naming the port and its holder, and leaves the first alone. While
serving, a watchdog restarts Triton when its model stops answering (`a2f_triton.watchdog`), and
the gateway when it exits (`a2f_triton.restarting`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from functools import partial

from a2f_triton.gateway_process import run_gateway
from a2f_triton.launch import add_triton_arguments, run_until_signalled, server_from_arguments
from a2f_triton.processes import LOOPBACK, check_ports_free
from a2f_triton.restarting import RestartingGateway, forward_reloads
from a2f_triton.runner_flags import gateway_settings, parse_runner_arguments
from a2f_triton.watchdog import Watchdog

from a2f_protocol import DEFAULT_PORT


def runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get("A2F_HOST", LOOPBACK))
    parser.add_argument("--port", type=int, default=int(os.environ.get("A2F_PORT", DEFAULT_PORT)))
    add_triton_arguments(parser)
    env = os.environ.get
    watch = parser.add_argument_group("watchdog (restarts Triton when its model stops answering)")
    watch.add_argument(
        "--watchdog-interval-s", type=float, default=env("A2F_WATCHDOG_INTERVAL_S", "2")
    )
    watch.add_argument(
        "--watchdog-timeout-s", type=float, default=env("A2F_WATCHDOG_TIMEOUT_S", "5")
    )
    watch.add_argument(
        "--restart-after",
        type=int,
        default=env("A2F_RESTART_AFTER", "3"),
        help="failed probes in a row before Triton is restarted",
    )


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    args, gateway_flags, parser = parse_runner_arguments(
        argv, "python -m a2f_triton.serve", __doc__, runner_arguments
    )
    if min(args.watchdog_interval_s, args.watchdog_timeout_s, args.restart_after) <= 0:
        parser.error(
            "--watchdog-interval-s, --watchdog-timeout-s and --restart-after must be positive"
        )
    return args, gateway_flags


def main(argv: list[str] | None = None) -> int:
    args, gateway_flags = parse_arguments(argv)
    settings = gateway_settings(gateway_flags, args.host, args.port)
    kept: list[RestartingGateway] = []
    forward_reloads(kept)  # the gateway reads the tenants file as it starts: none to send

    def serve() -> int:
        ports = {"the gateway": args.port}
        if settings.grpc_port:
            ports["the gRPC API (--grpc_port 0 turns it off)"] = settings.grpc_port
        check_ports_free(args.host, ports)
        with server_from_arguments(args) as triton:
            print(f"triton ready on {triton.grpc_url} (log: {triton.log_path})", flush=True)
            start = partial(
                run_gateway,
                triton.grpc_url,
                "--model-repository",
                str(args.model_repository),
                "--model_version",
                str(args.model_version),
                *gateway_flags,
                host=args.host,
                port=args.port,
                drain_s=settings.drain_s,
                grpc_port=settings.grpc_port,
            )
            # The gateway stops before Triton (the inner block), so in-flight frames can finish.
            with RestartingGateway(start) as gateway:
                kept.append(gateway)
                url = f"{'wss' if settings.ssl_certfile else 'ws'}://{args.host}:{args.port}/"
                print(f"gateway ready: {url}  (Ctrl-C stops)", flush=True)
                if gateway.current.grpc:
                    print(f"Audio2Face-3D gRPC (NIM API) ready: {gateway.current.grpc}", flush=True)
                watchdog = Watchdog(
                    triton, failures=args.restart_after, probe_timeout_s=args.watchdog_timeout_s
                )
                try:
                    while True:
                        try:
                            gateway.current.process.wait(timeout=args.watchdog_interval_s)
                        except subprocess.TimeoutExpired:
                            watchdog.check()
                        gateway.check()
                finally:
                    watchdog.close()

    return run_until_signalled(serve)


if __name__ == "__main__":
    sys.exit(main())
