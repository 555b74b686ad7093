"""FP16 conversion that keeps the numerically fragile ops in FP32.

LayerNorm, Softmax and the reductions of the final L2 normalisation overflow or lose precision in
FP16 (the known TensorRT/ORT LayerNorm and Pow issues): they stay FP32, with Casts around them;
everything else (MatMul, Conv, Add, Mul, GELU parts...) runs in FP16. Graph inputs and outputs stay
FP32, so callers do not change.

One pass over the (topologically sorted) graph: float initializers used by FP16 nodes get an FP16
copy; a dynamic tensor crossing between the two precisions gets one Cast (shared by its consumers).
(onnxconverter-common's converter was measured to stall for minutes on a 50-node graph with a
block list, hence this small dedicated pass.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_utils

KEEP_FP32 = frozenset(
    {
        "LayerNormalization",
        "Softmax",
        "ReduceMean",
        "ReduceL2",
        "ReduceSum",
        "Pow",
        "Sqrt",
        "Div",
        "Clip",
        "ArgMax",
        "Cast",
        "Equal",
        "Where",
        "IsNaN",
        "ConstantOfShape",
        "Range",
        "Resize",
    }
)
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def to_fp16(model: onnx.ModelProto, keep_fp32: frozenset[str] = KEEP_FP32) -> onnx.ModelProto:
    """Return an FP16 copy of ``model`` with ``keep_fp32`` op types left in FP32."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    is_float = {
        vi.name for vi in list(g.value_info) + list(g.input) + list(g.output) if vi.type.tensor_type.elem_type == FLOAT
    }
    inits = {t.name: t for t in g.initializer}
    is_float |= {n for n, t in inits.items() if t.data_type == FLOAT}
    dtype: dict[str, int] = {i.name: FLOAT for i in g.input if i.name in is_float}
    dtype.update({n: FLOAT for n, t in inits.items() if t.data_type == FLOAT})
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    casts: dict[tuple[str, int], str] = {}

    def as_type(name: str, want: int) -> str:
        if dtype.get(name, want) == want or name not in is_float:
            return name
        key = (name, want)
        if key not in casts:
            if name in inits and want == HALF:
                arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                new = numpy_helper.from_array(arr, f"{name}__fp16")
                new_inits.append(new)
            else:
                new = None
                cast_out = f"{name}__{'fp16' if want == HALF else 'fp32'}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=want, name=f"{cast_out}_cast"))
            casts[key] = new.name if new is not None else f"{name}__{'fp16' if want == HALF else 'fp32'}"
        return casts[key]

    for node in g.node:
        want = FLOAT if node.op_type in keep_fp32 else HALF
        if node.op_type == "Constant" and want == HALF:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(
                        numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name)
                    )
        node.input[:] = [as_type(i, want) if i else i for i in node.input]
        new_nodes.append(node)
        for o in node.output:
            if o in is_float:
                dtype[o] = FLOAT if node.op_type == "Cast" else want
    # graph outputs stay FP32
    for out in g.output:
        if dtype.get(out.name) == HALF:
            inner = f"{out.name}__fp16_out"
            for n in new_nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"{out.name}_to_fp32"))
    used = {i for n in new_nodes for i in n.input}
    keep_inits = [t for t in g.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    graph = helper.make_graph(new_nodes, g.name, list(model.graph.input), list(model.graph.output), keep_inits)
    out_model = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="lbedge-fp16")
    out_model.ir_version = model.ir_version
    return out_model


def convert_fp16(src: str | Path, dst: str | Path, keep_fp32: frozenset[str] = KEEP_FP32) -> list[Path]:
    """Write an FP16 copy of ``src`` at ``dst``; returns the files written."""
    model = onnx.load(str(src))
    out = to_fp16(model, keep_fp32)
    files = onnx_utils.save(out, dst)
    onnx_utils.check(dst)
    return files
