"""The Locust load test headless against a gateway with tenants, as a remote client runs it:
a key, the server's default frame rate learnt from `SessionStarted`, from a directory without
the repository (no model files), WebSocket streams, gRPC streams (NVIDIA's API) and batch
uploads mixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from a2f_triton.processes import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = PROJECT_ROOT / "loadtest" / "locustfile.py"
STREAMS, ACE, UPLOADS = 3, 2, 1


@pytest.fixture(scope="module")
def tenant_gateway(start_gateway, tmp_path_factory):  # type: ignore[no-untyped-def]
    tenants = tmp_path_factory.mktemp("locust-tenants") / "tenants.toml"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.tenancy.cli", "add", str(tenants), "loadtest"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    gateway = start_gateway("--tenants_file", str(tenants), grpc_port=free_port())
    return gateway, done.stdout.split()[-1]


def locust(gateway, cwd: Path, key: str, *flags: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("A2F_")}
    users = str(STREAMS + ACE + UPLOADS)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", users,
        "-r", users, "-t", "6s", "--host", gateway.url, "--grpc-url", gateway.grpc,
        "--json-file", "run", "--only-summary", "--stream-weight", str(STREAMS),
        "--ace-weight", str(ACE), "--batch-weight", str(UPLOADS), *flags,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, env={**env, "A2F_API_KEY": key}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def stats(folder: Path) -> dict[str, dict[str, int]]:
    """Locust's final statistics by "type name": the JSON file is written after every user has
    stopped (its `EndSession` accounting included), the CSV files before."""
    entries = json.loads((folder / "run.json").read_text())
    return {f"{e['method']} {e['name']}": e for e in entries}


def test_locust_streams_and_uploads_with_a_key_and_the_servers_rate(
    tenant_gateway, fixtures_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gateway, key = tenant_gateway
    assert not (tmp_path / "model_repository").exists()
    done = locust(gateway, tmp_path, key, "--audio", str(fixtures_dir / "speech_16k.wav"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    rows = stats(tmp_path)
    failures = {name: row["num_failures"] for name, row in rows.items() if row["num_failures"]}
    assert failures == {}, failures  # no frame lost, no server error, no stream without frames
    assert "WS frame lost" not in rows and "WS server error" not in rows
    assert rows["WS stream"]["num_requests"] == STREAMS  # every stream user got frames
    assert rows["WS frame"]["num_requests"] > STREAMS * 60  # over a second each at 60 fps
    assert rows["gRPC stream"]["num_requests"] == ACE  # every gRPC user got frames
    assert rows["gRPC frame"]["num_requests"] > ACE * 30  # over a second each at 30 fps
    assert rows["POST POST /v1/animate"]["num_requests"] >= 1


def test_a_refused_key_stops_locust_with_one_line(tenant_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway, _ = tenant_gateway
    done = locust(gateway, tmp_path, "a2f_wrong")
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if "refused (unauthorized)" in line]
    assert len(refusals) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
