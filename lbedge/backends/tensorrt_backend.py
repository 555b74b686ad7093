"""TensorRT backend: a serialized engine on an async CUDA stream with pinned host buffers. Never imports torch.

Written against the TensorRT 10 Python API; the tensor-name API it uses (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``, ``get_tensor_profile_shape``) exists from TensorRT 8.5, and
lbedge supports TensorRT 8.6 (JetPack 6.0) and later (:func:`lbedge.engine.tensorrt_problem`). CUDA memory and
streams come from cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6.1).

cuda-python carries its own CUDA runtime, so ``cudaRuntimeGetVersion`` reports cuda-python's release, not the
device's CUDA: the device's CUDA is what ``cudaDriverGetVersion`` reports, and a runtime of a newer major
version than the driver (cuda-python 13 on a CUDA 12 JetPack) is refused with the install line that fits.

Before deserializing, the engine's manifest is checked against this runtime (TensorRT version, compute
capability, platform, DLA cores, source ONNX and engine checksums): a mismatch raises
:class:`~lbedge.errors.EngineMismatch` with every failed check's reason; nothing falls back silently.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..deps import require
from ..engine import EngineManifest, RuntimeInfo, current_platform, require_compatible, sha256_file, tensorrt_problem
from ..errors import EngineMismatch, InputError, MissingDependency, UsageError

log = logging.getLogger(__name__)
_LOGGER: tuple[Any, Any] | None = None
_WARNED: set[str] = set()
_CUDA_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


def trt_logger(trt: Any) -> Any:
    """The one ``trt.Logger`` of this process: TensorRT keeps a single logger and warns when builders, runtimes
    and parsers are given different ones. (Made again only for another ``tensorrt`` module, as tests swap in.)"""
    global _LOGGER
    if _LOGGER is None or _LOGGER[0] is not trt:
        _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
    return _LOGGER[1]


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, checked to be a version lbedge supports (8.6 or later)."""
    trt = require("tensorrt")
    problem = tensorrt_problem(str(getattr(trt, "__version__", "0")))
    if problem:
        raise MissingDependency(problem)
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6.1
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.0 - 12.6.0 (removed in 13)
        except ImportError:
            return require("cuda")
    return cudart


def _handle(obj: Any) -> int:
    """The address behind a cuda-python object (a stream): ``get_cuda_native_handle`` where cuda-python has it
    (``int(obj)`` is deprecated there), else ``int(obj)``."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


def _ok(result: Any, call: str = "CUDA call") -> Any:
    """cuda-python returns (error, *values): raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineMismatch(
            f"{call} failed with CUDA error {err}: check that an NVIDIA GPU is present, its driver "
            "loaded, and cuda-python of the device's CUDA installed (docs/deploy.md, TensorRT)"
        )
    return values[0] if len(values) == 1 else tuple(values)


