"""Fused attention for ONNX Runtime CPUs: every exported vision self-attention (spatial, and the video towers'
temporal one) becomes one com.microsoft.MultiHeadAttention with the same outputs; masked attention (the causal
text tower) is left alone; the cpu INT8 target uses it when asked (off by default), TensorRT never."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

from conftest import OFFICIAL

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from lbedge.checkpoint import load_model  # noqa: E402
from lbedge.quantize.attention_fusion import MS_DOMAIN, fuse_attention  # noqa: E402
from lbedge.quantize.export import dummy_input, export_tower  # noqa: E402
from lbedge.quantize.int8 import Int8Config, QuantizationError, quantize_int8  # noqa: E402


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize(("name", "per_layer"), [("image", 1), ("audio", 1), ("depth", 1), ("video", 2)])
def test_vision_attention_is_fused_with_the_same_outputs(tmp_path, name, per_layer):
    model = load_model(OFFICIAL / name)
    export_tower(model, "vision", tmp_path / "v.onnx")
    graph = onnx.load(str(tmp_path / "v.onnx"))
    before = _ops(graph)
    x = np.concatenate([dummy_input(model, "vision")] * 2) + np.float32(0.1)
    want = _run(str(tmp_path / "v.onnx"), x)
    layers = model.config.vision.num_hidden_layers
    assert fuse_attention(graph) == layers * per_layer
    after = _ops(graph)
    assert after["MultiHeadAttention"] == layers * per_layer and after["Softmax"] == 0
    assert after["Transpose"] < before["Transpose"] and any(o.domain == MS_DOMAIN for o in graph.opset_import)
    got = _run(graph, x)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_masked_text_attention_is_left_alone(tmp_path):
    model = load_model(OFFICIAL / "image")
    export_tower(model, "text", tmp_path / "t.onnx")
    graph = onnx.load(str(tmp_path / "t.onnx"))
    before = graph.SerializeToString()
    assert fuse_attention(graph) == 0 and graph.SerializeToString() == before


def test_only_the_cpu_int8_target_fuses_and_only_when_asked(tmp_path):
    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    x = dummy_input(model, "vision", batch=4) + np.linspace(0, 1, 4, dtype=np.float32)[:, None, None, None]
    ref = _run(str(tmp_path / "v.onnx"), x)
    rep = quantize_int8(
        tmp_path / "v.onnx",
        tmp_path / "c.onnx",
        x[:0],
        holdout=x,
        reference=ref,
        config=Int8Config(target="cpu", fuse_attention=True),
    )
    layers = model.config.vision.num_hidden_layers
    assert rep.fused_attention == layers and rep.to_dict()["fused_attention"] == layers
    assert _ops(onnx.load(str(tmp_path / "c.onnx")))["MultiHeadAttention"] == layers
    assert rep.agreement.min_cosine > 0.99
    plain = quantize_int8(tmp_path / "v.onnx", tmp_path / "p.onnx", x[:0], config=Int8Config(target="cpu"))
    assert plain.fused_attention == 0 and _ops(onnx.load(str(tmp_path / "p.onnx")))["MultiHeadAttention"] == 0
    trt = quantize_int8(tmp_path / "v.onnx", tmp_path / "t.onnx", x, config=Int8Config(target="tensorrt"))
    assert trt.fused_attention == 0
    assert not [n for n in onnx.load(str(tmp_path / "t.onnx")).graph.node if n.domain == MS_DOMAIN]
    with pytest.raises(QuantizationError, match="not with TensorRT"):
        quantize_int8(tmp_path / "v.onnx", tmp_path / "f.onnx", x, config=Int8Config(fuse_attention=True))
