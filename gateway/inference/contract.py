"""What the endpoint pool's policy knows of a Triton endpoint, without any transport: the model
contract a probe reads and the errors a request or probe raises."""

from __future__ import annotations

import msgspec


class InferenceError(RuntimeError):
    """Triton refused or failed a request; `endpoint_fault`: the endpoint is unreachable or
    missed the deadline (rather than rejecting this one request)."""

    def __init__(self, message: str, *, endpoint_fault: bool = False) -> None:
        super().__init__(message)
        self.endpoint_fault = endpoint_fault


class ProbeError(RuntimeError):
    """An endpoint failed its health probe; the message says which step."""


class ModelContract(msgspec.Struct, frozen=True):
    """What the gateway relies on, identical on every endpoint: the ensemble's tensors
    (name, datatype, shape) and the output channels' names."""

    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    channels: tuple[str, ...]


class ProbeReport(msgspec.Struct, frozen=True):
    """A passed probe: the endpoint's contract and model versions (which may differ between
    endpoints during a rolling upgrade)."""

    contract: ModelContract
    versions: dict[str, str]
