"""The GPU kit's pieces, offline: what it carries, the trimmed server, the install check,
the host check and the GPU columns. Building a whole kit downloads, so `make gpu-kit` does
that and verifies its own result with the same `check_resolves`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gpu_kit import bench_gpu, build

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def make_wheel(directory: Path, name: str, version: str, requires: list[str] = (), files=()):
    """A minimal wheel: `files` are (path, bytes, unix mode)."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as wheel:
        entries = [
            *files,
            (f"{dist}.dist-info/METADATA", metadata.encode(), 0o644),
            (f"{dist}.dist-info/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n", 0o644),
        ]
        for filename, data, mode in entries:
            info = zipfile.ZipInfo(filename)
            info.external_attr = (0o100000 | mode) << 16  # a regular file
            wheel.writestr(info, data)
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_kit_carries_neither_the_hosts_packages_nor_the_full_server() -> None:
    names = {build.requirement_name(r) for r in build.runtime_requirements()}
    assert {"litestar", "tritonclient", "msgspec", "uvicorn"} <= names
    assert not names & (build.HOST_PROVIDED | {"nvidia-pytriton"})


def test_trimmed_server_wheel_keeps_the_server_only(tmp_path: Path) -> None:
    server = [
        ("pytriton/tritonserver/bin/tritonserver", b"\x7fELF server", 0o755),
        ("pytriton/tritonserver/backends/python/libtriton_python.so", b"backend", 0o644),
        ("pytriton/tritonserver/backends/python/triton_python_backend_utils.py", b"", 0o644),
        ("pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub", b"", 0o755),
        ("nvidia_pytriton.libs/libtritonserver-1.so", b"lib", 0o644),
    ]
    dropped = [
        ("pytriton/client/client.py", b"client", 0o644),
        ("pytriton/tritonserver/backends/python/__pycache__/x.pyc", b"", 0o644),
        ("pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub", b"", 0o755),
        ("nvidia_pytriton.libs/libpython3-1.13.so.1.0", b"python", 0o755),
    ]
    source = tmp_path / "source"
    source.mkdir()
    wheel = make_wheel(
        source,
        "nvidia-pytriton",
        "0.7.0",
        ["numpy<2", "pyzmq>=23"],
        [("pytriton/__init__.py", b"from pytriton import client", 0o644), *server, *dropped],
    )
    out = tmp_path / "out"
    out.mkdir()
    trimmed = build.trim_server_wheel(wheel, out, python_version="3.12")
    assert trimmed.name == wheel.name
    with zipfile.ZipFile(trimmed) as z:
        names = set(z.namelist())
        assert {path for path, _, _ in server} <= names
        assert not {path for path, _, _ in dropped} & names
        assert all(i.compress_type == zipfile.ZIP_LZMA for i in z.infolist() if i.file_size)
        assert b"Requires-Dist" not in z.read("nvidia_pytriton-0.7.0.dist-info/METADATA")
        assert b"import" not in z.read("pytriton/__init__.py")
    # pip installs it as it is (no dependencies, executables still executable).
    target = tmp_path / "target"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--target", str(target),
         str(trimmed)],
        check=True,
    )  # fmt: skip
    assert os.access(target / "pytriton/tritonserver/bin/tritonserver", os.X_OK)
    assert (target / "nvidia_pytriton.libs/libtritonserver-1.so").read_bytes() == b"lib"


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_trimmed_server_finds_every_library_it_links(tmp_path: Path) -> None:
    """The files the trim keeps, laid out as installed, resolve all their shared libraries
    (the stub's libpython comes from the system, as on the GPU host)."""
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.origin is not None
    site = Path(spec.origin).parent.parent
    for directory in (site / "pytriton", site / "nvidia_pytriton.libs"):
        for path in directory.rglob("*"):
            name = path.relative_to(site).as_posix()
            if path.is_file() and build.server_file(name, PYTHON_VERSION):
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, tmp_path / name)
                except OSError:
                    shutil.copy2(path, tmp_path / name)
    server = tmp_path / "pytriton" / "tritonserver"
    binaries = [
        server / "bin" / "tritonserver",
        server / "backends" / "python" / "libtriton_python.so",
        server / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub",
    ]
    for binary in binaries:
        linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        missing = [line.strip() for line in linked.splitlines() if "not found" in line]
        assert not missing, (binary.name, missing)
    kept = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert kept < 120 << 20  # uncompressed; LZMA brings it to ~27 MB


