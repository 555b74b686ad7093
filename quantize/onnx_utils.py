"""Small ONNX helpers shared by export, FP16 and INT8: saving large models, checking, comparing with ORT."""

from __future__ import annotations

from pathlib import Path

import onnx

from lbedge.engine import sha256_file
from lbedge.validate import Agreement, agreement

__all__ = ["Agreement", "agreement", "check", "files_sha256", "model_files", "op_histogram", "save"]

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
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
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


def files_sha256(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in paths}
