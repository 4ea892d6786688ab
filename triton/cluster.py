"""Several gateways behind HAProxy on one host: `make cluster`, ``python -m a2f_triton.cluster``.

On loopback: 2 embedded Tritons, a redis-server the gateways share (sessions and limits: the
cluster's `/sessions` and `--max_sessions` count every gateway), 2 gateways and HAProxy
(``deploy/haproxy/haproxy.cfg``) in front of them, which health-checks the gateways on
`/ready` and balances WebSocket connections (leastconn), and on a port of its own the
Audio2Face-3D gRPC API's calls to the gateways' gRPC ports (HTTP/2, each call balanced on
its own; `--grpc_port`, default 52000 as the NIM's, 0: none). Clients connect to HAProxy's
ports (default 8765 and 52000, as `make serve`); everything else takes free ports. While it runs, a Triton
that dies or stops answering is restarted on its ports (`a2f_triton.watchdog`) and comes back
into every gateway's pool, and a gateway that exits is restarted on its port
(`a2f_triton.restarting`); SIGHUP goes to the gateways. Ctrl-C or SIGTERM drains the
gateways together (``--drain_s``: WebSocket sessions and gRPC streams that outlive it
end with `shutting_down` / UNAVAILABLE), then stops HAProxy, the Tritons and Redis; every process
is stopped by PID. The gateway flags go to every gateway (``--help`` lists them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from a2f_triton import repository
from a2f_triton.gateway_process import STOP_GRACE_S, run_gateway
from a2f_triton.launch import RUN_DIR, EmbeddedTriton, run_until_signalled
from a2f_triton.processes import (
    LOOPBACK,
    LaunchError,
    accepts_connections,
    answers_ok,
    check_ports_free,
    free_port,
    running,
)
from a2f_triton.redis_server import redis_address, run_redis
from a2f_triton.restarting import RestartingGateway, forward_reloads
from a2f_triton.runner_flags import gateway_settings, parse_runner_arguments
from a2f_triton.watchdog import Watchdog

from a2f_protocol import ACE_PORT, DEFAULT_PORT

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = PROJECT_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
GATEWAYS = 2  # the config names two servers
TRITONS = 2
READY_TIMEOUT_S = 30.0  # HAProxy's first health checks
CHECK_INTERVAL_S = 2.0  # each Triton probed, each gateway looked at, this often
# A Triton restarted after this many failed probes in a row, each with this deadline (as
# `make serve`'s defaults); one whose process is gone at once.
PROBE_FAILURES, PROBE_TIMEOUT_S = 3, 5.0


@dataclass(frozen=True)
class Cluster:
    """A running cluster; `url` (WebSocket), `http` and `grpc` (the gRPC target, host:port,
    when it serves the gRPC API) are HAProxy's."""

    url: str
    http: str
    grpc: str | None
    tritons: list[EmbeddedTriton]
    gateways: list[RestartingGateway]
    haproxy: subprocess.Popen[bytes]
    watchdogs: list[Watchdog]

    def check(self) -> None:
        """Restart whatever has died: call it periodically."""
        for watchdog in self.watchdogs:
            watchdog.check()
        for gateway in self.gateways:
            gateway.check()


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise LaunchError("haproxy is not installed: `make cluster` installs it (apt-get)")
    return found