def cuda_text(version: int) -> str:
    """``12060`` -> ``"12.6"`` (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def install_line(driver: int) -> str:
    """The pip line that installs the cuda-python of the device's CUDA (``driver`` as cudaDriverGetVersion gives it):
    the minor series of the driver, so the CUDA runtime cuda-python carries is never newer than the device's."""
    extra = {12: "tensorrt", 13: "tensorrt-cuda13"}.get(driver // 1000)
    pin = f'"cuda-python=={cuda_text(driver)}.*"'
    return f'pip install "lbedge[{extra}]" {pin}' if extra else f"pip install {pin}"


def cuda_problem(driver: int, runtime: int) -> str | None:
    """Why the CUDA runtime cuda-python carries cannot run on this driver, or None.

    ``driver`` and ``runtime`` are what ``cudaDriverGetVersion`` and ``cudaRuntimeGetVersion`` return. A
    driver of 0 means no CUDA driver is loaded. A runtime of a newer major version than the driver fails on the
    first CUDA call (cuda-python 13 carries the CUDA 13 runtime, which JetPack 6's CUDA 12 driver cannot run).
    """
    if driver <= 0:
        return (
            "no CUDA driver is loaded (cudaDriverGetVersion reports 0): is this an NVIDIA GPU host or a Jetson "
            "with JetPack installed?"
        )
    if runtime // 1000 > driver // 1000:
        return (
            f"cuda-python carries the CUDA {cuda_text(runtime)} runtime but this device's driver runs CUDA "
            f"{cuda_text(driver)}: install the cuda-python of the device's CUDA, {install_line(driver)} "
            "(docs/deploy.md lists it per JetPack)"
        )
    return None


def cuda_note(driver: int, runtime: int) -> str | None:
    """A warning when cuda-python's runtime is a newer minor release than the driver (it then relies on CUDA's
    minor-version compatibility), or None."""
    if runtime // 1000 == driver // 1000 and runtime > driver:
        return (
            f"cuda-python carries the CUDA {cuda_text(runtime)} runtime, newer than this device's CUDA "
            f"{cuda_text(driver)}; if CUDA calls fail, {install_line(driver)}"
        )
    return None


def cuda_versions(cudart: Any) -> tuple[int, int]:
    """``(driver, runtime)`` CUDA versions as ints, checked to work together (see :func:`cuda_problem`)."""
    driver = int(_ok(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    runtime = int(_ok(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    problem = cuda_problem(driver, runtime)
    if problem:
        raise MissingDependency(problem)
    note = cuda_note(driver, runtime)
    if note and note not in _WARNED:
        _WARNED.add(note)
        log.warning(note)
    return driver, runtime


def _device_properties(cudart: Any, device: int, driver: int, runtime: int) -> Any:
    err, *values = cudart.cudaGetDeviceProperties(device)
    if int(err) == _CUDA_INSUFFICIENT_DRIVER:
        raise MissingDependency(
            f"the CUDA {cuda_text(runtime)} runtime of cuda-python needs a newer driver than "
            f"this device's (CUDA {cuda_text(driver)}): {install_line(driver)}"
        )
    return _ok((err, *values), f"cudaGetDeviceProperties({device})")


def runtime_info(device: int = 0, *, trt: Any = None, cudart: Any = None) -> RuntimeInfo:
    """TensorRT version, the device's CUDA (from the driver), compute capability and DLA cores of this machine.

    ``trt`` and ``cudart`` default to the installed modules (tests pass stand-ins).
    """
    trt = trt if trt is not None else require_tensorrt()
    cudart = cudart if cudart is not None else _cudart()
    driver, runtime = cuda_versions(cudart)
    props = _device_properties(cudart, device, driver, runtime)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    dla = int(getattr(trt.Runtime(trt_logger(trt)), "num_DLA_cores", 0))
    return RuntimeInfo(
        tensorrt_version=str(trt.__version__),
        cuda_version=cuda_text(driver),
        compute_capability=f"{props.major}.{props.minor}",
        device_name=name.strip("\x00 "),
        platform=current_platform(),
        dla_cores=dla,
        cuda_runtime=cuda_text(runtime),
    )


def batch_limits_of(profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]) -> tuple[int, bool]:
    """``(max_batch, static_batch)`` from an input's ``(min, opt, max)`` profile shapes: the largest batch one run
    takes, and whether it must be exactly that (min == max, as DLA engines are built)."""
    lo, _, hi = profile
    return int(hi[0]), int(lo[0]) == int(hi[0])


@dataclass
class _Buffer:
    """One tensor's device buffer and the pinned host buffer it is copied through (``host`` views ``host_ptr``)."""

    device: int
    host_ptr: int = 0
    host: np.ndarray | None = None


def _release_call(cudart: Any, call: str, *args: Any) -> str | None:
    """Make one releasing CUDA call; a description of its failure, or None."""
    try:
        err, *_ = _as_tuple(getattr(cudart, call)(*args))
    except Exception as exc:  # noqa: BLE001 - every other resource must still be released
        return f"{call} ({exc})"
    return None if int(err) == 0 else f"{call} (CUDA error {err})"


def _as_tuple(result: Any) -> tuple:
    return result if isinstance(result, tuple) else (result,)


class TensorRTBackend:
    """Runs one engine; inputs and outputs are numpy arrays, batch within the engine's profile.

    ``max_batch`` is the largest batch one :meth:`run` accepts and ``static_batch`` whether it needs exactly that
    many rows; the encoder splits (and pads) batches to fit. :meth:`close` releases the engine, its context, the
    CUDA graphs, the device and pinned host buffers and the stream explicitly; runs and close are serialised by a
    lock, so closing never frees memory a run is using.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        onnx_sha256: str | None = None,
        cuda_graph: bool = False,
        device: int = 0,
        verify: bool = True,
    ):
        self.path = Path(engine_path)
        self._lock = threading.Lock()
        self._closed = False
        self._buffers: dict[str, _Buffer] = {}
        self._graphs: dict[tuple, Any] = {}  # input shapes -> instantiated CUDA graph (cudaGraphExec_t)
        self.stream: Any = None
        self.context: Any = None
        self.engine: Any = None
        self._runtime: Any = None
        self._device = device
        self._use_graph = cuda_graph
        trt = require_tensorrt()
        self._cudart = cudart = _cudart()
        self.manifest = EngineManifest.load(self.path.with_suffix(".json"))
        data = self.path.read_bytes()
        require_compatible(
            self.manifest,
            runtime_info(device, trt=trt, cudart=cudart),
            str(self.path),
            onnx_sha256=onnx_sha256,
            engine_sha256=sha256_file(self.path) if verify else None,
        )
        try:
            self._load(trt, data)
        except BaseException:
            self._close_quietly()  # what was allocated before the failure
            raise

    def _load(self, trt: Any, data: bytes) -> None:
        """Deserialize the engine, make its context and stream, and allocate the buffers."""
        cudart = self._cudart
        _ok(cudart.cudaSetDevice(self._device), "cudaSetDevice")
        self._runtime = trt.Runtime(trt_logger(trt))
        if self.manifest.build_flags.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        if self.manifest.build_flags.get("dla_core", -1) >= 0:
            self._runtime.DLA_core = int(self.manifest.build_flags["dla_core"])
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineMismatch(
                f"TensorRT could not deserialize {self.path} although its manifest matches this "
                "runtime: the file is damaged; rebuild it with `lbedge compile --rebuild`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = _ok(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._io_names(trt)
        self.max_batch, self.static_batch = batch_limits_of(self._profile[self.input_names[0]])
        self._allocate()

    def _io_names(self, trt: Any) -> None:
        """Input and output names, dtypes and the input profiles (optimisation profile 0)."""
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._profile = {
            n: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, 0))
            for n in self.input_names
        }

    def _allocate(self) -> None:
        """Device and pinned host buffers for the largest shapes: every input is set to its profile's maximum
        before the output shapes are read."""
        for n in self.input_names:
            self.context.set_input_shape(n, self._profile[n][2])
        for n in self.input_names + self.output_names:
            shape = self._profile[n][2] if n in self.input_names else tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise EngineMismatch(
                    f"engine {self.path.name} leaves output {n!r} shape {list(shape)} undefined at "
                    "its largest inputs: rebuild it with `lbedge compile --rebuild`"
                )
            self._alloc_one(n, shape)

    def _alloc_one(self, name: str, shape: tuple[int, ...]) -> None:
        """Each buffer is recorded as soon as it exists, so that close() frees it even if the next call fails."""
        cudart = self._cudart
        count = int(np.prod(shape))
        nbytes = max(1, count) * self._dtype[name].itemsize
        buf = self._buffers[name] = _Buffer(int(_ok(cudart.cudaMalloc(nbytes), "cudaMalloc")))
        buf.host_ptr = int(_ok(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        raw = (ctypes.c_byte * nbytes).from_address(buf.host_ptr)
        buf.host = np.frombuffer(raw, dtype=self._dtype[name])[:count].reshape(shape)
        self.context.set_tensor_address(name, buf.device)

    def _check_input(self, name: str, arr: np.ndarray) -> None:
        lo, _, hi = self._profile[name]
        if arr.ndim != len(hi) or any(a < lo_ or a > hi_ for a, lo_, hi_ in zip(arr.shape, lo, hi)):
            raise InputError(
                f"input {name!r} shape {list(arr.shape)} is outside the engine's profile "
                f"{list(lo)}..{list(hi)}: split the batch (Encoder does) or rebuild with --max-batch"
            )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise UsageError(f"TensorRT engine {self.path.name} was closed: load the model again")
            return self._run(inputs)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        shapes = []
        for n in self.input_names:
            if n not in inputs:
                raise InputError(f"missing input {n!r} for TensorRT engine {self.path.name}")
            arr = np.ascontiguousarray(np.asarray(inputs[n]).astype(self._dtype[n], copy=False))
            self._check_input(n, arr)
            self.context.set_input_shape(n, arr.shape)
            buf = self._buffers[n]
            flat = buf.host.reshape(-1)[: arr.size]
            flat[:] = arr.reshape(-1)
            _ok(cudart.cudaMemcpyAsync(buf.device, flat.ctypes.data, arr.nbytes, h2d, self.stream), "cudaMemcpyAsync")
            shapes.append(arr.shape)
        self._execute(tuple(shapes))
        outs = {}
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            buf = self._buffers[n]
            flat = buf.host.reshape(-1)[: int(np.prod(shape))]
            _ok(cudart.cudaMemcpyAsync(flat.ctypes.data, buf.device, flat.nbytes, d2h, self.stream), "cudaMemcpyAsync")
            outs[n] = (flat, shape)
        _ok(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        # astype copies: nothing returned points into the pinned buffers that close() frees
        return {n: flat.reshape(shape).astype(np.float32) for n, (flat, shape) in outs.items()}

    def _execute(self, key: tuple) -> None:
        """One execution on the stream: a replayed CUDA graph for this input shape, or ``execute_async_v3``."""
        if self._use_graph:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._graphs[key] = self._capture()
            _ok(self._cudart.cudaGraphLaunch(graph, self.stream), "cudaGraphLaunch")
        elif not self.context.execute_async_v3(_handle(self.stream)):
            raise EngineMismatch(f"TensorRT execution failed for {self.path.name} (see the TensorRT log above)")

    def _capture(self) -> Any:
        """Capture one execution into a CUDA graph for replay at this input shape; the captured graph is destroyed
        once instantiated (the instance does not need it)."""
        cudart = self._cudart
        self.context.execute_async_v3(_handle(self.stream))  # TensorRT needs one run before capture
        _ok(
            cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
            "cudaStreamBeginCapture",
        )
        self.context.execute_async_v3(_handle(self.stream))
        graph = _ok(cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        try:
            return _ok(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            failed = _release_call(cudart, "cudaGraphDestroy", graph)
            if failed:
                log.warning("%s: %s failed after capture; the captured graph stays allocated", self.path.name, failed)

    def close(self) -> None:
        """Release everything this engine holds, each explicitly and in order: pending work is waited for, the
        CUDA graphs are destroyed (``cudaGraphExecDestroy``), the execution context, engine and runtime are
        dropped (TensorRT frees them with their last reference, the context's memory first), then the device
        buffers (``cudaFree``), the pinned host buffers (``cudaFreeHost``) and the stream
        (``cudaStreamDestroy``). A second call does nothing; :meth:`run` afterwards raises UsageError.

        Every release is attempted; if any fails, :class:`EngineMismatch` names them afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failed = self._release()
        if failed:
            raise EngineMismatch(
                f"closing TensorRT engine {self.path.name}: {'; '.join(failed)} failed, so the GPU may be in an "
                "error state (see the TensorRT log above): restart the process to get its memory back"
            )

    def _release(self) -> list[str]:
        cudart = getattr(self, "_cudart", None)
        held = self.stream is not None or self._buffers or self._graphs or self.engine is not None
        if cudart is None or not held:  # failed before anything was made: no CUDA call to make
            self.context = self.engine = self._runtime = None
            return []
        call = functools.partial(_release_call, cudart)
        failed = [call("cudaSetDevice", self._device)]  # a close from another thread frees on the right GPU
        if self.stream is not None:
            failed.append(call("cudaStreamSynchronize", self.stream))
        failed += [call("cudaGraphExecDestroy", g) for g in self._graphs.values()]
        self._graphs.clear()
        self.context = self.engine = self._runtime = None  # in this order: context, engine, runtime
        buffers = list(self._buffers.values())
        self._buffers.clear()  # the host views go before the memory they view
        for buf in buffers:
            buf.host = None
            failed.append(call("cudaFree", buf.device))
            if buf.host_ptr:
                failed.append(call("cudaFreeHost", buf.host_ptr))
        if self.stream is not None:
            failed.append(call("cudaStreamDestroy", self.stream))
            self.stream = None
        return [f for f in failed if f]

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001 - reported, never raised from a failed load or a finaliser
            log.warning("%s", exc)

    def __del__(self) -> None:
        try:
            self._close_quietly()
        except Exception:  # noqa: BLE001 - at interpreter exit logging and cuda-python may be gone already
            pass
