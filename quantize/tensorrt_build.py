"""Compile a bundle's ONNX graphs into TensorRT engines on the target device (Jetson or GPU host).

Written against the TensorRT 10 Python API with TensorRT 8.6 (JetPack 6.0) in mind; older TensorRT is refused
(:func:`lbedge.engine.tensorrt_problem`). What each step decides is a plain function, tested without TensorRT:

* which graphs compile (:func:`plan_tower`): by default the vision tower's TensorRT-form INT8 and FP16 graphs
  (FP32 when it has neither) and the text tower at its best precision (FP16, else FP32). An INT8 graph quantized
  for ONNX Runtime on CPUs (the ``cpu`` target, and every INT8 text graph: dynamic quantization) is skipped with
  a message, and is an error only when INT8 was asked for explicitly.
* where the text tower compiles: a bundle sharing a text bundle (``text_bundle`` in its manifest) compiles that
  text bundle's text tower into the text bundle's own folder and manifest; a text bundle compiles its own.
* how the layers the graph keeps in FP32 stay FP32 (:func:`precision_control`, :func:`pinned_fp32_layers`).
  TensorRT honours a graph's Casts only in strongly typed networks, or with precision constraints obeyed
  (TensorRT issues #3657 and #4540). On TensorRT 10 (and 11) networks are strongly typed: no precision flag is
  set and the graph's own types decide, so an FP16 graph runs FP16 with LayerNorm, Softmax and the reductions in
  FP32 as its Casts say, and an INT8 QDQ graph runs INT8 where it is quantized and FP32 elsewhere, the arithmetic
  its recorded agreement was measured with (weak typing, FP16 for the unquantized layers, is deprecated from
  TensorRT 10.12 and gone in 11). On TensorRT 8.6, which has no strong typing, and for DLA builds on TensorRT 10,
  whose DLA documentation is written for precision flags, the build is weakly typed with FP16 (and INT8) and
  ``OBEY_PRECISION_CONSTRAINTS``, every normalization, softmax and reduce layer and every layer fed by a Cast to
  FP32 (up to the next Cast) pinned to FP32. FP32 engines clear TF32.
* the agreement check (:func:`check_agreement`): before an engine is written into the bundle it runs on real
  prompts (text: :data:`lbedge.zeroshot.PROBE_LABELS` with templates, more prompts than one batch holds) or
  inputs (vision: ``inputs`` files, else deterministic smooth synthetic inputs) against ONNX Runtime FP32 on the
  CPU, and an engine below the bar (0.999 for fp32/fp16, 0.99 for int8) is refused and leaves nothing behind.
  The measured agreement is recorded in the engine manifest.
* the timing cache: one per device and software stack (:func:`lbedge.engine.timing_cache_name`), never reused
  elsewhere and never listed among the bundle's relocatable files.

Engines are cached: an engine whose manifest matches this device, TensorRT version, source ONNX, build options
and precision control is reused, and a mismatched one is reported and rebuilt only when asked
(``rebuild=True``): nothing is rebuilt silently.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from lbedge import __version__
from lbedge.backends import close_backends, run_batched
from lbedge.backends.tensorrt_backend import TensorRTBackend, require_tensorrt, runtime_info, trt_logger
from lbedge.bundle import Manifest, TowerFile, check_external_data, check_tokenizer_files, text_source, verify_file
from lbedge.config import PreprocessConfig
from lbedge.engine import EngineManifest, RuntimeInfo, check_engine, sha256_file, timing_cache_name, version_tuple
from lbedge.errors import EngineMismatch, LBEdgeError
from lbedge.paths import bundle_file
from lbedge.preprocess import Preprocessor
from lbedge.progress import stage
from lbedge.tokenizer import load_tokenizer
from lbedge.validate import Agreement, agreement
from lbedge.zeroshot import PROBE_LABELS, TEMPLATES, fill

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: the worst cosine to ONNX Runtime FP32 an engine must reach before it is written into the bundle
DEFAULT_MIN_COSINE = {"fp32": 0.999, "fp16": 0.999, "int8": 0.99}
#: layer types whose FP32 precision is pinned in weakly typed builds (TensorRT ``LayerType`` names)
PINNED_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
#: layer types that never get a precision: they change it, hold constants or compute shapes
UNPINNABLE_TYPES = frozenset({"CAST", "CONSTANT", "SHAPE", "QUANTIZE", "DEQUANTIZE", "ASSERTION"})
SYNTHETIC_INPUTS = 16
MAX_CHECK_INPUTS = 64

Say = Callable[[str], None]
BackendFactory = Callable[[Path, str], Any]


class EngineBuildError(LBEdgeError):
    """TensorRT could not parse or build a graph, or the engine it built disagrees with ONNX Runtime."""


@dataclass
class BuildOptions:
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 2048
    dla_core: int = -1  # -1: GPU only; 0/1: DLA core with GPU fallback (AGX Orin / Orin NX)
    version_compatible: bool = False
    timing_cache: bool = True
    flags: dict = field(default_factory=dict)

    def as_flags(self) -> dict:
        return {
            "min_batch": self.min_batch,
            "opt_batch": self.opt_batch,
            "max_batch": self.max_batch,
            "workspace_mb": self.workspace_mb,
            "dla_core": self.dla_core,
            "version_compatible": self.version_compatible,
        }

    def check(self) -> None:
        """Raise :class:`EngineBuildError` for batch sizes that make no optimisation profile."""
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineBuildError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) "
                f"<= max ({self.max_batch}): fix --opt-batch / --max-batch"
            )
        if self.workspace_mb < 1:
            raise EngineBuildError(f"--workspace-mb must be positive, got {self.workspace_mb}")


# --- which graphs compile ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A graph that is not compiled, and why."""

    tower: str
    precision: str
    reason: str


