"""Versions of the network (`a2f_net/N/`): the highest is served unless `--model_version` names
another, by Triton's own means (the network's version_policy, the ensemble's model_version, the
manifest the other models read); a version that is not there, or one with other channels, is
refused in one line. On a copy of the repository with one more version than it ships (a copy of
version 1 whose manifest says "9.9.9-test"), served by the real tritonserver and gateway."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from a2f_triton import repository
from a2f_triton.gateway_process import run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import LaunchError, free_port
from conftest import embedded_triton
from test_launcher import wait_until

from gateway.model_info import ModelInfo

SOURCE = Path(__file__).resolve().parent.parent / "model_repository"
TEST_VERSION = "9.9.9-test"
V1_VERSION = ModelInfo.load(SOURCE, 1).version


@pytest.fixture(scope="module")
def versioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(a copy of the repository with one more network version, that version's number)."""
    repo = tmp_path_factory.mktemp("versions") / "model_repository"
    shutil.copytree(SOURCE, repo, ignore=shutil.ignore_patterns("__pycache__", "*.plan"))
    newest = max(repository.network_versions(repo)) + 1
    added = add_version(repo, newest)
    manifest = json.loads((added / repository.MANIFEST_NAME).read_text())
    (added / repository.MANIFEST_NAME).write_text(
        json.dumps({**manifest, "model_version": TEST_VERSION})
    )
    return repo, newest


def add_version(repo: Path, number: int) -> Path:
    """Version `number` of the network in `repo`: a copy of version 1's files."""
    added = repo / repository.NETWORK / str(number)
    shutil.copytree(repo / repository.NETWORK / "1", added)
    return added


# --- which version (no server) -----------------------------------------------------------


def test_the_highest_version_is_the_default_and_another_can_be_named(
    versioned: tuple[Path, int],
) -> None:
    repo, newest = versioned
    assert list(repository.network_versions(repo)) == [*range(1, newest + 1)]
    assert repository.network_directory(repo) == repo / "a2f_net" / str(newest)
    assert repository.network_directory(repo, 1) == repo / "a2f_net" / "1"
    assert ModelInfo.load(repo).version == TEST_VERSION
    assert ModelInfo.load(repo).repository_version == newest
    assert ModelInfo.load(repo, 1).version == V1_VERSION


def test_a_missing_version_is_refused_naming_the_versions_there(
    versioned: tuple[Path, int],
) -> None:
    repo, newest = versioned
    listed = ", ".join(str(n) for n in range(1, newest + 1))
    with pytest.raises(repository.VersionError) as refusal:
        repository.network_directory(repo, 99)
    message = str(refusal.value)
    assert "version 99 is not in" in message and f"versions available: {listed}" in message
    assert "\n" not in message
    with pytest.raises(repository.VersionError, match="version 99"):
        repository.render_repository(
            repo, repo.parent / "out", available_backends={"python"}, model_version=99
        )
    assert not (repo.parent / "out").exists()  # refused before writing anything


def test_a_directory_without_weights_is_no_version(tmp_path: Path) -> None:
    (tmp_path / "a2f_net" / "3").mkdir(parents=True)
    (tmp_path / "a2f_net" / "python_flavour").mkdir()
    assert repository.network_versions(tmp_path) == {}
    with pytest.raises(repository.VersionError, match="no a2f_net version"):
        repository.network_directory(tmp_path)


def test_a_version_with_other_channels_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "model_repository"
    shutil.copytree(SOURCE / "a2f_net", repo / "a2f_net", ignore=shutil.ignore_patterns("__py*"))
    newest = max(repository.network_versions(repo)) + 1
    manifest_file = add_version(repo, newest) / repository.MANIFEST_NAME
    manifest = json.loads(manifest_file.read_text())
    manifest["outputs"]["BLENDSHAPES"]["channels"][0] = "renamed"
    manifest_file.write_text(json.dumps(manifest))
    for chosen in (1, newest):  # served or not, the versions must agree
        with pytest.raises(repository.VersionError, match="other BLENDSHAPES and VISEMES channels"):
            repository.network_directory(repo, chosen)


def test_the_renderer_refuses_in_one_line(versioned: tuple[Path, int], tmp_path: Path) -> None:
    repo, newest = versioned
    (tmp_path / "backends" / "python").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, str(Path(repository.__file__)), "--source", str(repo),
         "--target", str(tmp_path / "out"), "--backend-directory", str(tmp_path / "backends"),
         "--model_version", "99"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and not done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: a2f_net version 99 is not in") and f"{newest}" in line


