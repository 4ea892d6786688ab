"""Run the embedded Triton Inference Server from the ``nvidia-pytriton`` wheel on this project's models.

Used three ways: as a script (``python triton/launch.py``, foreground until Ctrl-C/SIGTERM),
as a context manager (``with EmbeddedTriton(...) as server:``) by the service runner, tests and
benchmarks, and through ``serve.py`` for ``make serve``.

Installed as ``a2f_triton.launch``: the ``triton/`` folder is mapped to the package name
``a2f_triton`` (pyproject.toml), since an importable ``triton`` would shadow the Triton compiler
package that PyTorch installs.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from a2f_triton import repository
from a2f_triton.processes import (
    LOOPBACK,
    STOP_GRACE_S,
    LaunchError,
    answers_ok,
    check_ports_free,
    spawn,
    terminate,
    wait_ready,
)

from gateway.pids import alive

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
RUN_DIR = PROJECT_ROOT / ".run"
PYTHON_SHM_BYTES = 16 << 20


@dataclass(frozen=True)
class TritonInstallation:
    """Where the wheel keeps the server binary, its libraries and the python backend pieces."""

    server_binary: Path
    python_backend: Path
    stub: Path
    libs: Path

    @classmethod
    def locate(cls) -> TritonInstallation:
        spec = importlib.util.find_spec("pytriton")  # locate without importing the heavy package
        if spec is None or spec.origin is None:
            raise LaunchError(
                "nvidia-pytriton is not installed in this environment: run `make serve` or "
                "`pip install nvidia-pytriton` (it carries the tritonserver binary)"
            )
        root = Path(spec.origin).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = cls(
            server_binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=Path(spec.origin).parent.parent / "nvidia_pytriton.libs",
        )
        if not found.server_binary.is_file():
            raise LaunchError(f"tritonserver binary missing from the wheel: {found.server_binary}")
        if not found.stub.is_file():
            raise LaunchError(f"nvidia-pytriton ships no python backend stub for Python {version}")
        return found

    def check_libpython(self) -> None:
        """The stub embeds the system's shared libpython; say so plainly when it is absent."""
        name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            raise LaunchError(
                f"{name} was not found: the Triton python backend stub embeds the system's shared "
                f"Python library. Install it (Debian: apt-get install "
                f"libpython{sys.version_info.major}.{sys.version_info.minor}) and retry."
            ) from exc

    def backend_directory(self, run_dir: Path) -> Path:
        """A backend dir outside site-packages with the stub matching this interpreter."""
        key = hashlib.sha256(str(self.stub).encode()).hexdigest()[:12]
        backends = run_dir / f"backends-{key}"
        python_dir = backends / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (
            self.python_backend / "libtriton_python.so",
            self.python_backend / "triton_python_backend_utils.py",
            self.stub,
        ):
            link = python_dir / source.name
            if not link.is_symlink() or link.resolve() != source.resolve():
                link.unlink(missing_ok=True)
                link.symlink_to(source)
        return backends


