"""The client installs and runs without the server's dependencies (`pip install open-a2f`),
and without gRPC and NVIDIA's packages, which only its ACE mode needs (`open-a2f[ace]`)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import soundfile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("litestar", "tritonclient", "onnxruntime", "pytriton", "uvicorn", "gateway")
ACE_ONLY = ("grpc", "nvidia_ace", "nvidia_audio2face_3d")
SERVER_DISTRIBUTIONS = ("litestar", "tritonclient", "onnxruntime", "nvidia-pytriton", "uvicorn")

# Runs first in the child: importing any server-only package fails as if it were not installed.
BLOCK_SERVER_PACKAGES = f"""
import sys

class ServerPackageBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, ServerPackageBlocker())
"""

USE_THE_CLIENT = """
import asyncio, json, socket, sys
import numpy as np

import a2f_client
from a2f_client import cli
from a2f_client._audio import probe_file, wire_audio
from a2f_protocol.frames import pack_frame, unpack_frame
from a2f_protocol.messages import decode_server_message, encode_message
from a2f_client.streaming import start_request

wav, out = sys.argv[1], sys.argv[2]
request = start_request(fps=60, emotions={"joy": 0.5}, channels="all")
assert json.loads(encode_message(request))["type"] == "StartSession"
ended = decode_server_message(b'{"type":"SessionEnded","session_id":"x"}')
assert type(ended).__name__ == "SessionEnded"
frame = unpack_frame(pack_frame(3, 800, 1066, np.ones(52, np.float32)))
assert frame.frame_index == 3 and frame.weights.shape == (52,)

assert probe_file(wav).sample_rate == 22_050
audio = wire_audio(wav, 16_000, 0.1)
async def count():
    return sum([block.size async for block in audio.blocks])
assert audio.rate == 22_050 and asyncio.run(count()) == 22_050

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
for command in ("animate", "stream"):
    status = cli.main([command, wav, "--url", f"127.0.0.1:{port}", "--out", out])
    assert status == 1, status
assert cli.main(["stream", wav, "--protocol", "ace", "--out", out]) == 1
for name in SERVER_ONLY:
    assert name not in sys.modules, name
print("client ok")
"""


def test_the_client_works_without_the_server_packages(tmp_path: Path) -> None:
    wav = tmp_path / "one_second.wav"
    soundfile.write(wav, np.zeros(22_050, np.int16), 22_050, subtype="PCM_16")
    code = (
        BLOCK_SERVER_PACKAGES.replace(repr(SERVER_ONLY), repr(SERVER_ONLY + ACE_ONLY))
        + f"SERVER_ONLY = {SERVER_ONLY + ACE_ONLY!r}\n"
        + textwrap.dedent(USE_THE_CLIENT)
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(wav), str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "client ok" in done.stdout
    assert done.stderr.count("a2f: error: cannot connect") == 2, done.stderr
    assert "a2f: error: the ACE mode needs " in done.stderr
    assert "pip install 'open-a2f[ace]'" in done.stderr


def test_the_blocker_blocks(tmp_path: Path) -> None:
    code = BLOCK_SERVER_PACKAGES + "import gateway.web.app\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT
    )
    assert done.returncode != 0 and "blocked by the test" in done.stderr


def test_base_dependencies_name_no_server_package() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    names = [
        re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]
    ]
    assert not set(names) & set(SERVER_DISTRIBUTIONS), names
    assert not any(name.startswith("open-a2f") for name in names)
    server = " ".join(project["optional-dependencies"]["server"])
    assert all(name in server for name in SERVER_DISTRIBUTIONS)
    assert "open-a2f[server]" in project["optional-dependencies"]["dev"]
    ace = " ".join(project["optional-dependencies"]["ace"])
    assert "grpcio" in ace and not any(name in ace for name in SERVER_DISTRIBUTIONS)
