"""Render a runtime Triton model repository from ``model_repository/``.

The source tree is the onnxruntime flavour exactly as the official Triton container serves
it. A server is never pointed at it directly: this module writes a runtime copy (configs
rewritten, model files linked, the source never modified) with

* the network flavour -- ``onnxruntime`` (``onnxruntime_onnx``, optional TensorRT FP16
  accelerator), ``tensorrt`` (a ``model.plan`` built by ``build_trt_plan.sh``), ``python``
  (the same ONNX through ONNX Runtime inside the python backend, for the embedded
  ``nvidia-pytriton`` server that has no other backend) or ``pytorch`` (the same ONNX
  evaluated by PyTorch on a GPU inside the python backend); ``auto`` picks from the backends
  the server has and whether a CUDA device is usable;
* with the python-backend flavours, each model's ``python_flavour/`` (its ``model.py`` and
  the config fields that replace the source's) instead of the native model, so the
  ``a2f`` ensemble of the official container has no python-backend step;
* instance count and ONNX Runtime intra-op threads of the network;
* dynamic batching on (optionally another queue delay) or off, for the network and the
  postprocessor together (the benchmark's no-batching variant);
* which version of the network is served (``--model_version``; the highest by default), by
  Triton's own means: the network's ``version_policy``, the ensemble's ``model_version`` and
  the manifest the other models read all name it, so going back to an older version is a
  setting, not a rebuild (``network_directory`` is the one answer to "which version").

The launcher imports it as ``a2f_triton.repository``. Stdlib only and free of project
imports, since it is also a script run by the official container's entrypoint with the
container's own Python (``triton/Dockerfile.triton``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

FLAVOURS = ("auto", "onnxruntime", "tensorrt", "python", "pytorch")
# Flavours whose models all run in the python backend (python_flavour/ directories).
PYTHON_FLAVOURS = ("python", "pytorch")
NETWORK = "a2f_net"
ENSEMBLE = "a2f"
MANIFEST_NAME = "manifest.json"
# A network version is a numeric directory of a2f_net/ holding this file.
NETWORK_WEIGHTS = "model.onnx"
# Outputs whose channel lists every version must share (the gateway, the postprocessor and
# clients address channels by these names and positions).
CHANNEL_OUTPUTS = ("BLENDSHAPES", "VISEMES")
LATEST = 0  # a requested version of 0: the highest there is
BATCHED_MODELS = ("a2f_net", "a2f_post")

# Defaults measured on the 2-core development host (see BENCHMARKS.md, "Triton").
DEFAULT_INSTANCES = 1
DEFAULT_ORT_THREADS = 1

# Written into every rendered repository; only such a directory is ever replaced.
MARKER = ".rendered-by-repository-py"

# Backend each network flavour needs, and the instance kind it runs on.
_BACKEND = {
    "onnxruntime": "onnxruntime",
    "tensorrt": "tensorrt",
    "python": "python",
    "pytorch": "python",
}
# pytorch: PyTorch, not Triton, places the work on the GPU (the `device` parameter), so the
# python backend needs no GPU support of its own.
_KIND = {
    "onnxruntime": "KIND_AUTO",
    "tensorrt": "KIND_GPU",
    "python": "KIND_CPU",
    "pytorch": "KIND_CPU",
}
PYTHON_FLAVOUR_DIR = "python_flavour"
# Model weights are linked, not copied; everything else (configs, .py) is small.
_LINKED_SUFFIXES = (".onnx", ".plan")

_TRT_FP16 = """optimization { execution_accelerators {
  gpu_execution_accelerator : [ {
    name : "tensorrt"
    parameters { key: "precision_mode" value: "FP16" }
    parameters { key: "max_workspace_size_bytes" value: "1073741824" }
    parameters { key: "trt_engine_cache_enable" value: "1" }
    parameters { key: "trt_engine_cache_path" value: "/tmp/a2f_trt_cache" }
  } ]
} }
"""


class VersionError(ValueError):
    """The network version asked for is not in the repository, or its versions disagree on
    the output channels. The message is one line and names the versions there."""


def network_versions(source: Path) -> dict[int, Path]:
    """The network's versions in the repository ``source``, ascending: each numeric
    directory of ``a2f_net/`` that holds a ``model.onnx``, by its number."""
    network = Path(source) / NETWORK
    found = (
        [p for p in network.iterdir() if p.name.isdigit() and (p / NETWORK_WEIGHTS).is_file()]
        if network.is_dir()
        else []
    )
    return {int(p.name): p for p in sorted(found, key=lambda p: int(p.name))}


def network_directory(source: Path, version: int = LATEST) -> Path:
    """The directory of the network version to serve from the repository ``source``:
    ``version``, or the highest with ``LATEST``. Everything that reads "the model" asks here.
    Raises VersionError for a version that is not there, or when a version's manifest lists
    other output channels than the chosen one's: a rollback must keep the contract."""
    versions = network_versions(source)
    where = Path(source) / NETWORK
    available = f"versions available: {', '.join(map(str, versions)) or 'none'}"
    if not versions:
        raise VersionError(
            f"no {NETWORK} version in {where}: no numeric directory there holds {NETWORK_WEIGHTS}"
        )
    chosen = version if version != LATEST else max(versions)
    if chosen not in versions:
        raise VersionError(f"{NETWORK} version {chosen} is not in {where} ({available})")
    channels = {
        number: _channels(path / MANIFEST_NAME, available) for number, path in versions.items()
    }
    differing = [str(number) for number, names in channels.items() if names != channels[chosen]]
    if differing:
        raise VersionError(
            f"{NETWORK} version {chosen} lists other {' and '.join(CHANNEL_OUTPUTS)} channels "
            f"than version {', '.join(differing)}: every version must keep them ({available})"
        )
    return versions[chosen]


