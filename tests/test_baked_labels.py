"""Label-baked bundles: baking, classifying with no text graph or tokenizer, dropping the text tower, the errors
that name the fix, and the baked file held to the bundle's rules (sha256, confinement, checked before reading)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import OFFICIAL

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import lbedge.backends.onnxruntime_backend as ort_backend  # noqa: E402
import lbedge.bundle as bundle_mod  # noqa: E402
from lbedge import CheckpointError, Encoder, PreprocessConfig, UsageError, ZeroShotClassifier  # noqa: E402
from lbedge.bake import bake_bundle  # noqa: E402
from lbedge.baked import BAKED_FILE, NoTextTower  # noqa: E402
from lbedge.bundle import Manifest, load_bundle  # noqa: E402
from lbedge.quantize.bundle_build import export_bundle, share_text  # noqa: E402

LABELS = ["parakeet", "lion", "car"]
X = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """An FP32 bundle of the tiny official image checkpoint (vision and text towers, the CLIP tokenizer)."""
    out = tmp_path_factory.mktemp("baked") / "plain"
    export_bundle(OFFICIAL / "image", out)
    return out


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def watch(monkeypatch):
    """``watch()`` from then on records every ONNX Runtime session created (graph file names, the list it returns)
    and fails any tokenizer read."""

    def start() -> list[str]:
        sessions: list[str] = []
        init = ort_backend.OnnxRuntimeBackend.__init__

        def record(self, path, *a, **k):
            sessions.append(Path(path).name)
            init(self, path, *a, **k)

        def no_tokenizer(*a, **k):
            raise AssertionError("the tokenizer was read")

        monkeypatch.setattr(ort_backend.OnnxRuntimeBackend, "__init__", record)
        monkeypatch.setattr(bundle_mod, "load_tokenizer", no_tokenizer)
        return sessions

    return start


def reference(plain: Path, labels=LABELS, templates=None) -> np.ndarray:
    """The label embeddings a classifier computes with the FP32 text graph."""
    enc = load_bundle(plain, text_precision="fp32")
    return ZeroShotClassifier(enc, labels, templates=templates, use_cache=False).text_embeds


def test_baked_labels_classify_without_text_graph_or_tokenizer(plain, tmp_path, watch):
    b = copy(plain, tmp_path / "b")
    man = bake_bundle(b, LABELS)
    assert man.baked_labels["file"] == BAKED_FILE and "text" in man.towers  # the text tower is kept
    ref = reference(plain)
    want = [p.label for p in ZeroShotClassifier(load_bundle(plain), LABELS, use_cache=False)(X)]
    sessions = watch()
    enc = load_bundle(b)
    clf = ZeroShotClassifier(enc, LABELS, use_cache=False)
    preds = clf.predict_batch(X)
    assert clf.from_baked and sessions == ["vision.fp32.onnx"]  # no text session
    assert not enc.tokenizer.loaded and not isinstance(enc._text, ort_backend.OnnxRuntimeBackend)
    np.testing.assert_allclose(clf.text_embeds, ref, atol=1e-6)
    assert [p.label for p in preds] == want
    sub = ZeroShotClassifier(enc, ["car", "parakeet"], use_cache=False)  # a subset, in another order
    assert sub.from_baked and sessions == ["vision.fp32.onnx"]
    np.testing.assert_allclose(sub.text_embeds, ref[[2, 0]], atol=1e-6)


def test_other_labels_on_a_bundle_that_kept_its_text_tower_use_it(plain, tmp_path, monkeypatch):
    b = copy(plain, tmp_path / "b")
    bake_bundle(b, LABELS)
    enc = load_bundle(b)
    clf = ZeroShotClassifier(enc, ["dog", "lion"], use_cache=False)
    assert not clf.from_baked and enc.tokenizer.loaded
    assert not ZeroShotClassifier(enc, LABELS, templates=["{}"], use_cache=False).from_baked  # other templates
    assert not ZeroShotClassifier(enc, LABELS, use_cache=False, use_baked=False).from_baked


def test_drop_text_leaves_no_text_files_and_classifies_the_same(plain, tmp_path, watch):
    kept, dropped = copy(plain, tmp_path / "kept"), copy(plain, tmp_path / "dropped")
    bake_bundle(kept, LABELS)
    man = bake_bundle(dropped, LABELS, drop_text=True)
    assert "text" not in man.towers and man.tokenizer == {} and not man.text_bundle
    assert sorted(p.name for p in dropped.iterdir()) == sorted(["manifest.json", BAKED_FILE, "vision.fp32.onnx"])
    raw = json.loads((dropped / "manifest.json").read_text())
    assert raw["baked_labels"]["file"] == BAKED_FILE and "text" not in raw["towers"]
    sessions = watch()
    enc = load_bundle(dropped)  # verify=True: every listed file is there and matches
    assert not enc.has_text_tower and enc.tokenizer is None and enc.precision == {"vision": "fp32"}
    clf = ZeroShotClassifier(enc, LABELS)
    assert clf.from_baked and sessions == ["vision.fp32.onnx"]
    e = enc.embed(X)
    np.testing.assert_allclose(clf.logits(e), ZeroShotClassifier(load_bundle(kept), LABELS).logits(e))
    assert man.provenance["baked_labels"]["labels"] == len(LABELS) and man.text["fingerprint"]  # kept for checks


def test_other_labels_on_a_text_less_bundle_name_the_fix(plain, tmp_path):
    b = copy(plain, tmp_path / "b")
    bake_bundle(b, LABELS, drop_text=True)
    enc = load_bundle(b)
    with pytest.raises(NoTextTower, match=r"\['dog'\] are not baked.*lbedge bake -m .* --text") as info:
        ZeroShotClassifier(enc, ["lion", "dog"])
    assert isinstance(info.value, UsageError) and "parakeet" in str(info.value)  # what it can classify
    with pytest.raises(NoTextTower, match="templates .* differ from the baked ones"):
        ZeroShotClassifier(enc, LABELS, templates=["a sketch of a {}."])
    with pytest.raises(NoTextTower, match="text_from="):
        enc.embed_text(["a lion"])
    with pytest.raises(NoTextTower):
        enc.tokenize(["a lion"])
    with pytest.raises(NoTextTower):
        enc.text  # noqa: B018
    with pytest.raises(CheckpointError, match="no text tower"):
        load_bundle(b, baked_labels=False)


def test_a_text_less_bundle_is_rebaked_or_loaded_with_a_text_tower_from_elsewhere(plain, tmp_path, make_checkpoint):
    b = copy(plain, tmp_path / "b")
    bake_bundle(b, LABELS, drop_text=True)
    with pytest.raises(UsageError, match="--text PATH"):
        bake_bundle(b, ["dog", "cat"])
    bake_bundle(b, ["dog", "cat"], text_from=plain)
    clf = ZeroShotClassifier(load_bundle(b), ["cat", "dog"])
    assert clf.from_baked
    np.testing.assert_allclose(clf.text_embeds, reference(plain, ["cat", "dog"]), atol=1e-6)
    other = ZeroShotClassifier(load_bundle(b, text_from=plain), ["lion"], use_cache=False)
    np.testing.assert_allclose(other.text_embeds, reference(plain, ["lion"]), atol=1e-6)
    foreign = tmp_path / "foreign"
    export_bundle(make_checkpoint("image", seed=3), foreign)  # another text tower
    with pytest.raises(CheckpointError, match="another text tower"):
        load_bundle(b, text_from=foreign)
    with pytest.raises(CheckpointError, match="another text tower"):
        bake_bundle(b, ["dog"], text_from=foreign)


def test_dropping_a_shared_text_tower_keeps_the_text_bundle(plain, tmp_path):
    a, b = copy(plain, tmp_path / "a"), copy(plain, tmp_path / "b")
    share_text([a, b], tmp_path / "text")
    man = bake_bundle(a, LABELS, drop_text=True)
    assert man.text_bundle == "" and (tmp_path / "text" / "manifest.json").is_file()
    assert ZeroShotClassifier(load_bundle(a), LABELS).from_baked
    assert not ZeroShotClassifier(load_bundle(b), ["dog"], use_cache=False).from_baked  # b still shares it


def test_old_manifests_stay_valid_and_unchanged(plain, tmp_path):
    raw = json.loads((plain / "manifest.json").read_text())
    assert "baked_labels" not in raw
    b = copy(plain, tmp_path / "b")
    Manifest.read(b).write(b)
    assert json.loads((b / "manifest.json").read_text()) == raw
    assert load_bundle(b).baked is None


# --- the baked file is held to the bundle's rules ------------------------------------------------------------


def baked_copy(plain: Path, tmp_path: Path, drop_text: bool = True) -> Path:
    b = copy(plain, tmp_path / "b")
    bake_bundle(b, LABELS, drop_text=drop_text)
    return b


def edit_manifest(folder: Path, change) -> None:
    raw = json.loads((folder / "manifest.json").read_text())
    change(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))


def rewrite(folder: Path, arrays: dict, *, compress: bool = False) -> None:
    """Replace the baked file with ``arrays`` (and its sha256 in the manifest, so only the content is wrong)."""
    from lbedge.engine import sha256_file

    path = folder / BAKED_FILE
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True)
            z.writestr(f"{name}.npy", buf.getvalue())
    edit_manifest(folder, lambda raw: raw["baked_labels"].update(sha256=sha256_file(path)))


def good_arrays(folder: Path) -> dict:
    with np.load(folder / BAKED_FILE) as z:
        return {k: z[k] for k in z.files}


def test_a_changed_or_missing_baked_file_is_refused(plain, tmp_path):
    b = baked_copy(plain, tmp_path)
    data = (b / BAKED_FILE).read_bytes()
    (b / BAKED_FILE).write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="labels.npz is corrupt or was replaced"):
        load_bundle(b)
    with pytest.raises(CheckpointError, match="not a readable baked label set"):
        load_bundle(b, verify=False)
    (b / BAKED_FILE).unlink()
    with pytest.raises(CheckpointError, match="labels.npz is missing"):
        load_bundle(b)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update(embeddings=a["embeddings"][:, :4]), r"embeddings.npy has shape \(3, 4\), expected"),
        (lambda a: a.update(embeddings=a["embeddings"].astype(np.float64)), "expected float32"),
        (lambda a: a.update(embeddings=a["embeddings"] * 2), "not unit vectors"),
        (lambda a: a.update(labels=np.array([1, 2, 3])), "expected unicode text"),
        (lambda a: a.update(labels=np.array(["a", "b", None], dtype=object)), "expected unicode text"),
        (lambda a: a.update(labels=np.array(["a", "a", "b"])), "duplicate labels"),
        (lambda a: a.update(labels=np.array(["a", "b"])), r"embeddings of shape \(3, \d+\), expected \(2, \d+\)"),
        (lambda a: a.update(templates=np.array(["no slot"])), "must hold {}"),
        (lambda a: a.update(text_fingerprint=np.array("0" * 64)), "another text tower"),
        (lambda a: a.pop("templates"), "expected exactly"),
        (lambda a: a.update(extra=np.zeros(2)), "expected exactly"),
    ],
)
def test_a_damaged_baked_file_is_refused_with_what_is_wrong(plain, tmp_path, change, match):
    b = baked_copy(plain, tmp_path)
    arrays = good_arrays(b)
    change(arrays)
    rewrite(b, arrays)
    with pytest.raises(CheckpointError, match=match) as info:
        load_bundle(b)
    assert "lbedge bake" in str(info.value)


def test_a_compressed_or_oversized_baked_file_is_refused_before_reading(plain, tmp_path):
    b = baked_copy(plain, tmp_path)
    arrays = good_arrays(b)
    rewrite(b, arrays, compress=True)
    with pytest.raises(CheckpointError, match="is compressed"):
        load_bundle(b)
    rewrite(b, arrays)
    from dataclasses import asdict

    from lbedge.limits import set_limits

    previous = set_limits(max_labels=2)
    try:
        with pytest.raises(CheckpointError, match="at most 2 labels"):
            load_bundle(b)
    finally:
        set_limits(**asdict(previous))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda raw: raw["baked_labels"].update(file="../labels.npz"), r"baked_labels\.file: .*"),
        (lambda raw: raw["baked_labels"].update(file="/etc/passwd"), r"baked_labels\.file: .*absolute"),
        (lambda raw: raw["baked_labels"].update(sha256="abc"), r"baked_labels\.sha256: expected 64 hex"),
        (lambda raw: raw["baked_labels"].update(labels=["x"]), r"baked_labels\.labels: unknown field"),
        (lambda raw: raw["baked_labels"].pop("sha256"), r"baked_labels\.sha256: missing"),
        (lambda raw: raw.update(baked_labels=[]), r"baked_labels: expected an object"),
    ],
)
def test_the_manifest_entry_is_checked_and_confined(plain, tmp_path, change, match):
    b = baked_copy(plain, tmp_path)
    edit_manifest(b, change)
    with pytest.raises(CheckpointError, match=match):
        load_bundle(b, verify=False)


def test_a_symlinked_baked_file_leading_outside_is_refused(plain, tmp_path):
    b = baked_copy(plain, tmp_path)
    outside = tmp_path / "outside.npz"
    shutil.move(b / BAKED_FILE, outside)
    (b / BAKED_FILE).symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the bundle folder"):
        load_bundle(b, verify=False)


def test_a_bundle_without_text_tower_or_baked_labels_is_refused(plain, tmp_path):
    b = baked_copy(plain, tmp_path)
    edit_manifest(b, lambda raw: raw.pop("baked_labels"))
    with pytest.raises(CheckpointError, match="no text tower, names no shared text bundle and has no baked labels"):
        load_bundle(b)


def test_an_encoder_needs_a_text_tower_or_baked_labels():
    from conftest import FuncBackend

    vision = FuncBackend(lambda x: np.ones((len(x), 8)), "pixel_values")
    with pytest.raises(UsageError, match="needs its baked labels"):
        Encoder(
            modality="image",
            preprocess_config=PreprocessConfig("image"),
            vision=vision,
            text=None,
            tokenizer=None,
            logit_scale=10.0,
            embed_dim=8,
        )


# --- commands ------------------------------------------------------------------------------------------------


def test_cli_bake_and_info(plain, tmp_path):
    from click.testing import CliRunner

    from lbedge.cli.deploy import bake
    from lbedge.cli.info import describe_model

    b = copy(plain, tmp_path / "b")
    r = CliRunner().invoke(bake, ["-m", str(b), "--labels", "parakeet,lion", "--template", "a photo of a {}."])
    assert r.exit_code == 0, r.output
    assert "baked 2 label(s) x 1 template(s)" in r.output and "text tower: kept" in r.output
    r = CliRunner().invoke(bake, ["-m", str(b), "--labels", "parakeet,lion", "--drop-text", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["baked_labels"]["labels"] == ["parakeet", "lion"] and out["bytes_freed"] > 0
    assert out["baked_labels"]["text_tower"] == "none (dropped)"
    desc = describe_model(b)
    assert desc["text_graphs"] == [] and desc["baked_labels"]["labels"] == ["parakeet", "lion"]
    r = CliRunner().invoke(bake, ["-m", str(b), "--labels", "dog"])
    assert r.exit_code != 0 and "--text" in str(r.exception or r.output)


def test_cli_build_with_labels(tmp_path):
    from click.testing import CliRunner

    from lbedge.cli import main

    out = tmp_path / "b"
    args = ["build", "-m", str(OFFICIAL / "image"), "-o", str(out), "-p", "fp32", "--labels", "lion,car"]
    r = CliRunner().invoke(main, [*args, "--drop-text"])
    assert r.exit_code == 0, r.output
    enc = load_bundle(out)
    assert not enc.has_text_tower and enc.baked.labels == ("lion", "car")
    r = CliRunner().invoke(main, ["build", "-m", str(OFFICIAL / "image"), "-o", str(tmp_path / "c"), "--drop-text"])
    assert r.exit_code == 2 and "--labels" in r.output


def test_a_pipeline_runs_on_a_text_less_bundle_and_refuses_other_labels(plain, tmp_path):
    import cv2

    from lbedge.errors import LBEdgeError
    from lbedge.pipeline import Pipeline
    from lbedge.sensors import ImageFolderSource

    b = baked_copy(plain, tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((48, 64, 3), 80 * i, np.uint8))
    with Pipeline({"cam": ImageFolderSource(frames)}, load_bundle(b), LABELS, smoothing="none") as p:
        assert p.set_labels(["car", "lion"]).result(timeout=30) >= 1  # a subset of the baked labels
        with pytest.raises(LBEdgeError, match="not baked.*lbedge bake"):
            p.set_labels(["dog"]).result(timeout=30)
        results = list(p)
    assert results and all(r.update.raw_label in LABELS for r in results)


def test_a_text_less_bundle_is_still_quantized_with_top1_agreement_over_its_labels(plain, tmp_path):
    from lbedge.quantize.bundle_build import add_fp16

    b = baked_copy(plain, tmp_path)
    man = add_fp16(b, inputs=X)
    agreement = man.towers["vision"]["fp16"].agreement
    assert agreement["top1_agreement"] is not None and agreement["min_cosine"] > 0.999
    assert man.baked_labels and ZeroShotClassifier(load_bundle(b, precision="fp16"), LABELS).from_baked
