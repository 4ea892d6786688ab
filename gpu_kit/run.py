"""On the GPU host: check it, install the kit without a network, run the GPU benchmark.

`python3 project/gpu_kit/run.py [bench_gpu options]` (what ``run.sh`` does)

Standard library only: it runs with the host's own Python before anything is installed.
Every missing prerequisite is listed at once, in plain words, before anything starts.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent.parent
PYTHON_VERSION = (3, 12)
GLIBC = (2, 35)  # the nvidia-pytriton wheel is manylinux_2_35
HOST_MODULES = ("torch", "onnxruntime", "grpc", "numpy", "uvloop", "prometheus_client")
# Imported after the install: the server, the gateway and the load generator.
SMOKE_IMPORTS = (
    "a2f_triton.launch", "gateway.web.app", "loadtest.bench", "loadtest.drive", "gpu_kit.bench_gpu",
    "tritonclient.grpc.aio", "litestar", "uvicorn", "soxr", "soundfile", "msgspec",
)  # fmt: skip
CUDA_PROBE = (
    "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; "
    "print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
)


def libpython_directory() -> tuple[str | None, str | None]:
    """(directory to add to LD_LIBRARY_PATH or None, problem or None): the python backend stub
    embeds the shared libpython of this Python version."""
    name = f"libpython{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}.so.1.0"
    try:
        ctypes.CDLL(name)
        return None, None
    except OSError:
        pass
    directory = sysconfig.get_config_var("LIBDIR") or ""
    if (Path(directory) / name).is_file():
        return directory, None
    return None, (
        f"no shared {name}: the Triton python backend stub embeds it; this Python "
        f"({sys.executable}) was built without --enable-shared and none is installed "
        f"(Debian/Ubuntu: apt-get install libpython{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]})"
    )


def check_host() -> tuple[list[str], list[str], dict[str, str]]:
    """(problems that stop the run, notes, environment additions)."""
    problems, notes, env = [], [], {}
    if sys.version_info[:2] != PYTHON_VERSION:
        problems.append(
            f"python3 is {platform.python_version()}: the kit's wheels and the server's stub "
            f"are for {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"
        )
    libc, version = platform.libc_ver()
    numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if libc != "glibc" or numbers < GLIBC:
        problems.append(f"glibc {version or '?'}: the embedded tritonserver needs >= 2.35")
    directory, problem = libpython_directory()
    if problem:
        problems.append(problem)
    if directory:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (directory, os.environ.get("LD_LIBRARY_PATH", "")) if p
        )
        notes.append(f"libpython found in {directory} (added to LD_LIBRARY_PATH)")
    missing = [m for m in HOST_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        problems.append(f"not installed for {sys.executable}: {', '.join(missing)}")
    if "torch" not in missing:
        probe = subprocess.run(
            [sys.executable, "-c", CUDA_PROBE], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            notes.append(f"torch {probe.stdout.strip()}")
        else:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            problems.append(f"PyTorch sees no CUDA device: {last}")
    if importlib.util.find_spec("pip") is None:
        problems.append(f"pip is not installed for {sys.executable}")
    if shutil.which("nvidia-smi") is None:
        notes.append("nvidia-smi not found: no GPU utilisation in the table")
    return problems, notes, env


def install(venv: Path) -> None:
    """A venv that sees the host's packages (PyTorch, ONNX Runtime, ...) plus the kit's.
    Without pip in it (ensurepip may be missing): the host's pip installs into it."""
    if not (venv / "bin" / "python").exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
            check=True,
        )
    pip = [
        sys.executable, "-m", "pip", "--disable-pip-version-check", "--python",
        str(venv / "bin" / "python"), "install", "--quiet", "--no-index",
        "--find-links", str(KIT / "wheels"),
    ]  # fmt: skip
    # No dependency resolution against the host: its versions (NumPy 2, a newer grpcio)
    # may lie outside the project's pins yet work; the import check below decides.
    wheels = sorted(str(w) for w in (KIT / "wheels").glob("*.whl"))
    subprocess.run([*pip, "--no-deps", *wheels], check=True)
    subprocess.run([*pip, "--no-deps", "--editable", str(KIT / "project")], check=True)


def main(argv: list[str]) -> int:
    problems, notes, env = check_host()
    for note in notes:
        print(f"note: {note}")
    if problems:
        print("this host cannot run the kit yet:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    venv = KIT / ".venv"
    print(f"installing the kit into {venv} (offline) ...", flush=True)
    try:
        install(venv)
    except subprocess.CalledProcessError as exc:
        print(f"error: the install failed (exit {exc.returncode}); see pip's output above")
        return 1
    python = str(venv / "bin" / "python")
    smoke = subprocess.run(
        [python, "-c", "import " + ", ".join(SMOKE_IMPORTS)], capture_output=True, text=True
    )
    if smoke.returncode != 0:
        last = (smoke.stderr.strip().splitlines() or ["?"])[-1]
        print(f"error: the installed kit does not import: {last}", file=sys.stderr)
        return 1
    environment = os.environ | env
    os.chdir(KIT / "project")
    os.execve(python, [python, "-m", "gpu_kit.bench_gpu", *argv], environment)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