def manifest_path(source: Path, version: int = LATEST) -> Path:
    """The manifest of the network version ``network_directory`` picks."""
    return network_directory(source, version) / MANIFEST_NAME


def _channels(manifest: Path, available: str) -> tuple[tuple[str, ...], ...]:
    try:
        outputs = json.loads(manifest.read_text(encoding="utf-8"))["outputs"]
        return tuple(tuple(outputs[name]["channels"]) for name in CHANNEL_OUTPUTS)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VersionError(f"unreadable manifest {manifest} ({exc!r}; {available})") from None


def installed_backends(backend_directory: Path) -> set[str]:
    """Backends a server with this ``--backend-directory`` can load (one dir each)."""
    return {p.name for p in Path(backend_directory).iterdir() if p.is_dir()}


def choose_flavour(
    flavour: str,
    available_backends: set[str],
    source: Path,
    *,
    cuda: bool = False,
    model_version: int = LATEST,
) -> str:
    """Resolve ``auto`` (plan > onnxruntime > pytorch when ``cuda`` > python) and check the
    backend is there. ``cuda``: PyTorch in the server's Python environment sees a GPU; a plan
    counts when the served ``model_version`` has one."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    if flavour == "auto":
        has_plan = (network_directory(source, model_version) / "model.plan").is_file()
        order = [
            *(["tensorrt"] if has_plan else []),
            "onnxruntime",
            *(["pytorch"] if cuda else []),
            "python",
        ]
        flavour = next((f for f in order if _BACKEND[f] in available_backends), "")
        if not flavour:
            raise ValueError(f"no usable backend among {sorted(available_backends)}")
    if _BACKEND[flavour] not in available_backends:
        raise ValueError(f"flavour {flavour!r} needs the {_BACKEND[flavour]} backend")
    return flavour


def render_repository(
    source: Path,
    target: Path,
    *,
    flavour: str = "auto",
    available_backends: set[str],
    instances: int = DEFAULT_INSTANCES,
    ort_threads: int = DEFAULT_ORT_THREADS,
    dynamic_batching: bool = True,
    max_queue_delay_us: int | None = None,
    trt_fp16: bool = False,
    cuda: bool = False,
    model_version: int = LATEST,
) -> None:
    """Write a servable repository for ``source`` into ``target`` (replaced if rendered before).

    ``instances`` and ``ort_threads`` apply to the network; ``dynamic_batching`` and
    ``max_queue_delay_us`` (None: the source config's value) to the network and the
    postprocessor; ``trt_fp16`` adds the TensorRT accelerator to the onnxruntime flavour;
    ``cuda`` lets ``auto`` pick the pytorch flavour; ``model_version`` is the network version
    Triton serves (``LATEST``: the highest). Raises VersionError (a ValueError) for a version
    ``network_directory`` refuses.
    """
    source, target = Path(source).resolve(), Path(target)
    network = network_directory(source, model_version)
    served = int(network.name)
    flavour = choose_flavour(flavour, available_backends, source, cuda=cuda, model_version=served)
    if instances < 1 or ort_threads < 1:
        raise ValueError("instances and ort_threads must be at least 1")
    _clear(target)
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        fields = _fields((model_dir / "config.pbtxt").read_text())
        python_flavour = model_dir / PYTHON_FLAVOUR_DIR
        use_python = flavour in PYTHON_FLAVOURS and python_flavour.is_dir()
        if use_python and (python_flavour / "config.pbtxt").is_file():
            fields = _overlay(fields, _fields((python_flavour / "config.pbtxt").read_text()))
        if model_dir.name in BATCHED_MODELS:
            fields = _batching(fields, dynamic_batching, max_queue_delay_us)
        if model_dir.name == NETWORK:
            fields = _network(fields, flavour, instances, ort_threads, trt_fp16, served)
        if model_dir.name == ENSEMBLE:
            fields = _ensemble_step(fields, served) + _contract_parameters(network / MANIFEST_NAME)
        fields = _manifest_parameter(fields, served)
        out = target / model_dir.name
        out.mkdir(parents=True)
        header = f"# Rendered by triton/repository.py from {model_dir} (flavour {flavour}).\n"
        (out / "config.pbtxt").write_text(header + "".join(text for _, text in fields))
        # Triton only reads numeric version directories; others hold flavour sources.
        for version in (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            _mirror(version, out / version.name)
            # Of the network, only the served version gets the code (Triton loads no other).
            if use_python and (model_dir.name != NETWORK or version == network):
                for code in python_flavour.glob("*.py"):
                    shutil.copy2(code, out / version.name)
    (target / MARKER).write_text(f"{source}\n")


def _clear(target: Path) -> None:
    if target.exists():
        if any(target.iterdir()) and not (target / MARKER).exists():
            raise FileExistsError(f"{target} is not empty and was not rendered here")
        shutil.rmtree(target)
    target.mkdir(parents=True)


def _mirror(version: Path, out: Path) -> None:
    out.mkdir()
    for path in version.iterdir():
        if path.name == "__pycache__":
            continue
        if path.suffix in _LINKED_SUFFIXES:
            (out / path.name).symlink_to(path.resolve())
        elif path.is_file():
            shutil.copy2(path, out / path.name)


# A config is a list of (top-level field name, text) entries. Our config.pbtxt files start
# every top-level field at column 0 and indent everything nested, so lines are enough;
# comment lines travel with the field below them.
Fields = list[tuple[str, str]]


def _fields(text: str) -> Fields:
    fields: Fields = []
    pending = ""
    for line in text.splitlines(keepends=True):
        if line[:1].isalpha():
            fields.append((re.split(r"[\s:{\[]", line, maxsplit=1)[0], pending + line))
            pending = ""
        elif line[:1] == "#" or not line.strip() or not fields:
            pending += line
        else:
            name, body = fields[-1]
            fields[-1] = (name, body + pending + line)
            pending = ""
    return fields


def _without(fields: Fields, *names: str) -> Fields:
    return [(name, text) for name, text in fields if name not in names]


def _overlay(fields: Fields, replacements: Fields) -> Fields:
    """``fields`` with every field named in ``replacements`` replaced by those; ``backend``
    and ``platform`` count as one. A model that batches gets its dims without the explicit
    row dimension a non-batching source declares."""
    names = {name for name, _ in replacements}
    if names & {"backend", "platform"}:
        names |= {"backend", "platform"}
    kept = [(name, text) for name, text in fields if name not in names]
    merged = kept[:1] + replacements + kept[1:]  # keep `name` first, for readers
    if any(n == "max_batch_size" and not re.search(r":\s*0\b", t) for n, t in replacements):
        merged = [
            (
                name,
                re.sub(r"dims: \[ -1, ", "dims: [ ", text) if name in ("input", "output") else text,
            )
            for name, text in merged
        ]
    return merged


def _batching(fields: Fields, enabled: bool, queue_delay_us: int | None) -> Fields:
    if not enabled:
        return _without(fields, "dynamic_batching")
    if queue_delay_us is None:
        return fields
    delay = f"max_queue_delay_microseconds: {int(queue_delay_us)}"
    return [
        (name, re.sub(r"max_queue_delay_microseconds:\s*\d+", delay, text))
        if name == "dynamic_batching"
        else (name, text)
        for name, text in fields
    ]


def _contract_parameters(manifest_path: Path) -> Fields:
    """The network's channel names and version as ensemble parameters: what a client reads
    over gRPC (`get_model_config`) to check that every endpoint serves the same contract."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    values = {
        "blendshape_channels": ",".join(manifest["outputs"]["BLENDSHAPES"]["channels"]),
        "viseme_channels": ",".join(manifest["outputs"]["VISEMES"]["channels"]),
        "network_version": str(manifest["model_version"]),
    }
    return [
        ("parameters", f'parameters {{ key: "{key}", value: {{ string_value: "{value}" }} }}\n')
        for key, value in values.items()
    ]