def torch_sees_cuda(timeout_s: float = 120.0) -> bool:
    """Whether PyTorch in this environment, which the python backend stubs share, sees a CUDA
    device. Asked in a child process: the launcher itself keeps neither torch nor a driver."""
    if importlib.util.find_spec("torch") is None:
        return False
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@dataclass
class EmbeddedTriton:
    """The real ``tritonserver`` on loopback, serving a rendered copy of the model repository."""

    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    host: str = LOOPBACK
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    instances: int = repository.DEFAULT_INSTANCES
    ort_threads: int = repository.DEFAULT_ORT_THREADS
    flavour: str = "auto"
    dynamic_batching: bool = True
    max_queue_delay_us: int | None = None
    model_version: int = repository.LATEST  # of a2f_net; the highest by default
    run_dir: Path = RUN_DIR
    log_path: Path | None = None
    startup_timeout_s: float = 180.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _rendered: Path | None = field(default=None, init=False, repr=False)
    # The python-backend stubs' shared-memory regions: a server that is killed outright cannot
    # unlink them, and each holds its stub's tensors (16 MiB or more) in RAM until reboot.
    _stub_regions: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exit_code(self) -> int | None:
        """The server's exit code once it has exited by itself; None while it runs."""
        return self._process.poll() if self._process else None

    def start(self) -> None:
        self.served_directory()  # a version that cannot be served: refused before anything
        check_ports_free(
            self.host,
            {"Triton gRPC": self.grpc_port, "Triton HTTP": self.http_port,
             "Triton metrics": self.metrics_port},
        )  # fmt: skip
        install = TritonInstallation.locate()
        install.check_libpython()
        cuda = self.flavour in ("auto", "pytorch") and torch_sees_cuda()
        if self.flavour == "pytorch" and not cuda:
            raise LaunchError(
                "flavour pytorch runs the network on a GPU through PyTorch, but PyTorch in this "
                f"environment ({sys.executable}) is missing or sees no CUDA device"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._launch(install, cuda)
        except BaseException:
            self.stop()
            raise

    def served_directory(self) -> Path:
        """The directory of the a2f_net version this server serves; LaunchError (one line
        naming the versions there) when `model_version` is not one or the versions disagree."""
        try:
            return repository.network_directory(self.model_repository, self.model_version)
        except repository.VersionError as exc:
            raise LaunchError(str(exc)) from None

    def _launch(self, install: TritonInstallation, cuda: bool) -> None:
        backends = install.backend_directory(self.run_dir)
        self._remove_orphans()
        # Named for the port and this launcher's PID, so no other instance's files are ever
        # replaced or removed (only those of launchers that died without cleaning up).
        self._rendered = self.run_dir / f"repository-{self.grpc_port}-{os.getpid()}"
        repository.render_repository(
            self.model_repository,
            self._rendered,
            flavour=self.flavour,
            available_backends=repository.installed_backends(backends),
            instances=self.instances,
            ort_threads=self.ort_threads,
            dynamic_batching=self.dynamic_batching,
            max_queue_delay_us=self.max_queue_delay_us,
            cuda=cuda,
            model_version=self.model_version,
        )
        log_path = self.log_path or self.run_dir / f"triton-{self.grpc_port}.log"
        command = [
            str(install.server_binary),
            f"--model-repository={self._rendered}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
            # Each python-backend model talks to its stub through a shared-memory region that
            # starts at 1 MiB and grows 1 MiB at a time; one 128-window request moves ~4 MiB.
            f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={PYTHON_SHM_BYTES}",
        ]
        self._process = spawn(command, log_path, self._server_environment(install))
        self.log_path = log_path
        wait_ready(
            self._process,
            partial(answers_ok, f"{self.http_url}/v2/health/ready"),
            name="tritonserver",
            timeout_s=self.startup_timeout_s,
            log=log_path,
        )
        self._stub_regions |= stub_shm_regions(self._process.pid)

    def _remove_orphans(self) -> None:
        """Rendered repositories of launchers killed outright (a finished render whose owner
        is gone): each start would otherwise leave one more behind."""
        for path in self.run_dir.glob("repository-*-*"):
            owner = path.name.rsplit("-", 1)[1]
            if owner.isdigit() and not alive(int(owner)) and (path / repository.MARKER).exists():
                shutil.rmtree(path, ignore_errors=True)

    def _server_environment(self, install: TritonInstallation) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The stub embeds the system libpython, which ignores PYTHONPATH but derives its
        # prefix from the first `python3` on PATH: make that this environment's, so the
        # venv's site-packages (numpy, onnxruntime) are importable inside Triton's models.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", str(self.ort_threads))
        # Keep multi-megabyte request buffers on the heap: by default glibc mmap()s and unmaps
        # each one, so every copied byte pays a page fault (load test: 19.0 -> 14.8 ms of
        # Triton CPU per 64-window request). Inherited by the python backend stubs.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 << 20))
        return env

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._stub_regions |= stub_shm_regions(process.pid)
            terminate(process, grace_s)
        # A server that stopped in order unlinked its own; one killed outright could not.
        for region in self._stub_regions:
            Path(SHM_DIR, region).unlink(missing_ok=True)
        self._stub_regions.clear()
        if self._rendered is not None:
            # Rendered afresh at every start: only the log is worth keeping.
            shutil.rmtree(self._rendered, ignore_errors=True)
            self._rendered = None

    def __enter__(self) -> EmbeddedTriton:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


SHM_DIR = "/dev/shm"
STUB_REGION_PREFIX = "triton_python_backend_shm_region_"


def stub_shm_regions(server_pid: int) -> set[str]:
    """The shared-memory regions of the server's python-backend stubs, read off their command
    lines (the stub is started with its region's name)."""
    regions: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent != server_pid:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        regions |= {a.decode() for a in arguments if a.startswith(STUB_REGION_PREFIX.encode())}
    return regions


def add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by this launcher and the service runner; defaults can come from A2F_* env
    (as text, so argparse reports a bad value like a bad flag)."""
    env = os.environ.get
    group = parser.add_argument_group("Triton")
    group.add_argument("--triton-host", default=env("A2F_TRITON_HOST", LOOPBACK))
    group.add_argument("--grpc-port", type=int, default=env("A2F_TRITON_GRPC_PORT", "8001"))
    group.add_argument("--http-port", type=int, default=env("A2F_TRITON_HTTP_PORT", "8000"))
    group.add_argument("--metrics-port", type=int, default=env("A2F_TRITON_METRICS_PORT", "8002"))
    repository.add_render_arguments(group)
    group.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)


def server_from_arguments(args: argparse.Namespace) -> EmbeddedTriton:
    return EmbeddedTriton(
        host=args.triton_host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        instances=args.instances,
        ort_threads=args.ort_threads,
        flavour=args.flavour,
        dynamic_batching=args.dynamic_batching,
        model_repository=args.model_repository,
        model_version=args.model_version,
    )


class Shutdown(Exception):
    """Raised from the signal handler so every ``with`` block unwinds and stops its process."""


def run_until_signalled(body: Callable[[], int]) -> int:
    """Run a foreground command: Ctrl-C/SIGTERM unwinds it cleanly (exit 0), a launch
    failure is one clear line on stderr (exit 1)."""

    def handler(signum: int, _frame: object) -> None:
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        return body()
    except Shutdown:
        return 0
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_triton_arguments(parser)
    args = parser.parse_args(argv)

    def serve() -> int:
        with server_from_arguments(args) as server:
            print(
                f"tritonserver ready: grpc {server.grpc_url}, http {server.http_url}, "
                f"log {server.log_path}",
                flush=True,
            )
            return server.wait()

    return run_until_signalled(serve)


if __name__ == "__main__":
    sys.exit(main())
