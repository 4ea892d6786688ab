"""`make serve`'s runner: Triton + gateway on loopback, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from conftest import free_port
from test_launcher import LOOPBACK_ADDRESSES, alive, children_of, listening_addresses, wait_until


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