@dataclass
class TowerPlan:
    """The precisions of one tower to compile, and every other one with the reason it is not compiled."""

    tower: str
    build: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def cpu_int8_reason(tower: str, entry: TowerFile) -> str | None:
    """Why the INT8 graph ``entry`` of ``tower`` cannot become a TensorRT engine, or None when it can."""
    if tower == "text":
        return (
            "INT8 text graphs are dynamic quantization for ONNX Runtime on CPUs, which TensorRT cannot import "
            "(TensorRT gets the fp16 or fp32 text graph)"
        )
    if entry.details.get("int8", {}).get("target", "tensorrt") == "cpu":
        return (
            "the INT8 graph was quantized for ONNX Runtime on CPUs (uint8 activations with zero points, or "
            "dynamic quantization), which TensorRT cannot import; for an INT8 engine rerun `lbedge quantize "
            "BUNDLE -p int8 --int8-target tensorrt --calib DIR`"
        )
    return None


def _default_choice(tower: str, usable: Sequence[str]) -> list[str]:
    """Default precisions among the ``usable`` ones: vision int8 and fp16 (else fp32), text fp16 (else fp32)."""
    if tower == "text":
        return [next(p for p in ("fp16", "fp32") if p in usable)] if set(usable) & {"fp16", "fp32"} else []
    reduced = [p for p in ("int8", "fp16") if p in usable]
    return reduced or (["fp32"] if "fp32" in usable else [])


def plan_tower(tower: str, have: Mapping[str, TowerFile], requested: Sequence[str] | None = None) -> TowerPlan:
    """Which of ``tower``'s graphs compile, and why each other one does not.

    ``requested`` (``lbedge compile -p``): exactly those precisions the tower has; a vision INT8 graph in the CPU
    form is then an error. Without it, the defaults of the module docstring.
    """
    plan = TowerPlan(tower)
    usable = []
    for prec in [p for p in PRECISIONS if p in have]:
        why = cpu_int8_reason(tower, have[prec]) if prec == "int8" else None
        if why and requested and prec in requested and tower == "vision":
            raise EngineBuildError(f"cannot compile the vision int8 graph: {why}")
        if why:
            plan.skipped.append(Skip(tower, prec, why))
        else:
            usable.append(prec)
    chosen = [p for p in usable if p in requested] if requested else _default_choice(tower, usable)
    plan.build = [p for p in PRECISIONS if p in chosen]
    for prec in usable:
        if prec not in plan.build:
            plan.skipped.append(Skip(tower, prec, _not_chosen(tower, prec, plan.build, requested)))
    for prec in [p for p in (requested or ()) if p not in have]:
        plan.skipped.append(Skip(tower, prec, f"the bundle has no {prec} {tower} graph (has: {', '.join(have)})"))
    return plan


def _not_chosen(tower: str, prec: str, built: Sequence[str], requested: Sequence[str] | None) -> str:
    if requested:
        return f"not requested (-p {' -p '.join(requested)})"
    better = ", ".join(built) or "nothing"
    return f"not compiled by default: the {tower} tower compiles {better}; ask with -p {prec}"


