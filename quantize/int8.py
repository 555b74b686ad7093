"""INT8 post-training quantization: QDQ ONNX that TensorRT consumes as explicit quantization, and the
fastest INT8 form for ONNX Runtime on CPUs.

``tensorrt`` target (default): onnxruntime's ``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs
around MatMul and Conv: int8 weights, symmetric and per output channel; activations symmetric int8 (zero point
0, which TensorRT requires), calibrated on real inputs with MinMax, Entropy or Percentile.

``cpu`` target: by default ``dynamic`` (``quantize_dynamic``: int8 per-channel weights of every MatMul with a
constant weight, activations quantized per batch at run time, 7-bit weights for x86 kernels without VNNI):
faster and closer to FP32 than static U8S8 QDQ on ViT-L, with no calibration (figures: benchmarks/RESULTS.md).
The static methods remain available for the cpu
target (asymmetric uint8 activations, U8S8). Dynamic graphs use MatMulInteger and DynamicQuantizeLinear, which
TensorRT does not parse: they are for ONNX Runtime only.

When the quantized tower's agreement with FP32 on held-out inputs falls short, the most sensitive
layers fall back to floating point: first the patch embedding and the output projection, then the MLP
output projections (fc2, where CLIP's outlier activations live) from the last layer backwards. On
TensorRT 10 the fallback layers run in FP32 (strongly typed engines); on 8.6 and DLA in FP16 with the
fragile layers pinned to FP32 (see :mod:`lbedge.quantize.tensorrt_build`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lbedge.cpu import int8_weight_bits
from lbedge.errors import LBEdgeError
from lbedge.progress import stage

from . import onnx_utils

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile", "dynamic")


class QuantizationError(LBEdgeError):
    """Quantization could not reach the requested agreement with FP32."""


TARGETS = ("tensorrt", "cpu")


@dataclass
class Int8Config:
    # tensorrt: symmetric int8 activations (zero point 0), what TensorRT's explicit quantization needs;
    # cpu: asymmetric uint8 activations x int8 weights (U8S8), what ONNX Runtime's x86 VNNI kernels run fastest
    target: str = "tensorrt"
    # minmax (tensorrt) / dynamic (cpu) by default: Entropy and Percentile build histograms of every calibrated
    # tensor, which on a ViT-L/14 costs about 40 s per calibration sample on 2 cores (MinMax: about 5 s)
    method: str | None = None  # minmax | entropy | percentile | dynamic (cpu only); None: default
    percentile: float = 99.999
    per_channel: bool = True
    # 7-bit weights: ONNX Runtime's U8S8 kernels on x86 without VNNI or AMX (AVX2, AVX-512BW) sum pairs of u8*s8
    # products into saturating int16, which full-range weights overflow. None: for the cpu target, 7 bits unless
    # the CPU building the graph accumulates exactly (lbedge.cpu.int8_weight_bits); tensorrt: 8 bits
    reduce_range: bool | None = None
    min_cosine: float = 0.99  # target: worst held-out embedding cosine vs FP32
    max_fallback_rounds: int = 4
    op_types: tuple[str, ...] = ("MatMul", "Conv", "Gemm")
    # each self-attention as one ONNX Runtime MultiHeadAttention kernel (.attention_fusion; ONNX Runtime only,
    # TensorRT cannot parse com.microsoft operators). Off by default: on the ViT-L image tower it measured no faster
    # than ONNX Runtime's own kernels (benchmarks/bench_int8_cpu.py)
    fuse_attention: bool = False


@dataclass
class Int8Report:
    target: str
    method: str
    seconds: float
    calibration_samples: int
    excluded_nodes: list[str]
    agreement: onnx_utils.Agreement | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    quantized_nodes: int = 0
    weight_bits: int = 8
    weight_bits_reason: str = ""
    fused_attention: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "seconds": round(self.seconds, 2),
            "calibration_samples": self.calibration_samples,
            "excluded_nodes": self.excluded_nodes,
            "quantized_nodes": self.quantized_nodes,
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "rounds": self.rounds,
            "weight_bits": self.weight_bits,
            "weight_bits_reason": self.weight_bits_reason,
            "fused_attention": self.fused_attention,
        }


class _Reader:
    """onnxruntime CalibrationDataReader over a preprocessed array, one sample per call."""

    def __init__(self, name: str, data: np.ndarray):
        self.name, self.data, self.i = name, data, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.data):
            return None
        self.i += 1
        return {self.name: self.data[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def _fusing(cfg: Int8Config) -> bool:
    if cfg.fuse_attention and cfg.target == "tensorrt":
        raise QuantizationError(
            "fused attention (com.microsoft.MultiHeadAttention) is for ONNX Runtime: not with TensorRT"
        )
    return cfg.fuse_attention


def _fuse_attention(path: Path) -> int:
    """Fuse the attention blocks of the graph at ``path`` in place (:mod:`.attention_fusion`); how many."""
    from .attention_fusion import fuse_attention

    model = onnx.load(str(path))
    fused = fuse_attention(model)
    if fused:
        big = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit: weights beside the graph
        onnx.save(model, str(path), save_as_external_data=big, location=path.name + ".data" if big else None)
        stage("fused %d attention blocks into ONNX Runtime's MultiHeadAttention", fused)
    return fused


def resolved_method(cfg: Int8Config) -> str:
    """The calibration method ``cfg`` runs: as given, or the target's default (dynamic for cpu, minmax for
    tensorrt). ``dynamic`` calibrates nothing: it needs held-out inputs only, for the agreement check."""
    return cfg.method or ("dynamic" if cfg.target == "cpu" else "minmax")


def weight_width(cfg: Int8Config) -> tuple[bool, str]:
    """(reduce_range, why) for ``cfg``: as given, else 8-bit weights for TensorRT and for CPUs whose INT8 kernels
    accumulate exactly, 7-bit for the others (:func:`lbedge.cpu.int8_weight_bits` of the building machine)."""
    if cfg.reduce_range is not None:
        return cfg.reduce_range, f"{7 if cfg.reduce_range else 8}-bit weights asked for"
    if cfg.target != "cpu":
        return False, "TensorRT: symmetric 8-bit weights"
    bits = int8_weight_bits()
    return bits.bits == 7, f"built on {bits.reason}"


def fallback_groups(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[list[str]]:
    """Node groups to keep in floating point, most sensitive first (see module docstring)."""
    nodes = [n for n in model.graph.node if n.op_type in op_types]
    first_last = [n.name for n in nodes if n.op_type == "Conv"] + ([nodes[-1].name] if nodes else [])
    groups = [first_last]
    fc2 = [n.name for n in nodes if "fc2" in n.name or "mlp" in n.name and "fc2" in "".join(n.input)]
    if not fc2:  # names lost by simplification: fall back to every 6th MatMul (one MLP output per layer)
        mm = [n.name for n in nodes if n.op_type == "MatMul"]
        fc2 = mm[5::6]
    fc2.reverse()
    step = max(1, len(fc2) // 3)
    groups += [fc2[i : i + step] for i in range(0, len(fc2), step)]
    return [g for g in groups if g]


#: the text graph's dynamic INT8 recipes, tried in order: everything (ViT-L's text graph 472 -> 119 MiB at cosine
#: 0.9998), then the token-embedding table alone (all-MiniLM-L6-v2: MatMuls reach only cosine 0.993, the table alone
#: 0.9998 at 87 -> 55 MB)
TEXT_INT8_RECIPES: tuple[tuple[str, ...], ...] = (("MatMul", "Gather"), ("Gather",))


def quantize_text_int8(
    src: str | Path, dst: str | Path, ids: np.ndarray, *, min_cosine: float = 0.999
) -> tuple[bool, onnx_utils.Agreement, tuple[str, ...]]:
    """A dynamic INT8 text graph for ONNX Runtime (MatMul weights per channel, 7-bit; the token embedding
    table in int8). The recipes of :data:`TEXT_INT8_RECIPES` are tried in order and the first whose worst cosine
    to FP32 on ``ids`` reaches ``min_cosine`` is kept. Returns (kept, its agreement or the last one tried, the
    op types quantized); nothing is left at ``dst`` when none is kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .export import ort_outputs

    src, dst = Path(src), Path(dst)
    ref = ort_outputs(src, ids)
    agree = None
    for ops in TEXT_INT8_RECIPES:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=list(ops),
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                use_external_data_format=src.with_name(src.name + ".data").exists(),
                extra_options={"MatMulConstBOnly": True},
            )
        agree = onnx_utils.agreement(ref, ort_outputs(dst, ids))
        if agree.min_cosine >= min_cosine:
            return True, agree, ops
        for f in onnx_utils.model_files(dst):
            f.unlink()
    assert agree is not None
    return False, agree, ()


