"""Fused attention for ONNX Runtime on CPUs: each exported self-attention becomes one ``MultiHeadAttention``.

lbedge's towers export ``scaled_dot_product_attention`` as ten nodes per layer: the biased q/k/v projections are
reshaped to heads and transposed, q and k are each scaled by the square root of the softmax scale, multiplied,
soft-maxed, multiplied by v, transposed back and reshaped for the output projection. ONNX Runtime's
``com.microsoft.MultiHeadAttention`` does all of it in one kernel (no transposed copies of q, k, v and the
context), which its own transformer optimizer does not find in this form. :func:`fuse_attention` rewrites the
pattern exactly as exported, and leaves anything else alone (masked attention, other layouts): a graph it
cannot match runs as before.

The fused graph is for ONNX Runtime only (TensorRT has no ``com.microsoft`` operators): the cpu INT8 target
uses it when asked (``Int8Config(fuse_attention=True)``); it is off by default because on the ViT-L image tower
it measured no faster than ONNX Runtime's separate kernels (benchmarks/RESULTS.md). Bundles' FP32 and FP16
graphs and the tensorrt target stay standard ONNX.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"


@dataclass
class _Graph:
    """Producers, consumers and constant values of a graph's tensors."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        g = self.model.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in g.initializer}

    def node(self, tensor: str, op: str) -> onnx.NodeProto | None:
        n = self.producer.get(tensor)
        return n if n is not None and n.op_type == op else None

    def const(self, tensor: str) -> np.ndarray | None:
        if tensor in self.inits:
            return numpy_helper.to_array(self.inits[tensor])
        n = self.producer.get(tensor)
        if n is not None and n.op_type == "Constant":
            return numpy_helper.to_array(n.attribute[0].t) if n.attribute and n.attribute[0].t.dims else None
        return None

    def only_consumer(self, tensor: str, op: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _heads(graph: _Graph, scaled: str, perm: list[int]) -> tuple[str, int, int, float] | None:
    """From ``Mul(Transpose(Reshape(x, [.., S, H, D]), perm), s)``: (x, H, D, s)."""
    mul = graph.node(scaled, "Mul")
    if mul is None:
        return None
    for i, other in ((0, 1), (1, 0)):
        tr = graph.node(mul.input[i], "Transpose")
        scale = graph.const(mul.input[other])
        if tr is None or scale is None or scale.size != 1 or _perm(tr) != perm:
            continue
        rs = graph.node(tr.input[0], "Reshape")
        shape = graph.const(rs.input[1]) if rs is not None else None
        if shape is None or shape.size != 4 or shape[2] <= 0 or shape[3] <= 0:
            return None
        return rs.input[0], int(shape[2]), int(shape[3]), float(scale.reshape(()))
    return None


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replace every unmasked exported self-attention of ``model`` by ``com.microsoft.MultiHeadAttention``, in
    place; returns how many were fused (0: the graph is unchanged)."""
    graph = _Graph(model)
    fused: list[tuple[list[onnx.NodeProto], onnx.NodeProto]] = []  # the nodes an attention replaces, its node
    for sm in [n for n in model.graph.node if n.op_type == "Softmax"]:
        if next((a.i for a in sm.attribute if a.name == "axis"), -1) not in (-1, 3):
            continue
        scores = graph.node(sm.input[0], "MatMul")  # no Add: masked attention is left alone
        if scores is None:
            continue
        q = _heads(graph, scores.input[0], [0, 2, 1, 3])
        k = _heads(graph, scores.input[1], [0, 2, 3, 1])
        ctx = graph.only_consumer(sm.output[0], "MatMul")
        if q is None or k is None or ctx is None or ctx.input[0] != sm.output[0]:
            continue
        v_tr = graph.node(ctx.input[1], "Transpose")
        v_rs = graph.node(v_tr.input[0], "Reshape") if v_tr is not None and _perm(v_tr) == [0, 2, 1, 3] else None
        back = graph.only_consumer(ctx.output[0], "Transpose")
        out = (
            graph.only_consumer(back.output[0], "Reshape") if back is not None and _perm(back) == [0, 2, 1, 3] else None
        )
        if v_rs is None or out is None:
            continue
        (q_in, heads, dim, q_scale), (k_in, k_heads, k_dim, k_scale) = q, k
        if (k_heads, k_dim) != (heads, dim):
            continue
        scale = q_scale * k_scale
        if not math.isclose(scale, 1 / math.sqrt(dim), rel_tol=1e-3):
            log.debug("attention at %s has scale %g, not 1/sqrt(%d): fused with its own scale", sm.name, scale, dim)
        mha = helper.make_node(
            "MultiHeadAttention",
            [q_in, k_in, v_rs.input[0]],
            [out.output[0]],
            name=f"{sm.name}/MultiHeadAttention",
            domain=MS_DOMAIN,
            num_heads=heads,
            scale=scale,
        )
        fused.append(([scores, sm, ctx, back, out], mha))
    if not fused:
        return 0
    nodes = list(model.graph.node)
    replaced = {id(n) for group, _ in fused for n in group}
    first_of = {id(group[-1]): mha for group, mha in fused}  # the MHA takes the place of the out Reshape
    del model.graph.node[:]
    for n in nodes:
        if id(n) in first_of:
            model.graph.node.append(first_of[id(n)])
        elif id(n) not in replaced:
            model.graph.node.append(n)
    _drop_dead_nodes(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    log.info("fused %d attention blocks into MultiHeadAttention", len(fused))
    return len(fused)


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes (and initializers) nothing reads any more."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


__all__ = ["MS_DOMAIN", "fuse_attention"]
