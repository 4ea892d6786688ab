"""Training pipeline of the default audio-to-face network (issue 3): ``python -m training.pipeline``."""

from __future__ import annotations

import importlib.util
import sys

# The repository's top-level ``triton/`` folder (server launcher scripts, a namespace
# package when the repo root is on sys.path) shadows the optional ``triton`` GPU compiler
# that torch probes for on import; mark it absent so torch takes its no-triton path.
_spec = importlib.util.find_spec("triton")
if _spec is not None and _spec.origin is None:
    sys.modules["triton"] = None  # type: ignore[assignment]