@dataclass
class _QuantizeJob:
    """One onnxruntime quantization of the pre-processed graph ``pre`` into ``dst``, with given nodes excluded;
    run once per fallback round (static: the calibration ranges are cached between rounds when onnxruntime can)."""

    pre: Path
    dst: Path
    external: bool
    cfg: Int8Config
    calib: np.ndarray
    input_name: str
    method: Any
    reduce_range: bool
    extra: dict[str, Any]
    cache: dict[str, str]

    def run(self, exclude: list[str]) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        cfg = self.cfg
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints calibration chatter
            if self.method is None:  # dynamic: activations quantized at run time
                quantize_dynamic(
                    str(self.pre),
                    str(self.dst),
                    op_types_to_quantize=["MatMul"],
                    per_channel=cfg.per_channel,
                    reduce_range=self.reduce_range,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude),
                    use_external_data_format=self.external,
                    extra_options={"MatMulConstBOnly": True},
                )
                return
            act_type = QuantType.QInt8 if cfg.target == "tensorrt" else QuantType.QUInt8
            quantize_static(
                str(self.pre),
                str(self.dst),
                _Reader(self.input_name, self.calib),
                quant_format=QuantFormat.QDQ,
                activation_type=act_type,
                weight_type=QuantType.QInt8,
                per_channel=cfg.per_channel,
                calibrate_method=self.method,
                reduce_range=self.reduce_range,
                op_types_to_quantize=list(cfg.op_types),
                nodes_to_exclude=list(exclude),
                use_external_data_format=self.external,
                extra_options=self.extra,
                **self.cache,
            )


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calib: np.ndarray,
    *,
    holdout: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    text_embeds: np.ndarray | None = None,
    config: Int8Config | None = None,
) -> Int8Report:
    """Quantize the FP32 graph ``src`` to ``dst`` (QDQ), calibrating on ``calib`` (preprocessed inputs).

    ``holdout`` inputs and their FP32 ``reference`` embeddings measure agreement; when the worst cosine
    is below ``config.min_cosine`` sensitive layers fall back to float, round by round.
    """
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .export import ort_outputs

    cfg = config or Int8Config()
    if cfg.target not in TARGETS:
        raise QuantizationError(f"unknown INT8 target {cfg.target!r}: choose {', '.join(TARGETS)}")
    if cfg.method is None:
        cfg = dataclasses.replace(cfg, method=resolved_method(cfg))
    if cfg.method not in METHODS:
        raise QuantizationError(f"unknown calibration method {cfg.method!r}: choose {', '.join(METHODS)}")
    if cfg.method == "dynamic" and cfg.target != "cpu":
        raise QuantizationError(
            "dynamic quantization makes MatMulInteger graphs that TensorRT cannot parse: use it "
            "with --int8-target cpu, or a calibrated method (minmax, entropy, percentile)"
        )
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "dynamic": None,
    }[cfg.method]
    reduce_range, bits_reason = weight_width(cfg)
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    input_name = model.graph.input[0].name
    groups = fallback_groups(model, cfg.op_types)
    excluded: list[str] = []
    rounds: list[dict[str, Any]] = []
    agree = None
    # calibrate once, reuse the ranges in every fallback round (onnxruntime >= 1.23 has the cache)
    cache_kw = "calibration_cache_path" in inspect.signature(quantize_static).parameters
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        fused = _fuse_attention(pre) if _fusing(cfg) else 0
        extra = {
            "ActivationSymmetric": cfg.target == "tensorrt",
            "WeightSymmetric": True,
            "CalibPercentile": cfg.percentile,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        }
        if cfg.method == "entropy":
            extra["CalibNumBins"] = 512
        job = _QuantizeJob(
            pre=pre,
            dst=dst,
            external=src.with_name(src.name + ".data").exists(),
            cfg=cfg,
            calib=calib,
            input_name=input_name,
            method=method,
            reduce_range=reduce_range,
            extra=extra,
            cache=({"calibration_cache_path": str(Path(tmp) / "ranges.json")} if cache_kw else {}),
        )
        run = job.run
        tried: list[tuple[list[str], onnx_utils.Agreement]] = []
        for round_no in range(cfg.max_fallback_rounds + 1):
            run(excluded)
            if holdout is None or reference is None:
                break
            agree = onnx_utils.agreement(reference, ort_outputs(dst, holdout), text_embeds)
            rounds.append({"excluded": len(excluded), **agree.to_dict()})
            tried.append((list(excluded), agree))
            stage(
                "INT8 round %d: %d nodes in float, worst cosine to FP32 %.5f (target %.4f)",
                round_no,
                len(excluded),
                agree.min_cosine,
                cfg.min_cosine,
            )
            if agree.min_cosine >= cfg.min_cosine or round_no >= len(groups) or round_no == cfg.max_fallback_rounds:
                break
            excluded = excluded + groups[round_no]
        if tried and tried[-1][1].min_cosine < cfg.min_cosine:
            # the target was not reached: keep the fewest float layers that come within 0.001 of the best
            # agreement seen (layers in float cost speed and, here, bought nothing)
            best = max(a.min_cosine for _, a in tried)
            excluded, agree = next((e, a) for e, a in tried if a.min_cosine >= best - 1e-3)
            if len(excluded) != len(tried[-1][0]):
                run(excluded)
    q = onnx.load(str(dst), load_external_data=False)
    n_q = sum(1 for n in q.graph.node if n.op_type in ("DequantizeLinear", "MatMulInteger"))
    report = Int8Report(
        cfg.target,
        cfg.method,
        time.perf_counter() - t0,
        len(calib),
        excluded,
        agree,
        rounds,
        n_q,
        7 if reduce_range else 8,
        bits_reason,
        fused,
    )
    if agree is not None and agree.min_cosine < cfg.min_cosine:
        log.warning(
            "int8 agreement %.4f is below the target %.4f even with %d layers in float",
            agree.min_cosine,
            cfg.min_cosine,
            len(excluded),
        )
    return report
