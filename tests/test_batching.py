"""Batches are split (and padded) to what each backend accepts, in one place every backend goes through: a text
label set larger than an engine's max batch, a static-batch engine (DLA) given 1..9 inputs. TensorRT itself is
replaced by ONNX Runtime sessions given the same limits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import OFFICIAL, FuncBackend
from lbedge import ZeroShotClassifier, load_bundle
from lbedge.backends import batch_limits, run_batched
from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend
from lbedge.errors import InputError

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    from lbedge.quantize.bundle_build import export_bundle

    out = tmp_path_factory.mktemp("batching") / "image"
    export_bundle(OFFICIAL / "image", out)
    return out


def static_copy(src, dst, batch: int):
    """The graph ``src`` with its batch dimension fixed at ``batch`` (what a DLA engine is)."""
    model = onnx.load(str(src))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].ClearField("dim_param")
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, str(dst))
    return dst


def test_text_label_sets_larger_than_the_engine_batch(fp32_bundle, tmp_path):
    """Two labels x eight image templates = 16 prompts through a text graph limited to 8, as a TensorRT engine
    built with the default --max-batch 8 is: split, not refused, and equal to the unlimited result."""
    enc = load_bundle(fp32_bundle, precision="fp32", text_precision="fp32")
    free = ZeroShotClassifier(enc, ["parakeet", "lion"], use_cache=False).text_embeds
    limited = OnnxRuntimeBackend(fp32_bundle / "text.fp32.onnx", max_batch=8)
    calls = []
    run = limited.run
    limited.run = lambda inputs: (calls.append(len(next(iter(inputs.values())))), run(inputs))[1]
    enc._text = limited
    clf = ZeroShotClassifier(enc, ["parakeet", "lion"], use_cache=False)
    assert clf.text_embeds.shape == (2, 8) and len(clf.templates) == 8
    assert max(calls) <= 8 and sum(calls) == 16
    np.testing.assert_allclose(clf.text_embeds, free, atol=1e-6)
    with pytest.raises(InputError, match="at most 8"):
        limited.run({"input_ids": enc.tokenize(["a"] * 9)[0]})  # the backend itself still refuses


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9])
def test_static_batch_graph_is_padded(fp32_bundle, tmp_path, n):
    """A static engine (DLA: exactly max_batch rows) gets 1..9 frames: padded with zero rows, outputs dropped."""
    enc = load_bundle(fp32_bundle, precision="fp32")
    ref = enc.embed(np.random.default_rng(n).normal(size=(n, 3, 224, 224)).astype(np.float32))
    static = OnnxRuntimeBackend(static_copy(fp32_bundle / "vision.fp32.onnx", tmp_path / "static.onnx", 4))
    assert batch_limits(static) == (4, True)
    seen = []
    run = static.run
    static.run = lambda inputs: (seen.append(inputs["pixel_values"].shape[0]), run(inputs))[1]
    enc.vision = static
    got = enc.embed(np.random.default_rng(n).normal(size=(n, 3, 224, 224)).astype(np.float32))
    assert got.shape == (n, 8) and set(seen) == {4} and len(seen) == -(-n // 4)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_run_batched_rules():
    calls = []

    def fn(x):
        calls.append(len(x))
        return x[:, :2] * 2

    be = FuncBackend(fn, "x")
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.testing.assert_array_equal(run_batched(be, x, preferred=4), x[:, :2] * 2)
    assert calls == [4, 4, 2]
    be.max_batch, calls[:] = 3, []
    run_batched(be, x, preferred=8)
    assert calls == [3, 3, 3, 1]
    be.static_batch, calls[:] = True, []
    np.testing.assert_array_equal(run_batched(be, x), x[:, :2] * 2)
    assert calls == [3, 3, 3, 3]
    be.max_batch = 0
    with pytest.raises(InputError, match="max_batch"):
        run_batched(be, x)
    with pytest.raises(InputError, match="empty batch"):
        run_batched(FuncBackend(fn, "x"), x[:0])
    short = FuncBackend(lambda x: x[:1], "x")
    with pytest.raises(InputError, match="returned 1 rows for a batch of 2"):
        run_batched(short, x[:2])