@contextmanager
def run_haproxy(
    bind: str,
    gateways: Sequence[str],
    log: Path,
    grpc_bind: str | None = None,
    grpc_gateways: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy on `bind` (host:port) in front of `gateways` (host:port each), foreground; and
    on `grpc_bind` in front of `grpc_gateways` (their gRPC ports, in the same order)."""
    if len(gateways) != GATEWAYS or (grpc_bind is not None and len(grpc_gateways) != GATEWAYS):
        raise ValueError(f"{HAPROXY_CONFIG.name} names {GATEWAYS} gateways")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("A2F_LB_", "A2F_GATEWAY_"))},
        "A2F_LB_BIND": bind,
        **{f"A2F_GATEWAY_{n}": address for n, address in enumerate(gateways, 1)},
    }
    if grpc_bind is not None:
        env["A2F_LB_GRPC_BIND"] = grpc_bind
        env.update({f"A2F_GATEWAY_{n}_GRPC": a for n, a in enumerate(grpc_gateways, 1)})
    command = [haproxy_binary(), "-db", "-f", str(HAPROXY_CONFIG)]
    check = subprocess.run([*command, "-c", "-q"], env=env, capture_output=True, text=True)
    if check.returncode != 0:
        raise LaunchError(f"haproxy refused its configuration: {check.stderr.strip()}")
    host, port = bind.rsplit(":", 1)
    with running(
        command,
        partial(accepts_connections, host, int(port)),
        name="haproxy",
        timeout_s=READY_TIMEOUT_S,
        log=log,
        env=env,
    ) as process:
        yield process


def stop_together(processes: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM to all at once (gateways drain in parallel, not one after another), then wait
    up to `grace_s` in all, then SIGKILL whatever is left."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_cluster(
    *gateway_flags: str,
    host: str = LOOPBACK,
    port: int | None = None,
    grpc_port: int | None = None,
    drain_s: float = 0.0,
    run_dir: Path = RUN_DIR,
    model_version: int = repository.LATEST,
) -> Iterator[Cluster]:
    """The whole cluster, ready behind HAProxy (on free ports unless given them; `grpc_port`
    0: no gRPC API) for the block; `gateway_flags` go to every gateway, whose `--drain_s` is
    `drain_s`; every Triton serves a2f_net's `model_version` (the highest by default)."""
    port = free_port(host) if port is None else port
    grpc_port = free_port(host) if grpc_port is None else grpc_port
    http = f"http://{host}:{port}"
    grpc = f"{host}:{grpc_port}" if grpc_port else None
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = run_dir / f"cluster-{port}"
    logs.mkdir(exist_ok=True)
    with ExitStack() as stack:
        tritons = [
            stack.enter_context(
                EmbeddedTriton(
                    grpc_port=free_port(),
                    http_port=free_port(),
                    metrics_port=free_port(),
                    run_dir=run_dir,
                    log_path=logs / f"triton-{n}.log",
                    model_version=model_version,
                )
            )
            for n in range(TRITONS)
        ]
        # One Redis for the gateways' sessions and limits: `/sessions` through HAProxy lists
        # every gateway's, and `--max_sessions` and tenant quotas count the whole cluster.
        redis_port = free_port()
        stack.enter_context(run_redis(redis_port, logs))
        watchdogs = []
        for triton in tritons:
            watchdog = Watchdog(triton, failures=PROBE_FAILURES, probe_timeout_s=PROBE_TIMEOUT_S)
            stack.callback(watchdog.close)
            watchdogs.append(watchdog)
        gateways = [
            # Every gateway balances over every Triton: losing one costs no session.
            stack.enter_context(
                RestartingGateway(
                    partial(
                        run_gateway,
                        [t.grpc_url for t in tritons],
                        "--drain_s",
                        str(drain_s),
                        "--redis_url",
                        redis_address(redis_port),
                        "--model_version",
                        str(model_version),
                        *gateway_flags,
                        port=free_port(),  # kept across restarts: HAProxy's config names it
                        grpc_port=free_port() if grpc else 0,  # likewise
                        log=logs / f"gateway-{n + 1}.log",
                        drain_s=drain_s,
                    )
                )
            )
            for n in range(GATEWAYS)
        ]
        # Gateways ready before HAProxy starts, so that its first checks find them all up;
        # and drained before it stops (the callback below), while it still carries them.
        haproxy = stack.enter_context(
            run_haproxy(
                f"{host}:{port}",
                [g.current.http.removeprefix("http://") for g in gateways],
                logs / "haproxy.log",
                grpc,
                [g.current.grpc or "" for g in gateways],
            )
        )
        stack.callback(
            lambda: stop_together([g.current.process for g in gateways], drain_s + STOP_GRACE_S)
        )  # registered last, so it runs first
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers_ok(f"{http}/ready"):
            if time.monotonic() > deadline:
                raise LaunchError(f"HAProxy at {http} routes to no ready gateway; see {logs}")
            time.sleep(0.2)
        yield Cluster(f"ws://{host}:{port}/", http, grpc, tritons, gateways, haproxy, watchdogs)


def runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get("A2F_HOST", LOOPBACK))
    parser.add_argument("--port", type=int, default=int(os.environ.get("A2F_PORT", DEFAULT_PORT)))
    # HAProxy's gRPC port; each gateway serves gRPC on a free port of its own behind it.
    parser.add_argument(
        "--grpc_port",
        "--grpc-port",
        type=int,
        default=int(os.environ.get("A2F_GRPC_PORT", ACE_PORT)),
        help="HAProxy's port for the Audio2Face-3D gRPC API (0: none); env A2F_GRPC_PORT",
    )
    repository.add_model_version_argument(parser)  # every Triton's, and every gateway's


def main(argv: list[str] | None = None) -> int:
    args, gateway_flags, _ = parse_runner_arguments(
        argv, "python -m a2f_triton.cluster", __doc__, runner_arguments
    )
    # HAProxy serves the gateways on --host: a setting they would refuse there ends here.
    front = ["--grpc_port", str(args.grpc_port)]
    drain_s = gateway_settings([*gateway_flags, *front], args.host, args.port).drain_s
    gateways: list[RestartingGateway] = []
    forward_reloads(gateways)

    def serve() -> int:
        ports = {"HAProxy": args.port}
        if args.grpc_port:
            ports["HAProxy's gRPC API (--grpc_port 0 turns it off)"] = args.grpc_port
        check_ports_free(args.host, ports)
        with running_cluster(
            *gateway_flags,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            drain_s=drain_s,
            model_version=args.model_version,
        ) as cluster:
            gateways.extend(cluster.gateways)
            for triton in cluster.tritons:
                print(f"triton ready on {triton.grpc_url}", flush=True)
            for gateway in cluster.gateways:
                print(
                    f"gateway ready on {gateway.current.http} (pid {gateway.current.process.pid})",
                    flush=True,
                )
            if cluster.grpc:
                print(f"haproxy: Audio2Face-3D gRPC (NIM API) on {cluster.grpc}", flush=True)
            print(f"haproxy ready: {cluster.url}  (Ctrl-C stops)", flush=True)
            while True:
                try:
                    return cluster.haproxy.wait(timeout=CHECK_INTERVAL_S)
                except subprocess.TimeoutExpired:
                    cluster.check()

    return run_until_signalled(serve)


if __name__ == "__main__":
    sys.exit(main())
