"""Compile a bundle's ONNX graphs into TensorRT engines on the target device (Jetson or GPU host).

Written against the TensorRT 10 Python API, with the TensorRT 8.5/8.6 differences handled (explicit-batch
network flag). INT8 engines come from the QDQ graphs (explicit quantization) with FP16 enabled for the
layers left in float; an optimisation profile covers batch ``min..max`` (static for DLA); the workspace is
bounded; the timing cache persists in the bundle so later builds are faster; DLA runs with GPU fallback;
version-compatible engines are optional (TensorRT >= 8.6).

Engines are cached: an engine whose manifest matches this device, TensorRT version and source ONNX is
reused, and a mismatched one is reported and rebuilt only when asked (``rebuild=True``): nothing is
rebuilt silently.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lbedge import __version__
from lbedge._deps import require
from lbedge.bundle import Manifest
from lbedge.engine import EngineManifest, check_engine, sha256_file
from lbedge.errors import EngineMismatch, LBEdgeError

log = logging.getLogger(__name__)


class EngineBuildError(LBEdgeError):
    """TensorRT could not parse or build a graph."""


@dataclass
class BuildOptions:
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 2048
    dla_core: int = -1                 # -1: GPU only; 0/1: DLA core with GPU fallback (AGX Orin / Orin NX)
    version_compatible: bool = False
    timing_cache: bool = True
    flags: dict = field(default_factory=dict)

    def as_flags(self) -> dict:
        return {"min_batch": self.min_batch, "opt_batch": self.opt_batch, "max_batch": self.max_batch,
                "workspace_mb": self.workspace_mb, "dla_core": self.dla_core,
                "version_compatible": self.version_compatible}


def _batch_shapes(shape: list, opts: BuildOptions) -> tuple[tuple, tuple, tuple]:
    rest = tuple(int(d) for d in shape[1:])
    if opts.dla_core >= 0:               # DLA needs static shapes
        return ((opts.max_batch, *rest),) * 3  # type: ignore[return-value]
    return (opts.min_batch, *rest), (opts.opt_batch, *rest), (opts.max_batch, *rest)


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, opts: BuildOptions,
                 timing_cache: Path | None = None) -> EngineManifest:
    """Parse ``onnx_path`` and build a serialized engine at ``engine_path`` with its manifest beside it."""
    trt = require("tensorrt")
    from lbedge.backends.tensorrt_backend import runtime_info

    info = runtime_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)          # scales come from the graph's Q/DQ nodes
    if opts.dla_core >= 0:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EngineBuildError(f"DLA core {opts.dla_core} requested but this device has "
                                   f"{builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    io_in = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        lo, opt, hi = _batch_shapes(list(t.shape), opts)
        profile.set_shape(t.name, lo, opt, hi)
        io_in[t.name] = {"dtype": str(t.dtype), "min": list(lo), "opt": list(opt), "max": list(hi)}
    config.add_optimization_profile(profile)
    io_out = {network.get_output(i).name: {"dtype": str(network.get_output(i).dtype),
                                           "shape": list(network.get_output(i).shape)}
              for i in range(network.num_outputs)}
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if cache is not None and timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    manifest = EngineManifest(
        tensorrt_version=info.tensorrt_version, cuda_version=info.cuda_version,
        compute_capability=info.compute_capability, device_name=info.device_name, platform=info.platform,
        precision=precision, onnx_sha256=sha256_file(onnx_path), engine_sha256=sha256_file(engine_path),
        inputs=io_in, outputs=io_out, build_flags=opts.as_flags(), lbedge_version=__version__)
    manifest.save(engine_path.with_suffix(".json"))
    return manifest


def compile_bundle(folder: str | Path, *, precisions: list[str] | None = None, towers: tuple[str, ...] = ("vision", "text"),
                   opts: BuildOptions | None = None, rebuild: bool = False,
                   say: Callable[[str], None] = print) -> list[dict]:
    """Build (or reuse) engines for the bundle's graphs; returns one row per engine."""
    require("tensorrt")
    from lbedge.backends.tensorrt_backend import runtime_info

    folder = Path(folder)
    man = Manifest.read(folder)
    opts = opts or BuildOptions()
    info = runtime_info()
    rows = []
    for tower in towers:
        have = man.towers.get(tower, {})
        wanted = precisions or (["int8", "fp16"] if tower == "vision" else ["fp16"])
        for prec in [p for p in wanted if p in have]:
            target = have[prec].details.get("int8", {}).get("target", "tensorrt") if prec == "int8" else None
            if target == "cpu":
                raise EngineBuildError("the bundle's INT8 graph was quantized for ONNX Runtime on CPUs (uint8 "
                                       "activations with zero points), which TensorRT cannot import: rerun "
                                       "`lbedge quantize BUNDLE -p int8 --int8-target tensorrt --calib DIR`")
            onnx_file = folder / have[prec].file
            onnx_sha = have[prec].sha256
            existing = [e for e in man.engines if e["tower"] == tower and e["precision"] == prec]
            for e in existing:
                em = EngineManifest.load(folder / e["manifest"])
                failed = [c for c in check_engine(em, info, onnx_sha256=onnx_sha,
                                                  engine_sha256=sha256_file(folder / e["file"]))
                          if not c.ok]
                if not failed and em.build_flags == opts.as_flags():
                    say(f"reusing cached engine {e['file']} ({tower} {prec}, TensorRT {em.tensorrt_version})")
                    rows.append({"tower": tower, "precision": prec, "file": e["file"], "reused": True, "seconds": 0.0})
                    break
                reasons = "; ".join(c.reason for c in failed) or "build options changed"
                if not rebuild:
                    raise EngineMismatch(f"cached engine {e['file']} does not fit this device or options ({reasons}): "
                                         "rerun with --rebuild to replace it")
                say(f"replacing engine {e['file']}: {reasons}")
            else:
                say(f"building TensorRT engine for the {tower} tower ({prec}) on {info.device_name}: the first build "
                    "takes several minutes (ViT-L on an Orin: 5-20 min); later builds reuse the timing cache")
                t0 = time.perf_counter()
                probe = EngineManifest(info.tensorrt_version, info.cuda_version, info.compute_capability,
                                       info.device_name, info.platform, prec, onnx_sha, build_flags=opts.as_flags())
                rel = f"engines/{tower}.{prec}.{probe.cache_key()}.engine"
                build_engine(onnx_file, folder / rel, prec, opts,
                             timing_cache=(folder / "engines" / "timing.cache") if opts.timing_cache else None)
                man.engines = [e for e in man.engines if not (e["tower"] == tower and e["precision"] == prec)]
                man.engines.append({"tower": tower, "precision": prec, "file": rel,
                                    "manifest": rel[: -len(".engine")] + ".json"})
                man.write(folder)
                rows.append({"tower": tower, "precision": prec, "file": rel, "reused": False,
                             "seconds": round(time.perf_counter() - t0, 1)})
    return rows
