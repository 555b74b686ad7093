"""Backends run one tower graph: ``run({input name: array}) -> {output name: array}``.

Implementations: PyTorch (reference, ``lbedge.backends.torch_backend``), ONNX Runtime and TensorRT; the latter
two never import torch. A backend states what batches it accepts: ``max_batch`` (the most rows one ``run``
takes; None: any) and ``static_batch`` (True: exactly ``max_batch`` rows, as a static-shape engine such as a
DLA engine needs). :func:`run_batched` is the one place that splits (and pads) batches to fit; every caller
goes through it, so no backend ever sees a batch it cannot take.

A backend that holds resources (a session, an engine, GPU memory) has ``close()``: it releases them, a second
call does nothing, and ``run`` afterwards raises :class:`~lbedge.errors.UsageError`. :func:`close_backends`
closes what ``Encoder.close`` owns; backends without ``close()`` (test doubles) are left alone.
"""

from __future__ import annotations

import logging
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """One compiled or loaded tower graph."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on a batch; arrays in, arrays out."""
        ...


def close_backends(*backends: object) -> None:
    """Call ``close()`` on each distinct backend that has one (None and repeats are skipped). Every backend is
    closed even when one fails; the first failure is raised afterwards and the others are logged."""
    seen: list[object] = []
    errors: list[Exception] = []
    for backend in backends:
        if backend is None or any(backend is s for s in seen) or not callable(getattr(backend, "close", None)):
            continue
        seen.append(backend)
        try:
            backend.close()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the others must still be released
            errors.append(exc)
    for exc in errors[1:]:
        log.warning("closing a backend failed as well: %s", exc)
    if errors:
        raise errors[0]


def batch_step(backend: object, preferred: int | None = None) -> int | None:
    """The rows :func:`run_batched` gives ``backend`` per call of a long batch: its ``max_batch`` when static,
    else the smaller of ``max_batch`` and ``preferred`` (None when neither is stated: the whole batch)."""
    limit, static = batch_limits(backend)
    if static:
        return limit
    stated = [v for v in (limit, preferred) if v is not None]
    return max(1, min(stated)) if stated else None


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
    _, static = batch_limits(backend)
    n = int(x.shape[0])
    if n == 0:
        raise InputError("empty batch: nothing to run")
    step = batch_step(backend, preferred) or n
    step = step if static else min(step, n)
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
