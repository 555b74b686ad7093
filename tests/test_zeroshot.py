"""Zero-shot classification: ranking, template ensembles, abstaining, the prompt cache and its sharing rule."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import OFFICIAL, SAMPLES, FuncBackend, needs_samples
from lbedge import (
    ClipTokenizer,
    Encoder,
    InputError,
    Prediction,
    PreprocessConfig,
    PromptCache,
    UsageError,
    ZeroShotClassifier,
)
from lbedge.zeroshot import cross_modal_similarity

TOK = ClipTokenizer.from_dir(OFFICIAL / "tokenizer")
WORDS = {w: TOK.encode(w)[0] for w in ("cat", "dog", "car", "photo", "sketch")}
BASIS = {w: np.eye(8, dtype=np.float32)[i] for i, w in enumerate(WORDS)}


def fake_text(ids: np.ndarray) -> np.ndarray:
    """Sum of basis vectors of the known words present in each row (prompt-dependent, deterministic)."""
    out = np.zeros((len(ids), 8), np.float32)
    for r, row in enumerate(ids):
        for w, tid in WORDS.items():
            out[r] += BASIS[w] * float((row == tid).sum())
        out[r, 7] += 0.01
    return out


def make_encoder(fingerprint="fp-A", text_fn=fake_text, modality="image"):
    """An Encoder whose vision tower maps a preprocessed input to basis[k] where k = x.flat[0] (clipped to 0..4)."""
    cfg = PreprocessConfig(modality)
    words = list(WORDS)

    def pick(v: np.ndarray) -> np.ndarray:
        return BASIS[words[int(np.clip(v.flat[0], 0, len(words) - 1))]] + 0.05

    vision = FuncBackend(lambda x: np.stack([pick(v) for v in x]), "pixel_values")
    text = FuncBackend(text_fn, "input_ids")
    return Encoder(
        modality=modality,
        preprocess_config=cfg,
        vision=vision,
        text=text,
        tokenizer=TOK,
        logit_scale=100.0,
        embed_dim=8,
        name="fake",
        text_fingerprint=fingerprint,
    )


def images(*classes: int) -> np.ndarray:
    x = np.zeros((len(classes), 3, 224, 224), np.float32)
    for i, k in enumerate(classes):
        x[i, 0, 0, 0] = k
    return x


def test_ranks_labels_by_similarity(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat", "dog", "car"], templates=["{}"], cache=tmp_path)
    preds = clf(images(0, 1, 2))
    assert [p.label for p in preds] == ["cat", "dog", "car"]
    assert clf.top_k == 3
    for p in preds:
        assert p.scores == sorted(p.scores, reverse=True)
        assert sum(p.scores) == pytest.approx(1.0, abs=1e-5)


def test_probabilities_are_softmax_of_scaled_cosine(tmp_path):
    enc = make_encoder()
    clf = ZeroShotClassifier(enc, ["cat", "dog", "car"], templates=["a photo of a {}."], cache=tmp_path)
    x = images(1)
    e = enc.embed(x)
    t = enc.embed_text(["a photo of a cat.", "a photo of a dog.", "a photo of a car."])
    logits = 100.0 * e @ t.T
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    p = clf(x[0])  # a single sample gives a single Prediction
    assert p.label == "dog"
    np.testing.assert_allclose(sorted(expected[0], reverse=True), p.scores, rtol=1e-5)


def test_template_ensemble_is_the_normalised_mean(tmp_path):
    enc = make_encoder()
    tpl = ["a photo of a {}.", "a sketch of a {}."]
    clf = ZeroShotClassifier(enc, ["cat", "dog"], templates=tpl, cache=tmp_path)
    m = enc.embed_text(["a photo of a cat.", "a sketch of a cat."]).mean(0)
    np.testing.assert_allclose(clf.text_embeds[0], m / np.linalg.norm(m), atol=1e-6)


def test_default_templates_follow_the_modality(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat"], cache=tmp_path)
    assert "a photo of a {}." in clf.templates


def test_predict_is_one_and_predict_batch_is_a_list(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat", "dog", "car"], templates=["{}"], cache=tmp_path)
    x = images(0, 1, 2)
    batch = clf.predict_batch(x)
    assert isinstance(batch, list) and [p.label for p in batch] == ["cat", "dog", "car"]
    assert [p.label for p in clf.predict_batch([x[0], x[2]])] == ["cat", "car"]  # a list of preprocessed samples
    assert [p.label for p in clf.predict_batch(x[1:2])] == ["dog"]  # a batch of one is still a list
    one = clf.predict(x[1])
    assert isinstance(one, Prediction) and one.label == "dog"
    assert clf.predict(x[1:2]).label == "dog"  # a batch axis of one (preprocess_frame's [1, ...]) is one input
    frame = np.zeros((32, 48, 3), np.uint8)
    assert isinstance(clf.predict(frame), Prediction)
    assert len(clf.predict_batch([frame, frame])) == 2 and len(clf.predict_batch(np.stack([frame] * 3))) == 3
    assert clf.classify(x[0])[0].label == "cat"  # kept: always a list


def test_predict_refuses_many_and_predict_batch_refuses_one(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat", "dog"], templates=["{}"], cache=tmp_path)
    x = images(0, 1)
    with pytest.raises(UsageError, match=r"predict takes one input, got a batch of 2 .*call predict_batch"):
        clf.predict(x)
    with pytest.raises(UsageError, match="got a list of 1: call predict_batch"):
        clf.predict([x[0]])  # a list in, a list out
    for one in (x[0], np.zeros((32, 48, 3), np.uint8), "a.jpg"):
        with pytest.raises(UsageError, match=r"got one input .*call predict\(x\), or predict_batch\(\[x\]\)"):
            clf.predict_batch(one)
    with pytest.raises(UsageError, match="empty list"):
        clf.predict_batch([])


def test_call_returns_a_list_for_a_list_and_one_prediction_for_one_input(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat", "dog", "car"], templates=["{}"], cache=tmp_path)
    x = images(0, 1, 2)
    assert isinstance(clf(x), list) and isinstance(clf(list(x)), list) and isinstance(clf(tuple(x)), list)
    assert isinstance(clf(x[:1]), list)  # a batched array stays a batch: backward compatible
    assert isinstance(clf(x[0]), Prediction)
    frame = np.zeros((32, 48, 3), np.uint8)
    assert isinstance(clf(frame), Prediction) and isinstance(clf([frame]), list)
    assert isinstance(clf(np.stack([frame, frame])), list)


def test_call_refuses_what_cannot_tell_one_from_many(tmp_path):
    audio = ZeroShotClassifier(make_encoder(modality="audio"), ["cat", "dog"], templates=["{}"], cache=tmp_path)
    clips = np.zeros((2, 16000), np.float32)
    with pytest.raises(UsageError, match=r"one \[channels, samples\] clip or a batch.*predict\(x\)"):
        audio(clips, sample_rate=16000)
    assert isinstance(audio.predict(clips, sample_rate=16000), Prediction)  # predict reads it as one stereo clip
    assert len(audio.predict_batch(list(clips), sample_rate=16000)) == 2
    with pytest.raises(UsageError, match="an audio array .* is one clip"):
        audio.predict_batch(clips, sample_rate=16000)
    assert isinstance(audio((clips[0], 16000)), Prediction)  # (samples, rate) is one clip
    with pytest.raises(UsageError, match=r"\(samples, rate\) is one clip"):
        audio.predict_batch((clips[0], 16000))
    assert isinstance(audio(clips[0], sample_rate=16000), Prediction)  # 1-D: one clip, no doubt

    video = ZeroShotClassifier(make_encoder(modality="video"), ["cat", "dog"], templates=["{}"], cache=tmp_path)
    frames = [np.zeros((32, 32, 3), np.uint8)] * 8
    with pytest.raises(UsageError, match="frames of one clip or several clips"):
        video(frames)
    assert isinstance(video.predict(frames), Prediction)
    assert len(video.predict_batch([frames, frames])) == 2
    with pytest.raises(UsageError, match=r"the frames of one clip: call predict\(frames\)"):
        video.predict_batch(frames)
    assert isinstance(video(np.stack(frames)), Prediction) and len(video(np.stack([np.stack(frames)] * 2))) == 2


def test_threshold_abstains(tmp_path):
    def flat(ids):  # every label equally similar: top probability 1/3
        return np.ones((len(ids), 8), np.float32)

    clf = ZeroShotClassifier(
        make_encoder(text_fn=flat), ["cat", "dog", "car"], templates=["{}"], threshold=0.5, cache=tmp_path
    )
    p = clf(images(0))[0]
    assert p.abstained and p.label is None and p.score == pytest.approx(1 / 3, abs=1e-5)


def test_top_k_limits_output(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat", "dog", "car"], templates=["{}"], top_k=2, cache=tmp_path)
    assert len(clf(images(2))[0].labels) == 2


@pytest.mark.parametrize(
    "labels,templates,match",
    [
        ([], None, "non-empty"),
        (["cat", ""], None, "non-empty"),
        (["cat", "cat"], None, "duplicate"),
        (["cat"], ["no placeholder"], "must contain"),
    ],
)
def test_bad_labels_and_templates(tmp_path, labels, templates, match):
    with pytest.raises(InputError, match=match):
        ZeroShotClassifier(make_encoder(), labels, templates=templates, cache=tmp_path)


def test_prompt_cache_hits_on_disk(tmp_path):
    enc = make_encoder()
    ZeroShotClassifier(enc, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    calls = enc.text.calls
    assert calls == 1 and len(list(tmp_path.glob("*.npy"))) == 1
    enc2 = make_encoder()  # a new process would see the same files
    clf = ZeroShotClassifier(enc2, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    assert enc2.text.calls == 0
    assert clf(images(1))[0].label == "dog"


def test_prompt_cache_is_keyed_by_text_tower(tmp_path):
    """A different text tower must not reuse cached prompts, even with identical prompts."""
    ZeroShotClassifier(make_encoder("fp-A"), ["cat", "dog"], templates=["{}"], cache=tmp_path)
    other = make_encoder("fp-B")
    ZeroShotClassifier(other, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    assert other.text.calls == 1 and len(list(tmp_path.glob("*.npy"))) == 2


def test_damaged_cache_entry_is_recomputed(tmp_path):
    enc = make_encoder()
    ZeroShotClassifier(enc, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    (entry,) = tmp_path.glob("*.npy")
    entry.write_bytes(b"garbage")
    enc2 = make_encoder()
    clf = ZeroShotClassifier(enc2, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    assert enc2.text.calls == 1 and clf(images(0))[0].label == "cat"
    assert PromptCache(tmp_path).get("fp-A", ["cat", "dog"]) is not None


@pytest.mark.parametrize("damage", ["zeros", "int", "wrong_dim", "nan", "wrong_rows", "not_unit"])
def test_unusable_cache_entries_are_recomputed_not_used(tmp_path, damage):
    """A cache entry of zeros gave NaN scores, an integer entry was used as is: every damaged entry is recomputed."""
    enc = make_encoder()
    good = ZeroShotClassifier(enc, ["cat", "dog"], templates=["{}"], cache=tmp_path).text_embeds
    (entry,) = tmp_path.glob("*.npy")
    bad = {
        "zeros": np.zeros((2, 8), np.float32),
        "int": np.ones((2, 8), np.int64),
        "wrong_dim": np.ones((2, 5), np.float32) / np.sqrt(5),
        "nan": np.full((2, 8), np.nan, np.float32),
        "wrong_rows": np.eye(3, 8, dtype=np.float32),
        "not_unit": np.full((2, 8), 3.0, np.float32),
    }[damage]
    np.save(entry, bad)
    enc2 = make_encoder()
    clf = ZeroShotClassifier(enc2, ["cat", "dog"], templates=["{}"], cache=tmp_path)
    assert enc2.text.calls == 1  # recomputed...
    np.testing.assert_allclose(clf.text_embeds, good, atol=1e-6)  # ...to the right values
    assert np.isfinite(clf(images(0))[0].scores).all()
    assert np.load(entry).dtype == np.float32 and np.load(entry).shape == (2, 8)  # and overwritten


@pytest.mark.parametrize(
    "labels,match",
    [
        ("cat", "one str 'cat'"),
        (b"cat", "one bytes"),
        (["cat", None], "item 1 is NoneType"),
        (["cat", b"dog"], "item 1 is bytes"),
        (["cat", 3], "item 1 is int"),
        (None, "list of strings"),
        (["cat", "d\udcffg"], "not valid Unicode"),
        (["x" * 5000, "y"], "5000 characters"),
    ],
)
def test_labels_must_be_a_list_of_text(tmp_path, labels, match):
    """A bare string became c, a, t; bytes and None became strings: each is one clear error now."""
    with pytest.raises(InputError, match=match):
        ZeroShotClassifier(make_encoder(), labels, templates=["{}"], cache=tmp_path)


def test_templates_with_other_braces_and_label_braces(tmp_path):
    clf = ZeroShotClassifier(make_encoder(), ["cat {x}", "dog"], templates=["a {} in {braces}"], cache=tmp_path)
    assert clf.labels == ["cat {x}", "dog"]
    with pytest.raises(InputError, match="list of strings"):
        ZeroShotClassifier(make_encoder(), ["cat"], templates="a photo of a {}", cache=tmp_path)


def test_many_labels_are_embedded_in_batches_with_progress(tmp_path):
    from lbedge.limits import set_limits

    seen = []
    labels = [f"thing {i}" for i in range(300)]
    enc = make_encoder()
    cache = PromptCache(tmp_path, chunk=128)
    clf = ZeroShotClassifier(
        enc, labels, templates=["{}", "a {}"], cache=cache, progress=lambda done, total: seen.append((done, total))
    )
    assert clf.text_embeds.shape == (300, 8)
    assert seen[-1] == (600, 600) and all(t == 600 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 5  # steady, not one jump
    assert enc.text.calls >= 600 // 32 and len(list(tmp_path.glob("*.npy"))) == 5  # chunks of 128 prompts cached
    enc2 = make_encoder()
    ZeroShotClassifier(enc2, labels, templates=["{}", "a {}"], cache=cache)
    assert enc2.text.calls == 0  # every chunk found again
    old = set_limits(max_labels=100)
    try:
        with pytest.raises(InputError, match="max_labels"):
            ZeroShotClassifier(make_encoder(), labels, templates=["{}"], cache=tmp_path)
    finally:
        set_limits(max_labels=old.max_labels)


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path))
    ZeroShotClassifier(make_encoder(), ["cat"], templates=["{}"], use_cache=False)
    assert not list(tmp_path.rglob("*.npy"))


def test_cross_modal_similarity_requires_the_same_text_tower():
    a, b = make_encoder("fp-A"), make_encoder("fp-A")
    s = cross_modal_similarity(a, images(0, 1), b, images(0, 1, 2))
    assert s.shape == (2, 3) and s[0, 0] > s[0, 1] and s[1, 1] > s[1, 2]
    with pytest.raises(InputError, match="different text towers"):
        cross_modal_similarity(a, images(0), make_encoder("fp-B"), images(0))


def test_nan_input_is_rejected():
    x = images(0)
    x[0, 1, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        make_encoder().embed(x)


@needs_samples
def test_real_checkpoint_classifier_end_to_end(tmp_path):
    pytest.importorskip("torch")
    import lbedge

    enc = lbedge.from_pretrained(OFFICIAL / "image")
    clf = lbedge.ZeroShotClassifier(enc, ["parakeet", "lion", "room"], cache=tmp_path)
    preds = clf([str(SAMPLES / "image" / "0.jpg"), str(SAMPLES / "image" / "1.jpg")])
    assert len(preds) == 2
    e = enc.embed([SAMPLES / "image" / "0.jpg", SAMPLES / "image" / "1.jpg"])
    assert [p.label for p in preds] == [clf.labels[i] for i in (e @ clf.text_embeds.T).argmax(1)]
    assert enc.text_fingerprint == lbedge.from_pretrained(OFFICIAL / "image").text_fingerprint


@pytest.mark.timeout(60)
def test_fuzzed_label_lists_are_accepted_or_refused_clearly(tmp_path):
    """Any list of any objects: a classifier, or one InputError; never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    items = st.one_of(
        st.text(max_size=30),
        st.binary(max_size=10),
        st.none(),
        st.integers(),
        st.floats(),
        st.lists(st.text(max_size=3), max_size=2),
    )
    enc = make_encoder()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(labels=st.one_of(st.lists(items, max_size=6), st.text(max_size=10), items))
    def check(labels):
        try:
            clf = ZeroShotClassifier(enc, labels, templates=["{}"], use_cache=False)
        except InputError:
            return
        assert clf.labels and all(isinstance(label, str) and label == label.strip() and label for label in clf.labels)
        assert np.isfinite(clf.text_embeds).all()

    check()
