"""Parity with the official LanguageBind implementation.

References in tests/fixtures/official were produced by the official code (tools/make_official_fixtures.py):
tiny random checkpoints of every official model class saved with its save_pretrained, and the official
processors' and models' outputs on the official sample media.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import OFFICIAL, SAMPLES, needs_samples

torch = pytest.importorskip("torch")

from lbedge.checkpoint import from_pretrained, load_model  # noqa: E402
from lbedge.config import ModelConfig  # noqa: E402
from lbedge.preprocess import Preprocessor  # noqa: E402
from lbedge.preprocess.audio import chunk_starts, read_audio_file, resample  # noqa: E402
from lbedge.preprocess.resize import resize  # noqa: E402
from lbedge.tokenizer import ClipTokenizer  # noqa: E402

CHECKPOINTS = ["image", "thermal", "depth", "audio", "audio_ft", "video", "video_ft", "video_v15"]


def stored_pixels(ref) -> np.ndarray:
    file, key = str(ref["pixel_source"]).split(":")
    return np.load(OFFICIAL / file)[key].astype(np.float32)


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_embeddings_match_official(name):
    ref = np.load(OFFICIAL / name / "reference.npz")
    model = load_model(OFFICIAL / name)
    with torch.no_grad():
        e = model.encode_vision(torch.from_numpy(stored_pixels(ref)), normalize=False).numpy()
        t = model.encode_text(torch.from_numpy(ref["input_ids"]), normalize=False).numpy()
    assert cos(e, ref["image_embeds_raw"]).min() >= 0.99999
    assert cos(t, ref["text_embeds_raw"]).min() >= 0.99999
    np.testing.assert_allclose(e, ref["image_embeds_raw"], atol=1e-5, rtol=1e-4)
    assert float(model.logit_scale.detach()) == pytest.approx(float(ref["logit_scale"]), abs=1e-6)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_checkpoint_kind_is_recognised(name):
    cfg = ModelConfig.from_json(OFFICIAL / name)
    assert cfg.modality == name.split("_")[0]
    model = load_model(OFFICIAL / name)
    assert (model.lora_pairs_merged > 0) == (name in ("image", "thermal", "depth", "audio", "video"))
    if name == "video_v15":
        assert cfg.vision.patch_3d and model.vision_model.embeddings.class_embedding.shape == (8, 32)
    if name.startswith("audio"):
        assert cfg.vision.grid == (8, 74) and cfg.preprocess.input_shape == (3, 112, 1036)


def test_tokenizer_matches_official_on_tricky_text():
    cases = json.loads((OFFICIAL / "tokenizer_cases.json").read_text())["cases"]
    tok = ClipTokenizer.from_dir(OFFICIAL / "tokenizer")
    ids, mask = tok([c["text"] for c in cases])
    assert ids.dtype == np.int64 and ids.shape == (len(cases), 77)
    for i, c in enumerate(cases):
        assert ids[i].tolist() == c["input_ids"], c["text"]
        assert mask[i].tolist() == c["attention_mask"], c["text"]


@needs_samples
def test_end_to_end_image_checkpoint_from_files():
    """from_pretrained + raw files through lbedge's own preprocessing and tokenizer match the official outputs."""
    ref = np.load(OFFICIAL / "image" / "reference.npz")
    enc = from_pretrained(OFFICIAL / "image")
    e = enc.embed([SAMPLES / "image" / "0.jpg", SAMPLES / "image" / "1.jpg"])
    assert cos(e, ref["image_embeds"]).min() >= 0.99999
    ids, mask = enc.tokenize(["a photo of a parakeet", "a lion climbing a tree", "an empty room"])
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    t = enc.embed_text(["a photo of a parakeet", "a lion climbing a tree", "an empty room"])
    assert cos(t, ref["text_embeds"]).min() >= 0.99999
    assert enc.logit_scale == pytest.approx(np.exp(float(ref["logit_scale"])), rel=1e-6)
    np.testing.assert_allclose(enc.logit_scale * e @ t.T, ref["logits_per_image"], atol=1e-4)


@needs_samples
@pytest.mark.parametrize(
    "name,file",
    [("thermal", "thermal/0.jpg"), ("depth", "depth/0.png"), ("audio", "audio/0.wav"), ("video_v15", "video/0.mp4")],
)
def test_end_to_end_files_other_modalities(name, file):
    ref = np.load(OFFICIAL / name / "reference.npz")
    model = load_model(OFFICIAL / name)
    x = Preprocessor(model.config.preprocess)(SAMPLES / file)
    with torch.no_grad():
        e = model.encode_vision(torch.from_numpy(x)).numpy()
    assert cos(e, ref["image_embeds"]).min() >= 0.99999