# --- how FP32 layers stay FP32 -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionControl:
    """How a build keeps the graph's FP32 layers in FP32."""

    mode: str  # "strongly typed" | "precision constraints" | "fp32 (TF32 off)"
    strongly_typed: bool
    set_flags: tuple[str, ...] = ()  # BuilderFlag names
    clear_flags: tuple[str, ...] = ()
    pin_fp32: bool = False  # pin layers with pinned_fp32_layers (weakly typed builds)


def strong_typing_available(tensorrt_version: str, dla_core: int) -> bool:
    """Strong typing is used on TensorRT 11 and on TensorRT 10 GPU builds (see the module docstring)."""
    major = version_tuple(tensorrt_version)[0]
    return major >= 11 or (major == 10 and dla_core < 0)


def precision_control(tensorrt_version: str, precision: str, dla_core: int = -1) -> PrecisionControl:
    """The network typing and builder flags of a ``precision`` build on TensorRT ``tensorrt_version``."""
    strong = strong_typing_available(tensorrt_version, dla_core)
    if precision == "fp32":
        return PrecisionControl("fp32 (TF32 off)", strong, clear_flags=("TF32",))
    if strong:
        return PrecisionControl("strongly typed", True)
    flags = (
        ("FP16", "OBEY_PRECISION_CONSTRAINTS")
        if precision == "fp16"
        else ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
    )
    return PrecisionControl("precision constraints", False, set_flags=flags, pin_fp32=True)


def network_flag_names(tensorrt_version: str, strongly_typed: bool) -> list[str]:
    """``NetworkDefinitionCreationFlag`` names for ``create_network``: explicit batch before TensorRT 10 (where it
    is the default and deprecated), strong typing when used."""
    names = ["EXPLICIT_BATCH"] if version_tuple(tensorrt_version)[0] < 10 else []
    return names + (["STRONGLY_TYPED"] if strongly_typed else [])


@dataclass(frozen=True)
class LayerInfo:
    """What the FP32 pinning needs to know of one network layer (in network order)."""

    type: str  # TensorRT LayerType name: "NORMALIZATION", "CAST", "ELEMENTWISE"...
    name: str
    inputs: tuple[str, ...] = ()  # tensor names
    outputs: tuple[str, ...] = ()
    float_outputs: bool = True  # every output is a float activation (no index, bool or shape tensor)
    casts_to_fp32: bool = False  # a CAST layer whose output is FP32


def pinned_fp32_layers(layers: Iterable[LayerInfo | tuple]) -> list[str]:
    """Names of the layers a weakly typed build pins to FP32.

    Pinned: every normalization, softmax and reduce layer, and every layer inside a region the graph keeps in
    FP32, i.e. fed by a Cast to FP32 or by another layer of that region (a Cast ends it). Never pinned: layers
    with a non-float output (index, boolean, shape) and layers that change the type or hold constants.
    ``layers`` may be :class:`LayerInfo` or ``(type, name)`` pairs.
    """
    fp32_tensors: set[str] = set()
    pinned = []
    for item in layers:
        layer = item if isinstance(item, LayerInfo) else LayerInfo(*item)
        if layer.type == "CAST":
            if layer.casts_to_fp32:
                fp32_tensors.update(layer.outputs)
            continue
        in_region = any(t in fp32_tensors for t in layer.inputs)
        if layer.type in UNPINNABLE_TYPES or not layer.float_outputs:
            continue
        if in_region:
            fp32_tensors.update(layer.outputs)
        if in_region or layer.type in PINNED_TYPES:
            pinned.append(layer.name)
    return pinned


def profile_shapes(shape: Sequence[Any], opts: BuildOptions) -> tuple[tuple[int, ...], ...]:
    """``(min, opt, max)`` shapes of an input whose first dimension is the batch (static on DLA)."""
    rest = tuple(shape[1:])
    if any(not isinstance(d, int) or d < 1 for d in rest):
        raise EngineBuildError(
            f"input shape {list(shape)} has a dynamic dimension besides the batch: lbedge "
            "builds profiles over the batch only; re-export the graph"
        )
    if opts.dla_core >= 0:  # DLA needs static shapes
        return ((opts.max_batch, *rest),) * 3
    return (opts.min_batch, *rest), (opts.opt_batch, *rest), (opts.max_batch, *rest)


# --- TensorRT itself ----------------------------------------------------------------------------------------------


