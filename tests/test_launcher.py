"""The embedded Triton launcher: real tritonserver, loopback only, nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from a2f_triton import launch
from conftest import PROJECT_ROOT, free_port

LAUNCH_SCRIPT = PROJECT_ROOT / "triton" / "launch.py"
TCP_LISTEN = "0A"
# /proc/net/tcp{,6} spelling of 127.0.0.1, ::ffff:127.0.0.1 (gRPC listens on a v6 socket) and ::1
LOOPBACK_ADDRESSES = {
    "0100007F",
    "0000000000000000FFFF00000100007F",
    "00000000000000000000000001000000",
}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def listening_addresses(pid: int) -> dict[int, str]:
    """Port -> hex IPv4 address of every TCP socket in LISTEN state owned by `pid`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == TCP_LISTEN and fields[9] in inodes:
                found[int(port, 16)] = address
    return found


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1
        ) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def launched(tmp_path: Path):
    """`python triton/launch.py` as a user runs it, on free ports."""
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    process = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCH_SCRIPT),
            f"--grpc-port={ports['grpc']}",
            f"--http-port={ports['http']}",
            f"--metrics-port={ports['metrics']}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until(lambda: ready(ports["http"]) or process.poll() is not None, 180)
        assert process.poll() is None, process.stdout.read().decode()
        (server_pid,) = children_of(process.pid)
        yield process, server_pid, ports
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_launcher_serves_inference_on_loopback_and_stops_cleanly(launched) -> None:
    process, server_pid, ports = launched
    assert set(listening_addresses(server_pid)) >= set(ports.values())
    assert set(listening_addresses(server_pid).values()) <= LOOPBACK_ADDRESSES, "loopback only"

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
    try:
        audio = grpcclient.InferInput("AUDIO", [2, 8320], "FP32")
        audio.set_data_from_numpy(np.zeros((2, 8320), np.float32))
        result = await client.infer("a2f_net", [audio])
        assert result.as_numpy("BLENDSHAPES").shape == (2, 52)
        assert result.as_numpy("VISEMES").shape == (2, 15)
    finally:
        await client.close()

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert not alive(server_pid), "tritonserver outlived its launcher"
    assert not ready(ports["http"])


def test_killed_launcher_takes_the_server_with_it(launched) -> None:
    process, server_pid, _ = launched
    process.kill()
    process.wait()
    assert wait_until(lambda: not alive(server_pid), 60), "orphaned tritonserver"


def test_missing_libpython_is_reported_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(launch.ctypes, "CDLL", no_library)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(launch.LaunchError, match=rf"libpython{version}.*apt-get install"):
        launch.TritonInstallation.locate().check_libpython()


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    port = free_port()  # free when checked, but the server's gRPC and HTTP both want it
    server = launch.EmbeddedTriton(
        grpc_port=port, http_port=port, metrics_port=free_port(), run_dir=tmp_path
    )
    with pytest.raises(launch.LaunchError, match="exited with code"):
        server.start()
    assert server.pid is None
    assert not list(tmp_path.glob("repository-*")), "its rendered repository is removed"


def test_a_busy_port_fails_before_anything_starts_naming_its_holder(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = launch.EmbeddedTriton(
            grpc_port=free_port(), http_port=port, metrics_port=free_port(), run_dir=tmp_path
        )
        with pytest.raises(launch.LaunchError) as raised:
            server.start()
    assert str(raised.value).startswith(f"port {port} is in use by pid {os.getpid()} (")
    assert "Triton HTTP" in str(raised.value) and "\n" not in str(raised.value)
    assert server.pid is None and not any(tmp_path.iterdir()), "nothing rendered, nothing started"


def test_a_server_killed_outright_leaves_no_stub_shared_memory(tmp_path: Path) -> None:
    server = launch.EmbeddedTriton(
        grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), run_dir=tmp_path
    )
    server.start()
    try:
        assert server.pid is not None
        regions = launch.stub_shm_regions(server.pid)
        assert len(regions) >= 3  # a2f_net, a2f_post, a2f_span
        assert all(Path(launch.SHM_DIR, r).exists() for r in regions)
        os.kill(server.pid, signal.SIGKILL)  # no chance to unlink them itself
        assert wait_until(lambda: server.exit_code is not None, 30)
    finally:
        server.stop()
    assert not any(Path(launch.SHM_DIR, r).exists() for r in regions)