# --- preprocessing ------------------------------------------------------------------------------------


# Largest absolute difference from the official processor on the official samples, as measured
# (documented in docs/preprocessing.md); bounds are the float32 (or float16-storage) precision.
@needs_samples
@pytest.mark.parametrize("modality,bound", [("image", 1e-5), ("thermal", 1e-5), ("depth", 1e-5), ("audio", 2e-4)])
def test_preprocessing_matches_official(modality, bound):
    z = np.load(OFFICIAL / "preprocess" / f"{modality}.npz")
    cfg = ModelConfig.from_json(OFFICIAL / modality).preprocess
    out = Preprocessor(cfg)([SAMPLES / f for f in z["files"]])
    assert out.shape == z["pixel_values"].shape and out.dtype == np.float32
    assert np.abs(out - z["pixel_values"]).max() < bound


@needs_samples
def test_video_preprocessing_matches_official():
    z = np.load(OFFICIAL / "preprocess" / "video.npz")  # stored as float16: 0.5 ulp at |x| < 2 is 4.9e-4
    cfg = ModelConfig.from_json(OFFICIAL / "video").preprocess
    out = Preprocessor(cfg)([SAMPLES / f for f in z["files"]])
    ref = z["pixel_values"].astype(np.float32)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-3
    assert np.abs(out - ref).mean() < 2e-4


def test_long_audio_resampling_and_seeded_chunks_match_official():
    z = np.load(OFFICIAL / "preprocess" / "audio_long.npz")
    wav = OFFICIAL / "preprocess" / "audio_long.wav"
    clip = read_audio_file(wav)
    assert clip.sample_rate == int(z["orig_sr"]) and clip.samples.shape[1] == int(z["orig_len"])
    res = resample(clip.samples, clip.sample_rate, 16000)
    assert res.shape[1] == int(z["resampled_len"])
    np.testing.assert_allclose(res[0, :4000], z["resampled_head"], atol=1e-6)
    assert chunk_starts(int(z["mel_frames"]), 1036, seed=int(z["seed"])) == tuple(z["chunk_starts"].tolist())
    cfg = ModelConfig.from_json(OFFICIAL / "audio").preprocess
    out = Preprocessor(cfg)(wav, chunk_seed=int(z["seed"]))
    assert np.abs(out - z["pixel_values"].astype(np.float32)).max() < 2e-3  # float16 storage


def test_long_audio_default_chunks_are_deterministic_and_span_the_clip():
    wav = OFFICIAL / "preprocess" / "audio_long.wav"
    cfg = ModelConfig.from_json(OFFICIAL / "audio").preprocess
    a, b = Preprocessor(cfg)(wav), Preprocessor(cfg)(wav)
    np.testing.assert_array_equal(a, b)
    starts = chunk_starts(1198, 1036)
    assert starts[0] == 0 and starts[2] == 1198 - 1036 and starts[0] < starts[1] < starts[2]


@pytest.mark.parametrize("key", ["bicubic_23x31", "bicubic_61x89", "bilinear_23x31", "bilinear_61x89"])
def test_resize_kernels_match_torch_interpolate(key):
    z = np.load(OFFICIAL / "preprocess" / "torch_resize.npz")
    mode, size = key.split("_")
    h, w = map(int, size.split("x"))
    out = resize(z["input"].transpose(1, 2, 0), h, w, mode).transpose(2, 0, 1)
    np.testing.assert_allclose(out, z[key], atol=2e-6)


# --- shapes of full-size official models -------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["vit_h_shapes.json", "vit_l_lora_shapes.json"])
def test_full_size_architectures_have_official_parameter_shapes(fixture):
    """ViT-H/14 (Video Huge V1.5) and ViT-L/14 LoRA: every official key maps onto lbedge's model, same shapes."""
    from lbedge.models.towers import LanguageBindModel
    from lbedge.models.weights import IGNORED_KEYS

    d = json.loads((OFFICIAL / fixture).read_text())
    cfg = ModelConfig.from_dict(d["config"])
    with torch.device("meta"):
        model = LanguageBindModel(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs: dict[str, list[int]] = {}
    for key, shape in d["shapes"].items():
        if IGNORED_KEYS.search(key) or ".lora_" in key:
            continue
        theirs[key.replace(".base_model.model.", ".")] = shape
    assert ours == theirs
