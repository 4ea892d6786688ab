"""The whole service on one host: embedded Triton, then the gateway in front of it (`make serve`).

Both bind to loopback unless told otherwise. Ctrl-C or SIGTERM stops the gateway first, then
Triton; if this runner is killed outright, both children get SIGTERM from the kernel.
Unrecognised flags (``--max_sessions``, ``--fps``, ``--model``, ...) go to the gateway.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from launch import (
    LOOPBACK,
    LaunchError,
    add_triton_arguments,
    die_with_parent,
    run_until_signalled,
    server_from_arguments,
    terminate,
)

GATEWAY_READY_TIMEOUT_S = 60.0


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("A2F_HOST", LOOPBACK))
    parser.add_argument("--port", type=int, default=int(os.environ.get("A2F_PORT", "8765")))
    add_triton_arguments(parser)
    return parser.parse_known_args(argv)


def start_gateway(
    args: argparse.Namespace, extra: list[str], grpc_url: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "gateway",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--triton-url",
        grpc_url,
        "--model-repository",
        str(args.model_repository),
        *extra,
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


def wait_gateway_ready(gateway: subprocess.Popen[bytes], host: str, port: int) -> None:
    deadline = time.monotonic() + GATEWAY_READY_TIMEOUT_S
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/health"
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise LaunchError(f"gateway exited with code {gateway.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise LaunchError(f"gateway not answering {url} after {GATEWAY_READY_TIMEOUT_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args, gateway_arguments = parse_arguments(argv)

    def serve() -> int:
        with server_from_arguments(args) as triton:
            print(f"triton ready on {triton.grpc_url} (log: {triton.log_path})", flush=True)
            gateway = start_gateway(args, gateway_arguments, triton.grpc_url)
            try:  # the gateway stops before Triton, so in-flight frames can finish
                wait_gateway_ready(gateway, args.host, args.port)
                print(f"gateway ready: ws://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
                return gateway.wait()
            finally:
                terminate(gateway)

    return run_until_signalled(serve)


if __name__ == "__main__":
    sys.exit(main())
