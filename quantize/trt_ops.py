"""Check an ONNX graph against the operators TensorRT's ONNX parser supports, per TensorRT release.

The table (``tensorrt_ops.json``) is derived from onnx-tensorrt's docs/operators.md at the releases lbedge
targets by ``tools/make_trt_opsets.py``: TensorRT 8.5 (JetPack 5.1), 8.6 (JetPack 6.0) and 10 (JetPack 6.1+,
x86 GPUs). TensorRT itself cannot run here, so this is the check that can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx

_TABLE = Path(__file__).with_name("tensorrt_ops.json")
_ONNX_TO_TRT = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.UINT8: "UINT8",
}
# ops that carry no data of their own type, or whose type lists describe only some inputs
_UNTYPED = {
    "Shape",
    "Constant",
    "ConstantOfShape",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Concat",
    "Slice",
    "Cast",
    "Identity",
    "Range",
    "Size",
    "QuantizeLinear",
    "DequantizeLinear",
    "Where",
    "Equal",
}


@dataclass(frozen=True)
class OpIssue:
    op: str
    count: int
    problem: str


@lru_cache(maxsize=1)
def support_table() -> dict[str, dict[str, dict]]:
    return json.loads(_TABLE.read_text())["releases"]


def releases() -> list[str]:
    return list(support_table())


def check_ops(model: onnx.ModelProto | str | Path, release: str = "10") -> list[OpIssue]:
    """Ops of ``model`` that TensorRT ``release``'s ONNX parser rejects, or whose input type it lacks."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    table = support_table()[release]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best-effort here
        inferred = model
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    types.update({init.name: init.data_type for init in inferred.graph.initializer})
    counts: dict[tuple[str, str], int] = {}
    for node in inferred.graph.node:
        entry = table.get(node.op_type)
        if entry is None or not entry["supported"]:
            key = (node.op_type, f"not supported by the TensorRT {release} ONNX parser")
        elif node.op_type not in _UNTYPED and entry["types"] and node.input and node.input[0] in types:
            trt_type = _ONNX_TO_TRT.get(types[node.input[0]], "OTHER")
            if trt_type in entry["types"] or (
                trt_type == "INT64" and "INT32" in entry["types"] and not release.startswith("10")
            ):
                continue  # TensorRT 8.x casts INT64 down to INT32
            key = (
                node.op_type,
                f"input type {trt_type} not supported (TensorRT {release}: {', '.join(entry['types'])})",
            )
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return [OpIssue(op, n, problem) for (op, problem), n in sorted(counts.items())]
