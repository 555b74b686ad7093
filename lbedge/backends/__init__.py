"""Backends run one tower graph: ``run({input name: array}) -> {output name: array}``.

Implementations: PyTorch (reference, ``lbedge.backends.torch_backend``), ONNX Runtime and TensorRT; the latter
two never import torch. A backend states what batches it accepts: ``max_batch`` (the most rows one ``run``
takes; None: any) and ``static_batch`` (True: exactly ``max_batch`` rows, as a static-shape engine such as a
DLA engine needs). :func:`run_batched` is the one place that splits (and pads) batches to fit; every caller
goes through it, so no backend ever sees a batch it cannot take.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError


@runtime_checkable
class Backend(Protocol):
    """One compiled or loaded tower graph."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on a batch; arrays in, arrays out."""
        ...


def batch_limits(backend: object) -> tuple[int | None, bool]:
    """``(max_batch, static_batch)`` of a backend (``(None, False)`` for one that states none)."""
    limit = getattr(backend, "max_batch", None)
    static = bool(getattr(backend, "static_batch", False))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InputError(f"backend {getattr(backend, 'name', backend)!r} states an unusable max_batch {limit!r}")
    if static and limit is None:
        raise InputError(f"backend {getattr(backend, 'name', backend)!r} is static but states no max_batch")
    return limit, static


def run_batched(backend: Backend, x: np.ndarray, *, preferred: int | None = None) -> np.ndarray:
    """Run ``backend`` on the batch ``x`` (its one input) and return its first output, splitting ``x`` into
    chunks the backend accepts (at most ``preferred`` rows each when given) and padding the last chunk of a
    static-batch backend with zero rows, whose outputs are dropped."""
    limit, static = batch_limits(backend)
    n = int(x.shape[0])
    if n == 0:
        raise InputError("empty batch: nothing to run")
    step = min(v for v in (limit, preferred, n) if v is not None)
    step = limit if static else max(1, step)
    name, out_name = backend.input_names[0], backend.output_names[0]
    outs = []
    for start in range(0, n, step):
        chunk = x[start : start + step]
        rows = chunk.shape[0]
        if static and rows < step:
            chunk = np.concatenate([chunk, np.zeros((step - rows, *chunk.shape[1:]), chunk.dtype)])
        out = np.asarray(backend.run({name: chunk})[out_name])
        if out.shape[0] != chunk.shape[0]:
            raise InputError(f"backend {backend.name!r} returned {out.shape[0]} rows for a batch of {chunk.shape[0]}")
        outs.append(out[:rows])
    return np.concatenate(outs)
