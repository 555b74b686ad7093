"""Small ONNX helpers shared by export, FP16 and INT8: saving large models, checking, comparing with ORT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lbedge.engine import sha256_file

# protobuf cannot hold more than 2 GB: bigger models keep their weights in one external data file
EXTERNAL_DATA_BYTES = 1_800_000_000


def save(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    """Save ``model``; weights go to ``<name>.data`` beside it when the model is too big for protobuf.

    Returns the files written (the .onnx first).
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return [path, data]
    onnx.save_model(model, str(path))
    return [path]


def model_files(path: str | Path) -> list[Path]:
    """The .onnx file and its external data file when present."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return [path, data] if data.is_file() else [path]


def check(path: str | Path) -> None:
    """onnx.checker (full check, by path so external data works) and strict shape inference."""
    onnx.checker.check_model(str(path), full_check=True)


def op_histogram(path: str | Path) -> dict[str, int]:
    m = onnx.load(str(path), load_external_data=False)
    hist: dict[str, int] = {}
    for n in m.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return dict(sorted(hist.items()))


@dataclass
class Agreement:
    """How closely two sets of embeddings agree (rows paired)."""

    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: float | None = None     # zero-shot top-1 agreement against text embeddings, if given

    def to_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def agreement(ref: np.ndarray, got: np.ndarray, text_embeds: np.ndarray | None = None) -> Agreement:
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    top1 = None
    if text_embeds is not None and len(text_embeds) > 1:
        top1 = float(((ref @ text_embeds.T).argmax(1) == (got @ text_embeds.T).argmax(1)).mean())
    return Agreement(float(np.abs(ref - got).max()), float(cos.min()), float(cos.mean()), top1)


def files_sha256(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in paths}
