"""TensorRT backend: a serialized engine on an async CUDA stream with pinned host buffers. Never imports torch.

Written against the TensorRT 10 Python API; the tensor-name API it uses (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) exists from TensorRT 8.5, so JetPack 5.1 (8.5.2) and 6.0
(8.6.2) engines run through the same code. CUDA memory and streams come from cuda-python
(``cuda.bindings.runtime``, or ``cuda.cudart`` in older releases).

Before deserializing, the engine's manifest is checked against this runtime (TensorRT version, compute
capability, platform, DLA cores, source ONNX and engine checksums): a mismatch raises
:class:`~lbedge.errors.EngineMismatch` with every failed check's reason; nothing falls back silently.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._deps import require
from ..engine import EngineManifest, RuntimeInfo, current_platform, require_compatible, sha256_file
from ..errors import EngineMismatch, InputError


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return require("cuda")
    return cudart


def _ok(result: Any) -> Any:
    """cuda-python returns (error, *values): raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineMismatch(f"CUDA call failed with error {err}: is an NVIDIA GPU present and the driver loaded?")
    return values[0] if len(values) == 1 else tuple(values)


def runtime_info(device: int = 0) -> RuntimeInfo:
    """TensorRT version, CUDA version, compute capability and DLA cores of this machine."""
    trt = require("tensorrt")
    cudart = _cudart()
    props = _ok(cudart.cudaGetDeviceProperties(device))
    cuda = _ok(cudart.cudaRuntimeGetVersion())
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    return RuntimeInfo(tensorrt_version=trt.__version__, cuda_version=f"{cuda // 1000}.{(cuda % 1000) // 10}",
                       compute_capability=f"{props.major}.{props.minor}", device_name=name.strip("\x00"),
                       platform=current_platform(), dla_cores=int(getattr(runtime, "num_DLA_cores", 0)))


class TensorRTBackend:
    """Runs one engine; inputs and outputs are numpy arrays, batch within the engine's profile."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, onnx_sha256: str | None = None, cuda_graph: bool = False,
                 device: int = 0, verify: bool = True):
        trt = require("tensorrt")
        self._cudart = cudart = _cudart()
        self.path = Path(engine_path)
        self.manifest = EngineManifest.load(self.path.with_suffix(".json"))
        data = self.path.read_bytes()
        require_compatible(self.manifest, runtime_info(device), str(self.path), onnx_sha256=onnx_sha256,
                           engine_sha256=sha256_file(self.path) if verify else None)
        _ok(cudart.cudaSetDevice(device))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.manifest.build_flags.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        if self.manifest.build_flags.get("dla_core", -1) >= 0:
            self._runtime.DLA_core = int(self.manifest.build_flags["dla_core"])
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineMismatch(f"TensorRT could not deserialize {self.path} although its manifest matches this "
                                 "runtime: the file is damaged; rebuild it with `lbedge compile`")
        self.context = self.engine.create_execution_context()
        self.stream = _ok(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._profile = {n: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0))
                         for n in self.input_names}
        self._max_batch = min(p[2][0] for p in self._profile.values())
        self._buffers: dict[str, tuple[int, np.ndarray]] = {}    # name -> (device ptr, pinned host view)
        self._use_graph = cuda_graph
        self._graphs: dict[tuple, Any] = {}
        self._allocate()

    def _allocate(self) -> None:
        cudart = self._cudart
        for n in self.input_names + self.output_names:
            if n in self.input_names:
                shape = self._profile[n][2]
            else:
                self.context.set_input_shape(self.input_names[0], self._profile[self.input_names[0]][2])
                shape = tuple(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self._dtype[n].itemsize
            dev = _ok(cudart.cudaMalloc(nbytes))
            host_ptr = _ok(cudart.cudaMallocHost(nbytes))
            buf = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            host = np.frombuffer(buf, dtype=self._dtype[n]).reshape(shape)
            self._buffers[n] = (int(dev), host)
            self.context.set_tensor_address(n, int(dev))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        shapes = []
        for n in self.input_names:
            arr = np.ascontiguousarray(np.asarray(inputs[n]).astype(self._dtype[n], copy=False))
            lo, _, hi = self._profile[n]
            if arr.ndim != len(hi) or any(a < l or a > h for a, l, h in zip(arr.shape, lo, hi)):
                raise InputError(f"input {n!r} shape {list(arr.shape)} is outside the engine's profile "
                                 f"{list(lo)}..{list(hi)}: rebuild with a larger --max-batch or split the batch")
            self.context.set_input_shape(n, arr.shape)
            dev, host = self._buffers[n]
            flat = host.reshape(-1)[: arr.size]
            flat[:] = arr.reshape(-1)
            _ok(cudart.cudaMemcpyAsync(dev, flat.ctypes.data, arr.nbytes, h2d, self.stream))
            shapes.append(arr.shape)
        key = tuple(shapes)
        if self._use_graph:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._capture()
                self._graphs[key] = graph
            _ok(cudart.cudaGraphLaunch(graph, self.stream))
        elif not self.context.execute_async_v3(int(self.stream)):
            raise EngineMismatch(f"TensorRT execution failed for {self.path.name}")
        outs = {}
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            dev, host = self._buffers[n]
            size = int(np.prod(shape))
            flat = host.reshape(-1)[:size]
            _ok(cudart.cudaMemcpyAsync(flat.ctypes.data, dev, flat.nbytes, d2h, self.stream))
            outs[n] = (flat, shape)
        _ok(cudart.cudaStreamSynchronize(self.stream))
        return {n: flat.reshape(shape).astype(np.float32) for n, (flat, shape) in outs.items()}

    def _capture(self) -> Any:
        """Capture one execution into a CUDA graph for replay at this input shape."""
        cudart = self._cudart
        self.context.execute_async_v3(int(self.stream))     # TensorRT needs one run before capture
        _ok(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        self.context.execute_async_v3(int(self.stream))
        graph = _ok(cudart.cudaStreamEndCapture(self.stream))
        return _ok(cudart.cudaGraphInstantiate(graph, 0))

    def __del__(self) -> None:  # pragma: no cover - needs a GPU
        cudart = getattr(self, "_cudart", None)
        for dev, host in getattr(self, "_buffers", {}).values():
            try:
                cudart.cudaFree(dev)
                cudart.cudaFreeHost(host.ctypes.data)
            except Exception:
                pass
