"""What the gateway knows about the model, read from the model repository at start-up.

Channel names come from the network's manifest (`a2f_net/N/manifest.json` of the served version
N, as `a2f_triton.repository.network_directory` picks it: the highest unless told), emotion names
from the postprocessor's expression table (`a2f_post/1/expressions.json`): data only, nothing here
hard-codes them or runs repository code.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from a2f_triton.repository import LATEST, MANIFEST_NAME, network_directory

EXPRESSIONS = Path("a2f_post/1/expressions.json")
POSTPROCESS_MODULE = Path("a2f_post/1/postprocess.py")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Model facts the protocol exposes: rates, window geometry and names."""

    name: str
    version: str  # the manifest's model_version
    repository_version: int  # the a2f_net version directory it was read from
    sample_rate: int
    window: int
    offset: int
    blendshapes: tuple[str, ...]
    visemes: tuple[str, ...]
    emotions: tuple[str, ...]

    @classmethod
    def load(cls, model_repository: Path, model_version: int = LATEST) -> ModelInfo:
        """The facts of a2f_net's `model_version` (the highest by default); ValueError
        (`a2f_triton.repository.VersionError`) for a version that is not there."""
        network: Path = network_directory(model_repository, model_version)
        manifest = json.loads((network / MANIFEST_NAME).read_text(encoding="utf-8"))
        expressions = model_repository / EXPRESSIONS
        outputs = manifest["outputs"]
        return cls(
            name=manifest["name"],
            version=str(manifest["model_version"]),
            repository_version=int(network.name),
            sample_rate=int(manifest["sample_rate"]),
            window=int(manifest["window"]),
            offset=int(manifest["offset"]),
            blendshapes=tuple(outputs["BLENDSHAPES"]["channels"]),
            visemes=tuple(outputs["VISEMES"]["channels"]),
            emotions=tuple(json.loads(expressions.read_text(encoding="utf-8"))["emotions"]),
        )


def load_postprocess_module(model_repository: Path) -> ModuleType:
    """The postprocessor's pure numpy module (`a2f_post/1/postprocess.py`)."""
    return load_repository_module(model_repository / POSTPROCESS_MODULE)


def load_repository_module(path: Path) -> ModuleType:
    """A model's pure numpy module, imported by path for the tests and the naive baseline:
    the model repository is not a package, and such modules need no Triton by contract."""
    spec = importlib.util.spec_from_file_location(f"_a2f_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
