"""`make serve`'s runner: Triton + gateway on loopback, Ctrl-C leaves nothing behind; its --help
and its refusals; SIGHUP reloads every worker's tenants; a killed gateway is started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from a2f_triton.launch import RUN_DIR
from a2f_triton.processes import port_in_use
from canary import stream_canary
from conftest import free_port
from test_launcher import LOOPBACK_ADDRESSES, alive, children_of, listening_addresses, wait_until
from websockets.asyncio.client import connect


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        get_json(url)
    except OSError:
        return False
    return True


def descendants(pid: int) -> list[int]:
    found = children_of(pid)
    for child in list(found):
        found += descendants(child)
    return found


def test_serve_runs_triton_and_gateway_on_loopback_and_ctrl_c_stops_both() -> None:
    port = free_port()
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "a2f_triton.serve",  # as `make serve` runs it
            f"--port={port}",
            f"--grpc-port={free_port()}",
            f"--http-port={free_port()}",
            f"--metrics-port={free_port()}",
            f"--grpc_port={free_port()}",  # the gateway's gRPC API; 52000 may be in use
            "--max_sessions=4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal would give it
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/ready"), 180)
        assert get_json(f"http://127.0.0.1:{port}/ready")["ready"] is True
        processes = descendants(runner.pid)
        assert len(processes) >= 2, "gateway and tritonserver"
        for pid in processes:
            assert set(listening_addresses(pid).values()) <= LOOPBACK_ADDRESSES

        os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C does
        assert runner.wait(timeout=60) == 0
        assert wait_until(lambda: not any(alive(pid) for pid in processes), 30)
        assert not answers(f"http://127.0.0.1:{port}/health")
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


# Launcher: probe every 0.5 s, restart after 2 failures; gateway: probe every 0.25 s.
WATCHDOG_FLAGS = [
    "--watchdog-interval-s=0.5",
    "--restart-after=2",
    "--watchdog-timeout-s=2",
    "--triton_probe_interval_s=0.25",
    "--triton_timeout_s=2",
]


def ready_status(http: str) -> int:
    try:
        with urllib.request.urlopen(f"{http}/ready", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_second_serve_fails_at_once_and_a_killed_model_process_is_restarted() -> None:
    ports = {name: free_port() for name in ("port", "grpc-port", "http-port", "metrics-port")}
    flags = [f"--{name}={port}" for name, port in ports.items()] + ["--grpc_port=0"]
    http, url = f"http://127.0.0.1:{ports['port']}", f"ws://127.0.0.1:{ports['port']}/"
    runner = subprocess.Popen(
        [sys.executable, "-m", "a2f_triton.serve", *flags, *WATCHDOG_FLAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: ready_status(http) == 200, 180)
        processes = descendants(runner.pid)
        rendered = RUN_DIR / f"repository-{ports['grpc-port']}-{runner.pid}"  # its own
        assert rendered.is_dir()

        second = subprocess.run(
            [sys.executable, "-m", "a2f_triton.serve", *flags],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stdout == ""
        assert second.stderr.count("\n") == 1  # one line, no traceback
        assert second.stderr.startswith(f"error: port {ports['port']} is in use by pid ")
        assert ready_status(http) == 200
        assert rendered.is_dir()
        assert descendants(runner.pid) == processes

        network = next(pid for pid in processes if "a2f_net_0_0" in command_line(pid))
        timings: dict[str, float] = {}

        def kill_the_network() -> None:
            killed = time.monotonic()
            os.kill(network, signal.SIGKILL)
            assert wait_until(lambda: ready_status(http) == 503, 10)
            timings["unready"] = time.monotonic() - killed
            assert wait_until(lambda: ready_status(http) == 200, 60)
            timings["back"] = time.monotonic() - killed

        async def live_session_across_the_kill() -> list[dict[str, str]]:
            async def kill_soon() -> None:
                await asyncio.sleep(1)
                await asyncio.to_thread(kill_the_network)

            seen, _ = await asyncio.gather(stream_canary(url), kill_soon())
            return seen.errors

        errors = asyncio.run(live_session_across_the_kill())
        assert [error.get("code") for error in errors] == ["inference"]
        print(
            f"a2f_net stub killed: /ready 503 after {timings['unready']:.2f} s, "
            f"200 again after {timings['back']:.2f} s (Triton restarted by the launcher)"
        )
        assert asyncio.run(stream_canary(url)).complete

        processes = descendants(runner.pid)  # the restarted Triton's, stubs included
        os.killpg(runner.pid, signal.SIGINT)
        assert runner.wait(timeout=60) == 0
        assert wait_until(lambda: not any(alive(pid) for pid in processes), 30)
        assert all(port_in_use("127.0.0.1", port) is None for port in ports.values())
        assert not rendered.exists()
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


def serve_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "a2f_triton.serve", *flags]


def test_serve_help_lists_the_gateway_flags_and_an_open_public_bind_is_refused_at_once() -> None:
    shown = subprocess.run(serve_command("--help"), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    description = shown.stdout.split("\n\n")[1]
    assert description.rstrip().endswith(".")  # a whole sentence
    for flag in ("--max_sessions", "--workers", "--tenants_file", "--drain_s", "--restart-after"):
        assert flag in shown.stdout

    refused = subprocess.run(
        serve_command("--host", "0.0.0.0", f"--port={free_port()}"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stdout == ""  # nothing started
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: refusing to serve 0.0.0.0 without --tenants_file")


def tenants_cli(*argv: str) -> str:
    """The key that `python -m gateway.tenancy.cli add ...` prints."""
    command = [sys.executable, "-m", "gateway.tenancy.cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().rsplit(" ", 1)[1]


async def session_worker(url: str, http: str, key: str, admin: str) -> int:
    """The worker PID that served a session on `key` (started and ended)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "StartSession", "blinks": False}))
        started = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert started["type"] == "SessionStarted", started
        request = urllib.request.Request(
            f"{http}/sessions", headers={"Authorization": f"Bearer {admin}"}
        )
        report = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(request)))
        await ws.send(json.dumps({"type": "EndSession"}))
    return next(
        s["worker_pid"] for s in report["sessions"] if s["session_id"] == started["session_id"]
    )


