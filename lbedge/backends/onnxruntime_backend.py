"""ONNX Runtime backend (CPU, CUDA and TensorRT execution providers when present). Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..deps import require
from ..errors import CheckpointError, InputError, UsageError

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else CPU (TensorRT EP only on request)."""
    ort = require("onnxruntime")
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OnnxRuntimeBackend:
    """Runs one ONNX tower graph with onnxruntime.

    ``max_batch``/``static_batch`` come from the graph (a fixed batch dimension makes it static); ``max_batch``
    given here limits a dynamic graph too (e.g. to reproduce an engine's profile on a CPU). :meth:`close` drops
    the session (ONNX Runtime frees its memory, on the GPU too, with the last reference)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        inter_op_threads: int = 1,
        max_batch: int | None = None,
    ):
        ort = require("onnxruntime")
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = int(inter_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = list(providers) if providers else default_providers()
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise InputError(
                f"onnxruntime has no {', '.join(missing)} in this build (available: "
                f"{', '.join(ort.get_available_providers())})"
            )
        try:
            self.session: Any = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise CheckpointError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0]}") from exc
        self.threads = threads
        ins = self.session.get_inputs()
        self.input_names = tuple(i.name for i in ins)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._in = {i.name: (_DTYPES.get(i.type, np.float32), i.shape) for i in ins}
        dim0 = ins[0].shape[0] if ins and ins[0].shape else None
        self.static_batch = isinstance(dim0, int) and dim0 > 0
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
        if self.static_batch and max_batch is not None and max_batch != dim0:
            raise InputError(f"{self.path.name} takes batches of exactly {dim0}, not up to {max_batch}")
        self.max_batch: int | None = dim0 if self.static_batch else max_batch

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self.session is None

    def close(self) -> None:
        """Drop the ONNX Runtime session; a run in progress keeps it until it returns. A second call does nothing."""
        self.session = None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session  # one reference for the whole run, whatever close() does meanwhile
        if session is None:
            raise UsageError(f"the ONNX Runtime session of {self.path.name} was closed: load the model again")
        feed = {}
        for name, (dtype, shape) in self._in.items():
            if (
                name in inputs
                and self.max_batch is not None
                and np.shape(inputs[name])[:1]
                and np.shape(inputs[name])[0] > self.max_batch
            ):
                raise InputError(
                    f"a batch of {np.shape(inputs[name])[0]} for {self.path.name}, which takes at most "
                    f"{self.max_batch}: split it (lbedge.backends.run_batched)"
                )
            if name not in inputs:
                raise InputError(f"missing input {name!r} for {self.path.name}")
            arr = np.asarray(inputs[name])
            if arr.ndim != len(shape) or any(isinstance(d, int) and d != a for d, a in zip(shape, arr.shape)):
                raise InputError(
                    f"input {name!r} of {self.path.name} must have shape "
                    f"{['B' if not isinstance(d, int) else d for d in shape]}, got {list(arr.shape)}"
                )
            feed[name] = np.ascontiguousarray(arr.astype(dtype, copy=False))
        outs = session.run(list(self.output_names), feed)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}
