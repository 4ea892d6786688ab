"""`make gpu-kit`: assemble the benchmark kit for a bare GPU host in ``.run/gpu-kit``.

`python -m gpu_kit.build [--out DIR]`

The host has Python 3.12, PyTorch with CUDA and some of the project's dependencies
(:data:`HOST_PROVIDED`), no network, and takes at most 64 MiB of files per run. The kit holds:

* ``project/``: the project's tracked files, installed there in editable mode (the launcher
  and the benchmark find the model repository and the speech fixture beside the code), with
  one network version: ``--model_version`` (env A2F_MODEL_VERSION; the highest by default);
* ``wheels/``: CPython 3.12 manylinux wheels of every other runtime dependency, the build
  backend for the editable install, and ``nvidia-pytriton`` trimmed to the embedded server
  (``tritonserver``, its libraries, the python backend and the 3.12 stub; without its
  Python client and the dependencies only that client needs), recompressed with LZMA;
* ``run.sh`` and ``README.md``.

Downloading makes this slow and network-bound, so ``make test`` checks the pieces
(``tests/test_gpu_kit.py``) and never runs it whole.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from a2f_triton.repository import LATEST, add_model_version_argument, network_directory

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / ".run" / "gpu-kit"
CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
# Installed without their dependencies (the file says why); run.py installs every kit wheel so.
ACE_REQUIREMENTS = PROJECT_ROOT / "ace_requirements.txt"
SIZE_LIMIT = 60 << 20

# What the GPU host already has, with whatever those need themselves (PyTorch's and ONNX
# Runtime's own dependencies come with them there).
HOST_PROVIDED = frozenset(
    {"torch", "onnxruntime", "grpcio", "numpy", "uvloop", "prometheus-client"}
)
SERVER_PACKAGE = "nvidia-pytriton"
# The editable install of the project builds with these (pyproject's build-system).
BUILD_REQUIREMENTS = ("setuptools>=69", "wheel")
PYTHON_VERSION = "3.12"
# pip's view of the host: CPython 3.12 on x86_64 Linux, manylinux wheels only.
TARGET = (
    "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
    "--platform", "manylinux_2_35_x86_64", "--platform", "manylinux_2_28_x86_64",
    "--platform", "manylinux2014_x86_64",
)  # fmt: skip


def server_file(path: str, python_version: str = PYTHON_VERSION) -> bool:
    """Whether the embedded server needs this file of the nvidia-pytriton wheel
    (launch.TritonInstallation): not its Python client, nor the libpython 3.13 of its own
    proxy, nor the stubs for other Pythons."""
    kept = (
        "pytriton/tritonserver/bin/",
        "pytriton/tritonserver/backends/python/",
        f"pytriton/tritonserver/python_backend_stubs/{python_version}/",
        "nvidia_pytriton.libs/",
    )
    return (
        path.startswith(kept)
        and not path.endswith("/")
        and "__pycache__" not in path
        and not path.startswith("nvidia_pytriton.libs/libpython")
    )


_TRIMMED_INIT = b'"""nvidia-pytriton trimmed to its tritonserver for the open-a2f GPU kit."""\n'


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0])


def runtime_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """The base and server requirements the kit must carry: not the host's, not the server
    (trimmed separately)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    skipped = HOST_PROVIDED | {canonical(SERVER_PACKAGE)}
    return [r for r in wanted if requirement_name(r) not in skipped]


