"""Export LanguageBind towers to ONNX and validate them against PyTorch (like Optimum's ``--atol`` check).

Each tower is exported on its own: ``vision`` (pixel_values float32 ``[B, *input_shape]`` -> embeds
``[B, D]``, L2-normalised) and ``text`` (input_ids int32 ``[B, 77]`` -> embeds ``[B, D]``). Opset 17,
dynamic batch, attention decomposed into MatMul/Softmax (what ``scaled_dot_product_attention`` exports to
with the TorchScript exporter), no custom ops; LayerNormalization stays one op. Then onnxslim folds
constants and simplifies, onnx.checker and shape inference run, and ONNX Runtime's outputs are compared
with PyTorch's on real inputs: beyond ``atol`` the export fails.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lbedge.errors import LBEdgeError

from . import onnx_utils
from .trt_ops import OpIssue, check_ops


class ExportError(LBEdgeError):
    """An exported graph failed its checks or disagrees with PyTorch beyond the tolerance."""


@dataclass
class ExportConfig:
    opset: int = 17
    simplify: bool = True
    atol: float = 1e-4  # max abs difference of the L2-normalised embeddings, ORT vs torch
    min_cosine: float = 0.9999
    max_batch: int = 64  # the batch axis is dynamic; this bounds validation batches only
    trt_releases: tuple[str, ...] = ("8.6", "10")


@dataclass
class ExportReport:
    tower: str
    path: Path
    files: list[Path]
    seconds: float
    nodes_exported: int
    nodes_final: int
    simplify_seconds: float
    agreement: onnx_utils.Agreement | None
    trt_issues: dict[str, list[OpIssue]] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tower": self.tower,
            "file": self.path.name,
            "seconds": round(self.seconds, 2),
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "simplify_seconds": round(self.simplify_seconds, 2),
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "tensorrt": {r: [f"{i.op} x{i.count}: {i.problem}" for i in v] for r, v in self.trt_issues.items()},
            "ops": self.ops,
        }


def tower_module(model: Any, tower: str):
    """The exportable torch module of ``tower`` (projection and L2 norm included)."""
    from lbedge.models.towers import TextTower, VisionTower

    if tower == "vision":
        return VisionTower(model).eval()
    if tower == "text":
        return TextTower(model).eval()
    raise ValueError(f"unknown tower {tower!r}: choose vision or text")


def dummy_input(model: Any, tower: str, batch: int = 2) -> np.ndarray:
    if tower == "vision":
        return np.random.default_rng(0).normal(size=(batch, *model.config.preprocess.input_shape)).astype(np.float32)
    t = model.config.text
    top = t.vocab_size - 1  # tiny test towers have small vocabularies
    ids = np.full((batch, t.max_length), min(t.pad_id, top), np.int32)
    ids[:, 0] = min(t.bos_token_id, top - 1)
    ids[:, 1:4] = np.arange(3) + min(320, top - 4)
    ids[1:, 4:6] = min(400, top - 2)  # rows of different lengths
    return ids


def torch_outputs(module: Any, x: np.ndarray, batch: int = 8) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).float().numpy())
    return np.concatenate(outs)


def ort_outputs(path: str | Path, x: np.ndarray, batch: int = 8, threads: int | None = None) -> np.ndarray:
    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], threads=threads)
    name = be.input_names[0]
    return np.concatenate([be.run({name: x[i : i + batch]})[be.output_names[0]] for i in range(0, len(x), batch)])


def export_tower(
    model: Any, tower: str, path: str | Path, *, inputs: np.ndarray | None = None, config: ExportConfig | None = None
) -> ExportReport:
    """Export one tower of a torch ``LanguageBindModel`` to ``path`` and validate it.

    ``inputs``: real preprocessed inputs (vision) or token ids (text) for the ORT-vs-torch check;
    a synthetic batch is used when none are given.
    """
    import torch

    cfg = config or ExportConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = tower_module(model, tower)
    example = dummy_input(model, tower)
    name = "pixel_values" if tower == "vision" else "input_ids"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.from_numpy(example),),
                str(raw),
                input_names=[name],
                output_names=["embeds"],
                opset_version=cfg.opset,
                do_constant_folding=True,
                dynamic_axes={name: {0: "batch"}, "embeds": {0: "batch"}},
                dynamo=False,
            )
        graph = onnx.load(str(raw))
    nodes_exported = len(graph.graph.node)
    t1 = time.perf_counter()
    if cfg.simplify:
        import onnxslim

        graph = onnxslim.slim(graph)
    simplify_seconds = time.perf_counter() - t1
    graph.producer_name = "lbedge"
    files = onnx_utils.save(graph, path)
    try:
        onnx_utils.check(path)
    except Exception as exc:
        raise ExportError(f"exported {tower} graph {path} fails onnx.checker: {exc}") from exc
    seconds = time.perf_counter() - t0
    x = inputs if inputs is not None else dummy_input(model, tower, batch=3)
    if tower == "text":
        x = np.asarray(x).astype(np.int32)
    ref = torch_outputs(module, x)
    got = ort_outputs(path, x)
    agree = onnx_utils.agreement(ref, got)
    if agree.max_abs_diff > cfg.atol or agree.min_cosine < cfg.min_cosine:
        raise ExportError(
            f"{tower} ONNX disagrees with PyTorch: max abs diff {agree.max_abs_diff:.2e} "
            f"(atol {cfg.atol:g}), min cosine {agree.min_cosine:.6f} (min {cfg.min_cosine})"
        )
    issues = {r: check_ops(path, r) for r in cfg.trt_releases}
    return ExportReport(
        tower,
        path,
        files,
        seconds,
        nodes_exported,
        len(graph.graph.node),
        simplify_seconds,
        agree,
        issues,
        onnx_utils.op_histogram(path),
    )