def _ensemble_step(fields: Fields, version: int) -> Fields:
    """The ensemble's network step pinned to the served version (the source's -1 would mean
    "the highest Triton loaded", the same here, but the rendered config says which)."""
    step = re.compile(rf'(model_name:\s*"{NETWORK}"\s*model_version:\s*)-?\d+')
    pinned: Fields = []
    steps = 0
    for name, text in fields:
        text, found = step.subn(rf"\g<1>{version}", text)
        pinned.append((name, text))
        steps += found
    if steps != 1:
        raise ValueError(f"the {ENSEMBLE} ensemble needs one {NETWORK} step with a model_version")
    return pinned


def _manifest_parameter(fields: Fields, version: int) -> Fields:
    """A model's `manifest` parameter (a path relative to its directory) pointed at the served
    network version's manifest."""
    manifest = re.compile(r'(key:\s*"manifest",\s*value:\s*\{\s*string_value:\s*")[^"]*"')
    path = f"../{NETWORK}/{version}/{MANIFEST_NAME}"
    return [
        (name, manifest.sub(rf'\g<1>{path}"', text)) if name == "parameters" else (name, text)
        for name, text in fields
    ]


def _network(
    fields: Fields, flavour: str, instances: int, threads: int, fp16: bool, version: int
) -> Fields:
    fields = _without(
        fields, "platform", "backend", "instance_group", "parameters", "optimization",
        "version_policy",
    )  # fmt: skip
    runtime = {
        "onnxruntime": 'platform: "onnxruntime_onnx"\n',
        "tensorrt": 'platform: "tensorrt_plan"\n',
        "python": 'backend: "python"\n',
        "pytorch": 'backend: "python"\n',
    }[flavour]
    added = [
        ("platform", runtime),
        # Only the served version loads; the others stay on disk, a setting away.
        ("version_policy", f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}\n"),
        (
            "instance_group",
            f"instance_group [ {{ count: {instances}, kind: {_KIND[flavour]} }} ]\n",
        ),
    ]
    parameters: list[tuple[str, object]] = []
    if flavour != "tensorrt":
        # Same key for all: the python flavour's model.py reads it too (torch's CPU threads).
        parameters += [("intra_op_thread_count", threads), ("inter_op_thread_count", 1)]
    if flavour in PYTHON_FLAVOURS:
        runtime_name = "pytorch" if flavour == "pytorch" else "onnxruntime"
        parameters.append(("runtime", runtime_name))
    if flavour == "pytorch":
        parameters.append(("device", "cuda"))
    added += [
        ("parameters", f'parameters {{ key: "{key}", value: {{ string_value: "{value}" }} }}\n')
        for key, value in parameters
    ]
    if fp16 and flavour == "onnxruntime":
        added.append(("optimization", _TRT_FP16))
    return fields[:1] + added + fields[1:]  # keep `name` first, for readers