@dataclass
class Serialized:
    """An engine TensorRT built, with what the manifest records of it."""

    data: bytes
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    control: str  # PrecisionControl.mode
    timing_cache: bytes | None = None  # the updated cache, to keep for the next build on this device
    pinned: int = 0  # layers pinned to FP32 (weakly typed builds)


def _layer_infos(network: Any, trt: Any) -> list[LayerInfo]:
    floats = {trt.float32, trt.float16}
    infos = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        infos.append(
            LayerInfo(
                layer.type.name,
                layer.name,
                tuple(t.name for t in ins if t is not None),
                tuple(t.name for t in outs),
                all(t.dtype in floats and t.is_execution_tensor for t in outs),
                layer.type == trt.LayerType.CAST and bool(outs) and outs[0].dtype == trt.float32,
            )
        )
    return infos


def _pin_fp32(network: Any, trt: Any) -> int:
    """Pin the layers of :func:`pinned_fp32_layers` to FP32 (precision and output types); their count."""
    names = set(pinned_fp32_layers(_layer_infos(network, trt)))
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in names:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            count += 1
    return count


def _parse(trt: Any, onnx_path: Path, control: PrecisionControl) -> tuple[Any, Any, Any]:
    """Builder, network and parser (kept alive together) of the ONNX graph."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in network_flag_names(trt.__version__, control.strongly_typed):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}. Check the graph's "
            "ops with `lbedge export` (it lists what the TensorRT 8.6 and 10 parsers support)"
        )
    return builder, network, parser


def _set_timing_cache(config: Any, data: bytes) -> Any:
    """Attach a timing cache made from ``data``; a cache TensorRT refuses is replaced by a new one (said in the
    log), and without one the build goes on uncached. Returns the cache or None."""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log.warning("TensorRT refused the timing cache (another device or version wrote it): starting a new one")
    cache = config.create_timing_cache(b"")
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log.warning("TensorRT refused a new timing cache: building without one (slower builds)")
    return None


def _configure(trt: Any, builder: Any, config: Any, control: PrecisionControl, opts: BuildOptions) -> Any:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    for name in control.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in control.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if opts.dla_core >= 0:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EngineBuildError(
                f"DLA core {opts.dla_core} requested but this device has {builder.num_DLA_cores} "
                "DLA cores (AGX Orin and Orin NX 16GB have 2, Orin NX 8GB 1, Orin Nano none)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    monitor = progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    return monitor  # the caller keeps it alive until the build is done


def progress_monitor(trt: Any) -> Any:
    """A ``trt.IProgressMonitor`` that reports the builder's top-level phases as progress (TensorRT versions that
    have the interface; None otherwise): a first build takes minutes and is never silent."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if not parent_phase:
                stage("TensorRT: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def _profile(builder: Any, network: Any, config: Any, opts: BuildOptions) -> dict[str, dict[str, Any]]:
    """Set every input's optimisation-profile shapes; the inputs as the manifest records them."""
    profile = builder.create_optimization_profile()
    io_in = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        lo, opt, hi = profile_shapes(list(t.shape), opts)
        profile.set_shape(t.name, lo, opt, hi)
        io_in[t.name] = {"dtype": str(t.dtype), "min": list(lo), "opt": list(opt), "max": list(hi)}
    config.add_optimization_profile(profile)
    return io_in


def serialize_network(onnx_path: Path, precision: str, opts: BuildOptions, timing_cache: bytes | None) -> Serialized:
    """Parse ``onnx_path`` and build a serialized engine (the only step that needs TensorRT and a GPU).

    ``timing_cache``: the bytes of this device's cache (empty for a new one), or None to build without one.
    """
    trt = require_tensorrt()
    control = precision_control(trt.__version__, precision, opts.dla_core)
    builder, network, _parser = _parse(trt, onnx_path, control)
    pinned = _pin_fp32(network, trt) if control.pin_fp32 else 0
    config = builder.create_builder_config()
    monitor = _configure(trt, builder, config, control, opts)  # noqa: F841 - alive until the build is done
    cache = _set_timing_cache(config, timing_cache) if timing_cache is not None else None
    io_in = _profile(builder, network, config, opts)
    io_out = {
        network.get_output(i).name: {
            "dtype": str(network.get_output(i).dtype),
            "shape": list(network.get_output(i).shape),
        }
        for i in range(network.num_outputs)
    }
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    new_cache = bytes(config.get_timing_cache().serialize()) if cache is not None else None
    return Serialized(bytes(serialized), io_in, io_out, control.mode, new_cache, pinned)


# --- the agreement check ------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What an engine is checked on: a batch for the tower's one input, and what it is."""

    x: np.ndarray
    what: str


def probe_templates() -> tuple[str, ...]:
    """The bare label and the first template of every modality."""
    return ("{}",) + tuple(t[0] for t in TEMPLATES.values())


def text_probe(folder: Path, man: Manifest) -> Probe:
    """Token ids of PROBE_LABELS with :func:`probe_templates`, from the text bundle's own tokenizer."""
    family = man.text.get("family", "clip")
    check_tokenizer_files(folder, man, family, verify=True)
    tok = load_tokenizer(folder / "tokenizer", family=family, context_length=int(man.text["context_length"]))
    templates = probe_templates()
    ids, _ = tok([fill(t, label) for label in PROBE_LABELS for t in templates])
    vocab = int(man.text.get("vocab_size") or 0)
    if vocab and int(ids.max()) >= vocab:
        raise EngineBuildError(
            f"the tokenizer of {folder} gives token ids up to {int(ids.max())} but the text tower "
            f"has {vocab}: tokenizer and text tower do not belong together; rebuild the bundle"
        )
    return Probe(ids, f"{len(ids)} prompts ({len(PROBE_LABELS)} probe labels x {len(templates)} templates)")


def _smooth_raw(modality: str, i: int, cfg: PreprocessConfig) -> Any:
    """One deterministic smooth raw input of ``modality`` (gradients and low-frequency waves, phase ``i``)."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    wave = np.sin(x / (9 + i) + i) * np.cos(y / (13 + 2 * i) - i)
    if modality in ("image", "thermal"):
        img = np.stack([(x * (1 + i % 3) + 20 * i) % 256, (y * (2 + i % 2)) % 256, 128 + 100 * wave], 2)
        return np.clip(img, 0, 255).astype(np.uint8)
    if modality == "depth":
        return (2500 + 1500 * wave + 10 * x).astype(np.uint16)
    if modality == "audio":
        t = np.arange(int(2 * cfg.sample_rate), dtype=np.float32) / cfg.sample_rate
        clip = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) * np.exp(-t) + 0.1 * np.sin(2 * np.pi * 3 * i * t)
        return clip.astype(np.float32), int(cfg.sample_rate)
    frames = [
        np.clip(np.stack([(x + 8 * f + 10 * i) % 256, y % 256, 128 + 100 * wave], 2), 0, 255)
        for f in range(cfg.num_frames)
    ]
    return np.stack(frames).astype(np.uint8)


def synthetic_probe(preprocess: Mapping[str, Any], n: int = SYNTHETIC_INPUTS) -> Probe:
    """``n`` deterministic smooth synthetic inputs of the bundle's modality, preprocessed as at inference."""
    cfg = PreprocessConfig.from_dict(dict(preprocess))
    pre = Preprocessor(cfg)
    x = np.stack([pre.one(_smooth_raw(cfg.modality, i, cfg)) for i in range(n)]).astype(np.float32)
    return Probe(x, f"{n} synthetic smooth {cfg.modality} inputs")


def vision_probe(man: Manifest, inputs: Sequence[str | Path] | None, say: Say) -> Probe:
    """The vision check inputs: ``inputs`` files (as ``lbedge quantize --calib`` reads them), else synthetic."""
    if not inputs:
        probe = synthetic_probe(man.preprocess)
        say(f"checking vision engines on {probe.what}: no --inputs given; real ones make a stronger check")
        return probe
    from lbedge.quantize.calibration import load_inputs

    data = load_inputs(list(inputs), Preprocessor(PreprocessConfig.from_dict(man.preprocess)), limit=MAX_CHECK_INPUTS)
    for f, why in data.skipped:
        say(f"skipped {f}: {why}")
    return Probe(data.arrays, f"{len(data.arrays)} inputs from {', '.join(map(str, inputs))}")


def measure_agreement(reference: Any, candidate: Any, probe: Probe) -> Agreement:
    """Cosine agreement of ``candidate``'s first output with ``reference``'s over ``probe``, each backend run in
    batches it accepts (``max_batch``, ``static_batch``)."""
    ref = run_batched(reference, probe.x, preferred=32)
    got = run_batched(candidate, probe.x, preferred=32)
    return agreement(ref, got)


def check_agreement(reference: Any, candidate: Any, probe: Probe, threshold: float, what: str) -> Agreement:
    """:func:`measure_agreement`, refused with :class:`EngineBuildError` below ``threshold``."""
    a = measure_agreement(reference, candidate, probe)
    if not np.isfinite(a.min_cosine) or a.min_cosine < threshold:
        raise EngineBuildError(
            f"{what} disagrees with ONNX Runtime FP32: worst cosine {a.min_cosine:.5f} (mean "
            f"{a.mean_cosine:.5f}) over {probe.what}, below {threshold}; it was not written. "
            "Check the graph with `lbedge validate`, compile another precision (-p fp32), or "
            "set --min-cosine if this agreement is expected"
        )
    return a


def reference_backend(folder: Path, man: Manifest, tower: str, precision: str, say: Say) -> Any:
    """ONNX Runtime on the CPU with the tower's FP32 graph (the compiled graph itself when there is none)."""
    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend

    prec = "fp32" if "fp32" in man.towers[tower] else precision
    if prec != "fp32":
        say(f"{folder} has no fp32 {tower} graph: checking the engine against its own {precision} graph instead")
    entry = man.towers[tower][prec]
    graph = verify_file(folder, entry.file, entry.sha256)
    check_external_data(folder, entry, graph, verify=True)
    return OnnxRuntimeBackend(graph, providers=["CPUExecutionProvider"])


# --- one engine ---------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One tower of one bundle folder to compile; its check inputs are made when the first engine is built."""

    folder: Path
    man: Manifest
    tower: str
    inputs: Sequence[str | Path] | None = None
    _probe: Probe | None = None

    def probe(self, say: Say) -> Probe:
        """The check inputs: :func:`text_probe` or :func:`vision_probe`, made once."""
        if self._probe is None:
            self._probe = (
                text_probe(self.folder, self.man) if self.tower == "text" else vision_probe(self.man, self.inputs, say)
            )
        return self._probe


@dataclass
class CompileContext:
    """What every engine of one ``compile_bundle`` call shares."""

    info: RuntimeInfo
    opts: BuildOptions
    rebuild: bool
    say: Say
    min_cosine: float | None
    factory: BackendFactory
    serialize: Callable[[Path, str, BuildOptions, bytes | None], Serialized]


def default_factory(engine: Path, onnx_sha256: str) -> Any:
    return TensorRTBackend(engine, onnx_sha256=onnx_sha256, verify=True)


def tower_options(opts: BuildOptions, tower: str, precision: str) -> BuildOptions:
    """The build options of one tower: text towers (attention, LayerNorm) stay on the GPU; DLA runs no FP32."""
    if opts.dla_core < 0:
        return opts
    if tower == "text":
        return replace(opts, dla_core=-1)
    if precision == "fp32":
        raise EngineBuildError(
            "DLA runs FP16 and INT8 only: compile the vision tower with -p fp16 or -p int8 on "
            "the DLA, or drop --dla-core"
        )
    return opts


def _reusable(ctx: CompileContext, t: Target, prec: str, opts: BuildOptions, control: str) -> dict | None:
    """The cached engine entry of ``t.tower`` at ``prec`` when it fits; a misfit raises unless ``rebuild``."""
    onnx_sha = t.man.towers[t.tower][prec].sha256
    for e in [e for e in t.man.engines if e["tower"] == t.tower and e["precision"] == prec]:
        engine = bundle_file(t.folder, e["file"], what="TensorRT engine")
        manifest = bundle_file(t.folder, e["manifest"], what="engine manifest")
        if not engine.is_file() or not manifest.is_file():
            ctx.say(f"engine {e['file']} listed in {t.folder} is missing (or its manifest): building it again")
            continue
        em = EngineManifest.load(manifest)
        reasons = [
            c.reason
            for c in check_engine(em, ctx.info, onnx_sha256=onnx_sha, engine_sha256=sha256_file(engine))
            if not c.ok
        ]
        if em.build_flags != opts.as_flags():
            reasons.append("build options changed")
        if em.precision_control != control:
            reasons.append(f"built with {em.precision_control or 'an older lbedge'}, now {control}")
        if not reasons:
            return e
        if not ctx.rebuild:
            raise EngineMismatch(
                f"cached engine {e['file']} of {t.folder} does not fit this device or options "
                f"({'; '.join(reasons)}): rerun with --rebuild to replace it"
            )
        ctx.say(f"replacing engine {e['file']}: {'; '.join(reasons)}")
    return None


def _timing_cache(ctx: CompileContext, folder: Path) -> tuple[Path | None, bytes | None]:
    """This device's timing cache file in ``folder`` and its bytes (empty when new); (None, None) when off."""
    if not ctx.opts.timing_cache:
        return None, None
    path = bundle_file(folder, timing_cache_name(ctx.info), what="timing cache")
    return path, (path.read_bytes() if path.is_file() else b"")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _stage(
    ctx: CompileContext, t: Target, prec: str, built: Serialized, staging: Path, name: str, opts: BuildOptions
) -> tuple[Path, EngineManifest]:
    """Write the engine and its manifest into ``staging``."""
    entry = t.man.towers[t.tower][prec]
    engine = staging / f"{name}.engine"
    engine.write_bytes(built.data)
    info = ctx.info
    em = EngineManifest(
        tensorrt_version=info.tensorrt_version,
        cuda_version=info.cuda_version,
        compute_capability=info.compute_capability,
        device_name=info.device_name,
        platform=info.platform,
        precision=prec,
        onnx_sha256=entry.sha256,
        engine_sha256=sha256_file(engine),
        inputs=built.inputs,
        outputs=built.outputs,
        build_flags=opts.as_flags(),
        lbedge_version=__version__,
        precision_control=built.control,
    )
    em.save(engine.with_suffix(".json"))
    return engine, em


def _verify(ctx: CompileContext, t: Target, prec: str, engine: Path, em: EngineManifest) -> Agreement:
    """Run the staged engine against ONNX Runtime FP32 and record the agreement in its manifest."""
    threshold = ctx.min_cosine if ctx.min_cosine is not None else DEFAULT_MIN_COSINE[prec]
    reference = reference_backend(t.folder, t.man, t.tower, prec, ctx.say)
    candidate = None
    try:
        candidate = ctx.factory(engine, em.onnx_sha256)
        what = f"the TensorRT {prec} engine of the {t.tower} tower of {t.folder}"
        probe = t.probe(ctx.say)
        a = check_agreement(reference, candidate, probe, threshold, what)
    finally:  # the staged engine's GPU memory is released now, not at garbage collection
        close_backends(candidate, reference)
    em.agreement = {
        **a.to_dict(),
        "threshold": threshold,
        "reference": "onnxruntime fp32 (CPU)",
        "inputs": probe.what,
        "samples": len(probe.x),
    }
    em.save(engine.with_suffix(".json"))
    return a


def build_one(ctx: CompileContext, t: Target, prec: str) -> dict[str, Any]:
    """Reuse or build, check and install the engine of ``t.tower`` at ``prec``; a row for the report."""
    opts = tower_options(ctx.opts, t.tower, prec)
    control = precision_control(ctx.info.tensorrt_version, prec, opts.dla_core).mode
    cached = _reusable(ctx, t, prec, opts, control)
    row = {"bundle": str(t.folder), "tower": t.tower, "precision": prec}
    if cached is not None:
        ctx.say(f"reusing cached engine {cached['file']} ({t.tower} {prec}, TensorRT {ctx.info.tensorrt_version})")
        return {**row, "file": cached["file"], "reused": True, "seconds": 0.0, "min_cosine": None}
    ctx.say(
        f"building the TensorRT {prec} engine of the {t.tower} tower of {t.folder} on {ctx.info.device_name} "
        f"({control}): a first build takes minutes; later ones reuse this device's timing cache"
    )
    t0 = time.perf_counter()
    name, a = _build(ctx, t, prec, opts)
    ctx.say(f"{t.tower} {prec}: worst cosine to ONNX Runtime FP32 {a.min_cosine:.5f} over {t.probe(ctx.say).what}")
    return {
        **row,
        "file": f"engines/{name}.engine",
        "reused": False,
        "seconds": round(time.perf_counter() - t0, 1),
        "min_cosine": a.min_cosine,
    }


def _build(ctx: CompileContext, t: Target, prec: str, opts: BuildOptions) -> tuple[str, Agreement]:
    """Serialize the engine, stage it, check it against ONNX Runtime and install it; its name and agreement.
    An engine that fails the check leaves nothing behind (the timing cache is kept: it is timing data)."""
    entry = t.man.towers[t.tower][prec]
    onnx_path = verify_file(t.folder, entry.file, entry.sha256)
    keyed = EngineManifest(
        ctx.info.tensorrt_version,
        ctx.info.cuda_version,
        ctx.info.compute_capability,
        ctx.info.device_name,
        ctx.info.platform,
        prec,
        entry.sha256,
        build_flags=opts.as_flags(),
    )
    name = f"{t.tower}.{prec}.{keyed.cache_key()}"
    engines_dir = bundle_file(t.folder, "engines", what="engines folder")
    engines_dir.mkdir(exist_ok=True)
    cache_path, cache = _timing_cache(ctx, t.folder)
    built = ctx.serialize(onnx_path, prec, opts, cache)
    if cache_path is not None and built.timing_cache:
        _write_atomic(cache_path, built.timing_cache)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=engines_dir))
    try:
        engine, em = _stage(ctx, t, prec, built, staging, name, opts)
        a = _verify(ctx, t, prec, engine, em)
        _install(t, prec, staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return name, a


def _install(t: Target, prec: str, staging: Path, name: str) -> None:
    """Move the checked engine and manifest into ``engines/`` and list them in the bundle manifest."""
    rel_engine, rel_json = f"engines/{name}.engine", f"engines/{name}.json"
    os.replace(staging / f"{name}.engine", bundle_file(t.folder, rel_engine, what="TensorRT engine"))
    os.replace(staging / f"{name}.json", bundle_file(t.folder, rel_json, what="engine manifest"))
    old = [e for e in t.man.engines if e["tower"] == t.tower and e["precision"] == prec]
    t.man.engines = [e for e in t.man.engines if e not in old]
    t.man.engines.append({"tower": t.tower, "precision": prec, "file": rel_engine, "manifest": rel_json})
    t.man.write(t.folder)
    for e in old:  # the replaced engine's files, when they had another name
        for rel in {e["file"], e["manifest"]} - {rel_engine, rel_json}:
            bundle_file(t.folder, rel, what="replaced engine file").unlink(missing_ok=True)


# --- a bundle -----------------------------------------------------------------------------------------------------


def targets(folder: Path) -> list[Target]:
    """The towers ``folder`` compiles: its vision tower, and the text tower it holds or shares (in the text
    bundle's folder); a text bundle compiles its text tower."""
    man = Manifest.read(folder)
    out = []
    if "vision" in man.towers and man.modality != "text":
        out.append(Target(folder, man, "vision"))
    if man.modality == "text" or "text" in man.towers or man.text_bundle:
        tfolder, tman = text_source(folder, man)
        out.append(Target(tfolder, tman, "text"))
    return out


def _say_plan(plan: TowerPlan, folder: Path, say: Say) -> None:
    for s in plan.skipped:
        say(f"{folder}: {s.tower} {s.precision} skipped: {s.reason}")


def compile_bundle(
    folder: str | Path,
    *,
    precisions: Sequence[str] | None = None,
    opts: BuildOptions | None = None,
    rebuild: bool = False,
    say: Say = print,
    inputs: Sequence[str | Path] | None = None,
    min_cosine: float | None = None,
    backend_factory: BackendFactory | None = None,
    runtime: RuntimeInfo | None = None,
) -> list[dict[str, Any]]:
    """Build (or reuse) the engines of a bundle's graphs, each checked against ONNX Runtime FP32 before it is
    written; one row per engine.

    ``precisions``: what ``lbedge compile -p`` asked for (None: the defaults, see :func:`plan_tower`).
    ``inputs``: files or folders of the bundle's modality for the vision check (None: synthetic inputs).
    ``min_cosine``: the bar for every engine (None: 0.999 for fp32/fp16, 0.99 for int8).
    ``backend_factory(engine_path, onnx_sha256)`` runs a staged engine (default: :class:`TensorRTBackend`).
    """
    require_tensorrt()
    opts = opts or BuildOptions()
    opts.check()
    ctx = CompileContext(
        runtime or runtime_info(), opts, rebuild, say, min_cosine, backend_factory or default_factory, serialize_network
    )
    rows: list[dict[str, Any]] = []
    plans = [(t, plan_tower(t.tower, t.man.towers.get(t.tower, {}), precisions)) for t in targets(Path(folder))]
    for t, plan in plans:
        _say_plan(plan, t.folder, say)
        t.inputs = inputs
        rows += [build_one(ctx, t, prec) for prec in plan.build]
    if not rows:
        reasons = "; ".join(f"{s.tower} {s.precision}: {s.reason}" for _, p in plans for s in p.skipped)
        raise EngineBuildError(f"nothing to compile in {folder}: {reasons or 'the bundle has no graphs'}")
    return rows