def test_check_resolves_names_what_the_kit_lacks(tmp_path: Path) -> None:
    kit, host, project = tmp_path / "kit", tmp_path / "host", tmp_path / "project"
    for directory in (kit, host, project):
        directory.mkdir()
    make_wheel(project, "open-a2f", "0.1.0", ["litestar>=2", "numpy<2"])
    make_wheel(kit, "litestar", "2.25.0", ["rich-click"])
    make_wheel(host, "numpy", "1.26.4")
    with pytest.raises(SystemExit, match="rich-click"):
        build.check_resolves("open-a2f", [kit, host, project])
    make_wheel(kit, "rich-click", "1.9.9")
    build.check_resolves("open-a2f", [kit, host, project])


def test_host_stand_ins_carry_the_pinned_versions(tmp_path: Path) -> None:
    build.host_stand_ins(tmp_path)
    names = {p.name.split("-")[0] for p in tmp_path.glob("*.whl")}
    assert {"numpy", "grpcio", "onnxruntime", "uvloop", "prometheus_client"} <= names


def test_run_on_a_host_without_the_prerequisites_lists_them_plainly() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "gpu_kit" / "run.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PATH": os.environ["PATH"]},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot run the kit" in result.stderr
    if sys.version_info[:2] != (3, 12):
        assert f"python3 is {PYTHON_VERSION}." in result.stderr
    if importlib.util.find_spec("torch") is None:
        assert "torch" in result.stderr


def test_kit_files_are_in_place() -> None:
    script = ROOT / "gpu_kit" / "run.sh"
    assert os.access(script, os.X_OK)
    assert "gpu_kit/run.py" in script.read_text()
    assert "bash .run/gpu-kit/run.sh" in (ROOT / "gpu_kit" / "KIT_README.md").read_text()


def test_gpu_columns_follow_each_level() -> None:
    sampler = bench_gpu.GpuSampler.__new__(bench_gpu.GpuSampler)
    sampler.samples = [(1.0, 10.0, 100.0), (2.0, 30.0, 300.0), (5.0, 90.0, 900.0)]
    assert sampler.between(0.5, 2.5) == " 20 | 300 |"
    assert sampler.between(3.0, 4.0) == " - | - |"
    assert bench_gpu.annotate("| stack | fps |\n", "") == "| stack | fps |" + bench_gpu.GPU_HEADER
    assert bench_gpu.annotate("| triton | 30 |\n", " 20 | 300 |") == "| triton | 30 | 20 | 300 |"
    report = ["# make bench", "| stack | fps |", "|---|---:|", "| triton | 30 |", "| triton | 30 |"]
    annotated = bench_gpu.with_gpu_columns(report, [" 20 | 300 |"])
    assert annotated[3].endswith(" 20 | 300 |") and annotated[4].endswith(" - | - |")
    assert annotated[1].endswith(bench_gpu.GPU_HEADER) and annotated[0] == "# make bench"


def test_the_kit_packs_only_the_network_version_it_serves() -> None:
    served = Path("model_repository/a2f_net/3")
    for name, left_out in (
        ("model_repository/a2f_net/1/model.onnx", True),
        ("model_repository/a2f_net/1/manifest.json", True),
        ("model_repository/a2f_net/2/model.onnx", True),
        ("model_repository/a2f_net/3/model.onnx", False),
        ("model_repository/a2f_net/config.pbtxt", False),
        ("model_repository/a2f_net/python_flavour/model.py", False),
        ("model_repository/a2f_post/1/model.onnx", False),
    ):
        assert build.other_network_version(Path(name), served) is left_out, name
