"""What the gateway knows about the model, read from the model repository at start-up.

Channel names come from the network's manifest (`a2f_net/1/manifest.json`), emotion names from
the postprocessor's pure module (`a2f_post/1/postprocess.py`): nothing here hard-codes them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MANIFEST = Path("a2f_net/1/manifest.json")
POSTPROCESS_MODULE = Path("a2f_post/1/postprocess.py")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Model facts the protocol exposes: rates, window geometry and names."""

    name: str
    version: str
    sample_rate: int
    window: int
    offset: int
    blendshapes: tuple[str, ...]
    visemes: tuple[str, ...]
    emotions: tuple[str, ...]

    @classmethod
    def load(cls, model_repository: Path) -> ModelInfo:
        manifest = json.loads((model_repository / MANIFEST).read_text(encoding="utf-8"))
        outputs = manifest["outputs"]
        return cls(
            name=manifest["name"],
            version=str(manifest["model_version"]),
            sample_rate=int(manifest["sample_rate"]),
            window=int(manifest["window"]),
            offset=int(manifest["offset"]),
            blendshapes=tuple(outputs["BLENDSHAPES"]["channels"]),
            visemes=tuple(outputs["VISEMES"]["channels"]),
            emotions=tuple(load_postprocess_module(model_repository).EMOTIONS),
        )


def load_postprocess_module(model_repository: Path) -> ModuleType:
    """The postprocessor's pure numpy module (`a2f_post/1/postprocess.py`), imported by path:
    the model repository is not a package, and the module needs no Triton by contract."""
    path = model_repository / POSTPROCESS_MODULE
    spec = importlib.util.spec_from_file_location("_a2f_postprocess", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the module look themselves up here
    spec.loader.exec_module(module)
    return module
