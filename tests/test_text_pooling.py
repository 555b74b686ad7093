"""The CLIP text tower pools its end token by an exact integer comparison, so a reduced-precision engine that
ignores the FP32 casts around it (a weakly typed TensorRT build) still pools the right token. Before, the graph
took an ArgMax over the ids as floats: in FP16, ids 49406 and 49407 both round to 49408, so the start token was
pooled and every text embedding was wrong."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import OFFICIAL

torch = pytest.importorskip("torch")


def test_pooled_position_equals_the_official_argmax_for_tokenized_prompts():
    from lbedge.checkpoint import load_model
    from lbedge.models.towers import eos_position, pooled_token_id
    from lbedge.tokenizer import load_tokenizer

    model = load_model(OFFICIAL / "image")
    tok = load_tokenizer(OFFICIAL / "image", model.config.text)
    prompts = ["a", "a photo of a parakeet.", "x " * 200, "", "a thermal photo of a person walking a dog."]
    ids, _ = tok(prompts)
    got = eos_position(torch.from_numpy(ids), pooled_token_id(model.config.text)).numpy()
    np.testing.assert_array_equal(got, ids.argmax(-1))  # what the official code pools
    assert np.float16(49406) == np.float16(49407)  # why a float ArgMax over ids cannot work in FP16


def test_text_graph_pools_the_right_token_even_when_everything_runs_in_fp16(tmp_path):
    from lbedge.checkpoint import load_model
    from lbedge.quantize.export import export_tower
    from lbedge.quantize.fp16 import to_fp16
    from lbedge.tokenizer import load_tokenizer

    model = load_model(OFFICIAL / "image")
    export_tower(model, "text", tmp_path / "text.onnx")
    graph = onnx.load(str(tmp_path / "text.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "ArgMax" not in ops and {"Equal", "Where", "ReduceMin"} <= ops
    # a weakly typed build that honours no FP32 island: every float op in FP16, the positions included
    onnx.save(to_fp16(graph, keep_fp32=frozenset({"Cast"})), str(tmp_path / "all_fp16.onnx"))
    tok = load_tokenizer(OFFICIAL / "image", model.config.text)
    ids, _ = tok(["a photo of a parakeet.", "a lion climbing a tree", "an empty street at night", "a dog"])

    def run(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = ids.astype(np.int32 if "int32" in sess.get_inputs()[0].type else np.int64)
        out = sess.run(None, {sess.get_inputs()[0].name: feed})[0].astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    fp32, fp16 = run(tmp_path / "text.onnx"), run(tmp_path / "all_fp16.onnx")
    with torch.no_grad():
        start = model.text_projection(
            model.text_model.final_layer_norm(
                model.text_model.encoder(
                    model.text_model.embeddings.token_embedding(torch.from_numpy(ids))
                    + model.text_model.embeddings.position_embedding.weight[: ids.shape[1]],
                    model.text_model.causal_mask[: ids.shape[1], : ids.shape[1]],
                )
            )[:, 0]
        ).numpy()
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    assert (fp32 * fp16).sum(1).min() > 0.99  # the end token, as in FP32
    assert (fp16 * start).sum(1).max() < (fp16 * fp32).sum(1).min()  # not the start token