def add_render_arguments(parser: argparse._ActionsContainer) -> None:
    """The network's options, shared with the launcher; defaults from the A2F_* environment
    (text defaults, so argparse reports a bad value like a bad flag)."""
    env = os.environ.get
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default=env("A2F_TRITON_FLAVOUR", "auto"),
        help="how the network runs: auto picks from the backends the server has",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=env("A2F_TRITON_INSTANCES", str(DEFAULT_INSTANCES)),
        help="model instances of the network (Triton instance_group count)",
    )
    parser.add_argument(
        "--ort-threads",
        type=int,
        default=env("A2F_ORT_THREADS", str(DEFAULT_ORT_THREADS)),
        help="ONNX Runtime intra-op threads per network instance",
    )
    parser.add_argument(
        "--no-dynamic-batching",
        dest="dynamic_batching",
        action="store_false",
        default=env("A2F_NO_DYNAMIC_BATCHING", "") != "1",
        help="turn Triton's dynamic batcher off (for comparisons)",
    )
    add_model_version_argument(parser)


def add_model_version_argument(parser: argparse._ActionsContainer) -> None:
    """``--model_version``: the network version to serve (env A2F_MODEL_VERSION), shared by
    the renderer, the launchers and the tools that read the model."""
    parser.add_argument(
        "--model_version",
        "--model-version",
        type=int,
        default=os.environ.get("A2F_MODEL_VERSION", str(LATEST)),
        help=f"{NETWORK} version to serve: a numeric directory of {NETWORK}/ "
        f"({LATEST}: the highest)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=Path(__file__).parents[1] / "model_repository"
    )
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument(
        "--backend-directory", type=Path, default=Path("/opt/tritonserver/backends")
    )
    add_render_arguments(parser)
    parser.add_argument("--max-queue-delay-us", type=int, default=None)
    parser.add_argument("--trt-fp16", action="store_true", help="TensorRT FP16 accelerator for ORT")
    args = parser.parse_args()
    try:
        render_repository(
            args.source,
            args.target,
            flavour=args.flavour,
            available_backends=installed_backends(args.backend_directory),
            instances=args.instances,
            ort_threads=args.ort_threads,
            dynamic_batching=args.dynamic_batching,
            max_queue_delay_us=args.max_queue_delay_us,
            trt_fp16=args.trt_fp16,
            model_version=args.model_version,
        )
    except ValueError as exc:  # a version or flavour that cannot be served: one line
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