def resolve(requirements: Iterable[str]) -> dict[str, str]:
    """name -> version of everything ``requirements`` pull in for the host, pinned by the
    constraints where they name a package, minus what the host provides."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        _pip(
            "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "--target", str(Path(scratch) / "target"), "-c", str(CONSTRAINTS), *TARGET,
            *requirements,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    pins = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    return {name: version for name, version in pins.items() if name not in HOST_PROVIDED}


def download(pins: dict[str, str], wheels: Path) -> None:
    specs = [f"{name}=={version}" for name, version in sorted(pins.items())]
    _pip("download", "--no-deps", "--quiet", "--dest", str(wheels), *TARGET, *specs)


def trim_server_wheel(
    wheel: Path,
    out_dir: Path,
    python_version: str = PYTHON_VERSION,
    compression: int = zipfile.ZIP_LZMA,
) -> Path:
    """A copy of the nvidia-pytriton wheel with only the embedded server, no dependencies,
    LZMA-compressed (the binaries shrink to about a third); same name and version."""
    out = out_dir / wheel.name
    records: list[str] = []
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w", compression) as kit:
        dist_info = next(n.split("/")[0] for n in source.namelist() if ".dist-info/" in n)

        def write(info: zipfile.ZipInfo, data: bytes) -> None:
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr = info.external_attr  # keeps the executables executable
            copy.compress_type = compression
            kit.writestr(copy, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{info.filename},sha256={digest.decode()},{len(data)}")

        for info in source.infolist():
            name = info.filename
            if name == "pytriton/__init__.py":
                write(info, _TRIMMED_INIT)
            elif name == f"{dist_info}/METADATA":
                text = source.read(info).decode()
                kept = [line for line in text.splitlines() if not line.startswith("Requires-Dist:")]
                write(info, ("\n".join(kept) + "\n").encode())
            elif server_file(name, python_version) or (
                name.startswith(f"{dist_info}/") and name != f"{dist_info}/RECORD"
            ):
                write(info, source.read(info))
        record = zipfile.ZipInfo(f"{dist_info}/RECORD")
        record.compress_type = compression
        kit.writestr(record, "\n".join([*records, f"{dist_info}/RECORD,,"]) + "\n")
    return out


def copy_project(dest: Path, root: Path = PROJECT_ROOT, model_version: int = LATEST) -> None:
    """The tracked files as they are in the working tree, of the network only the version
    `model_version` (the highest by default): the kit serves that one, the highest it has."""
    served = network_directory(root / "model_repository", model_version).relative_to(root)
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        if other_network_version(Path(name), served):
            continue
        source = root / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def other_network_version(name: Path, served: Path) -> bool:
    """Whether the file `name` lies in a network version directory other than `served` (both
    relative to the project root)."""
    if not name.is_relative_to(served.parent):
        return False
    version, *rest = name.relative_to(served.parent).parts
    return bool(rest) and version.isdigit() and version != served.name


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(out: Path, model_version: int = LATEST) -> int:
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    copy_project(out / "project", model_version=model_version)
    download(resolve([*runtime_requirements(), *BUILD_REQUIREMENTS]), wheels)
    _pip(
        "download", "--no-deps", "--quiet", "--dest", str(wheels), *TARGET,
        "-r", str(ACE_REQUIREMENTS),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        version = _constraint_version(SERVER_PACKAGE)
        if version is None:
            raise SystemExit(f"error: {SERVER_PACKAGE} is not pinned in {CONSTRAINTS.name}")
        _pip(
            "download", "--no-deps", "--quiet", "--dest", scratch, *TARGET,
            f"{SERVER_PACKAGE}=={version}",
        )  # fmt: skip
        (server,) = Path(scratch).glob("*.whl")
        trim_server_wheel(server, wheels)
    here = Path(__file__).resolve().parent
    shutil.copy2(here / "run.sh", out / "run.sh")
    shutil.copy2(here / "KIT_README.md", out / "README.md")
    verify(out)
    size = folder_size(out)
    print(f"{out}: {size / 2**20:.1f} MiB in {sum(1 for _ in wheels.iterdir())} wheels + project")
    if size > SIZE_LIMIT:
        print(f"error: the kit is over {SIZE_LIMIT >> 20} MiB", file=sys.stderr)
        return 1
    return 0


def host_stand_ins(dest: Path) -> None:
    """Empty wheels named and versioned like the host's own packages, as pinned here (the
    project does not depend on the unpinned ones)."""
    for name in sorted(HOST_PROVIDED):
        version = _constraint_version(name)
        if version is None:
            continue
        dist = f"{re.sub('-', '_', name)}-{version}"
        with zipfile.ZipFile(dest / f"{dist}-py3-none-any.whl", "w") as wheel:
            files = {
                f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            }
            for path, text in files.items():
                wheel.writestr(path, text)
            wheel.writestr(f"{dist}.dist-info/RECORD", "".join(f"{p},,\n" for p in files))


def verify(kit: Path) -> None:
    """Offline, as the host's pip would: the project builds from the kit alone (its build
    backend is in ``wheels/``), and ``open-a2f[server]`` resolves for CPython 3.12 from the
    kit's wheels plus stand-ins for what the host provides. Exits naming what is missing."""
    with tempfile.TemporaryDirectory() as scratch:
        built, host = Path(scratch) / "project", Path(scratch) / "host"
        built.mkdir()
        host.mkdir()
        host_stand_ins(host)
        offline = ("--no-index", "--find-links", str(kit / "wheels"))
        _pip("wheel", "--quiet", "--no-deps", *offline, "-w", str(built), str(kit / "project"))
        check_resolves("open-a2f[server]", [kit / "wheels", host, built])


def check_resolves(requirement: str, wheel_dirs: list[Path]) -> None:
    """pip, offline and for the host's Python and platform, finds everything ``requirement``
    needs in ``wheel_dirs``; otherwise exits with pip's account of what is missing."""
    with tempfile.TemporaryDirectory() as scratch:
        links = [arg for d in wheel_dirs for arg in ("--find-links", str(d))]
        _pip(
            "install", "--dry-run", "--quiet", "--ignore-installed", "--no-index", *links,
            "--target", str(Path(scratch) / "target"), *TARGET, requirement,
        )  # fmt: skip


def _constraint_version(name: str) -> str | None:
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and requirement_name(line) == canonical(name):
            return line.split("==", 1)[1].strip()
    return None


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: pip {args[0]} failed:\n{result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--verify-only", action="store_true", help="check a built kit offline")
    add_model_version_argument(parser)
    args = parser.parse_args(argv)
    if args.verify_only:
        verify(args.out)
        print(f"{args.out}: installs offline for CPython {PYTHON_VERSION}")
        return 0
    try:
        served = network_directory(PROJECT_ROOT / "model_repository", args.model_version)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return build(args.out, int(served.name))


if __name__ == "__main__":
    sys.exit(main())