def test_the_launchers_refuse_before_starting_anything(versioned: tuple[Path, int]) -> None:
    repo, _ = versioned
    server = EmbeddedTriton(model_repository=repo, model_version=99)
    with pytest.raises(LaunchError, match="version 99 is not in"):
        server.start()
    assert server.pid is None
    done = subprocess.run(
        [sys.executable, "-m", "a2f_triton.serve", f"--model-repository={repo}",
         "--model_version=99", f"--port={free_port()}", "--grpc_port=0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: a2f_net version 99 is not in"), line
    gateway = subprocess.run(
        [sys.executable, "-m", "gateway", f"--model_repository={repo}", "--model_version=99"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert gateway.returncode == 1
    (line,) = gateway.stderr.splitlines()
    assert line.startswith("gateway: a2f_net version 99 is not in"), line


def test_the_rendering_names_the_served_version_everywhere(
    versioned: tuple[Path, int], tmp_path: Path
) -> None:
    repo, newest = versioned
    for asked, served, version in ((0, newest, TEST_VERSION), (1, 1, V1_VERSION)):
        target = tmp_path / f"asked-{asked}"
        repository.render_repository(
            repo, target, available_backends={"python"}, model_version=asked
        )
        net = (target / "a2f_net" / "config.pbtxt").read_text()
        assert f"version_policy: {{ specific: {{ versions: [ {served} ] }} }}" in net
        ensemble = (target / "a2f" / "config.pbtxt").read_text()
        assert re.search(rf'model_name: "a2f_net"\s*model_version: {served}\n', ensemble)
        assert f'"network_version", value: {{ string_value: "{version}" }}' in ensemble
        for model in ("a2f_post", "a2f_span"):
            config = (target / model / "config.pbtxt").read_text()
            assert f'string_value: "../a2f_net/{served}/manifest.json"' in config, model
        # The python flavour's code goes into the served version only.
        for number in range(1, newest + 1):
            code = target / "a2f_net" / str(number) / "model.py"
            assert code.is_file() == (number == served), number


# --- served by the real tritonserver and gateway ------------------------------------------


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def status_or_zero(url: str) -> int:
    """`status`, or 0 while nothing answers."""
    try:
        return status(url)
    except OSError:
        return 0


def check_served(triton_http: str, gateway_http: str, served: int, version: str) -> None:
    """Triton's own model APIs and the gateway's /health agree that `served` is served."""
    assert get_json(f"{triton_http}/v2/models/a2f_net")["versions"] == [str(served)]
    assert status(f"{triton_http}/v2/models/a2f_net/versions/{served}/ready") == 200
    other = 1 if served != 1 else served + 1
    assert status(f"{triton_http}/v2/models/a2f_net/versions/{other}/ready") != 200
    steps = get_json(f"{triton_http}/v2/models/a2f/config")["ensemble_scheduling"]["step"]
    (network,) = [step for step in steps if step["model_name"] == "a2f_net"]
    assert int(network["model_version"]) == served
    model = get_json(f"{gateway_http}/health")["model"]
    assert model["served"]["a2f_net"] == str(served)
    assert model["served"]["network"] == version
    assert (model["version"], model["repository_version"]) == (version, served)


def test_triton_serves_the_highest_version_by_default(
    versioned: tuple[Path, int], tmp_path: Path
) -> None:
    repo, newest = versioned
    with (
        embedded_triton(tmp_path, model_repository=repo) as triton,
        run_gateway(
            triton.grpc_url, "--model-repository", str(repo), log=tmp_path / "gateway.log"
        ) as gateway,
    ):
        check_served(triton.http_url, gateway.http, newest, TEST_VERSION)


def test_serve_goes_back_to_version_1_when_told(versioned: tuple[Path, int]) -> None:
    """`make serve ARGS="--model_version 1"`: Triton and the gateway both on version 1."""
    repo, _ = versioned
    port, triton_http = free_port(), free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "a2f_triton.serve", f"--model-repository={repo}",
         "--model_version=1", f"--port={port}", "--grpc_port=0", f"--grpc-port={free_port()}",
         f"--http-port={triton_http}", f"--metrics-port={free_port()}",
         "--busy_latency_ms=0", "--fair_latency_ms=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    gateway = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: status_or_zero(f"{gateway}/ready") == 200, 180)
        check_served(f"http://127.0.0.1:{triton_http}", gateway, 1, V1_VERSION)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: the gateway, then Triton
            try:
                runner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