def test_sighup_reloads_every_worker_and_a_killed_gateway_is_restarted(
    redis_url: str, tmp_path: Path
) -> None:
    tenants = tmp_path / "tenants.toml"
    admin = tenants_cli("add", str(tenants), "ops", "--admin")
    port = free_port()
    http, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/"
    runner = subprocess.Popen(
        serve_command(
            f"--port={port}", f"--grpc-port={free_port()}", f"--http-port={free_port()}",
            f"--metrics-port={free_port()}", "--workers=2", f"--tenants_file={tenants}",
            f"--redis_url={redis_url}", "--tenants_reload_s=3600", "--drain_s=1",
            "--grpc_port=0",  # the gRPC API's own port may be another test's
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: ready_status(http) == 200 or runner.poll() is not None, 180)
        assert runner.poll() is None
        processes = set(descendants(runner.pid))
        key = tenants_cli("add", str(tenants), "late")
        os.kill(runner.pid, signal.SIGHUP)  # what an operator does after changing the file

        async def both_workers() -> set[int]:
            workers: set[int] = set()
            deadline = time.monotonic() + 60
            while len(workers) < 2:  # connections land on either worker
                workers.add(await session_worker(url, http, key, admin))
                assert time.monotonic() < deadline, "the sessions did not reach both workers"
            return workers

        workers = asyncio.run(both_workers())
        assert workers <= processes
        assert runner.poll() is None
        assert set(descendants(runner.pid)) == processes  # nothing restarted

        # The gateway (the workers' supervisor) killed outright: started again, on a clean host.
        gateway = next(pid for pid in children_of(runner.pid) if "-m gateway" in command_line(pid))
        os.kill(gateway, signal.SIGKILL)
        assert wait_until(lambda: ready_status(http) != 200, 30)
        assert wait_until(lambda: ready_status(http) == 200, 120)
        assert runner.poll() is None
        assert gateway not in children_of(runner.pid)
        assert asyncio.run(session_worker(url, http, key, admin)) not in workers
        left = [
            *Path(tempfile.gettempdir()).glob(f"a2f-gateway-{gateway}-*"),
            *(p for pid in workers for p in Path("/dev/shm").glob(f"a2f-gateway-{pid}-*")),
        ]
        assert left == []  # removed by the new gateway as it started

        os.killpg(runner.pid, signal.SIGINT)
        assert runner.wait(timeout=60) == 0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
