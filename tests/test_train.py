"""Training on CPU with tiny models: binding learns, the language tower stays frozen, merge is exact,
distillation reaches its teacher, resume is bit-exact, and bad data is reported."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import cv2  # noqa: E402

from conftest import TOKENIZER_DIR, random_model  # noqa: E402
from lbedge.checkpoint import from_pretrained, load_model, save_pretrained  # noqa: E402
from lbedge.train.bind import Binder  # noqa: E402
from lbedge.train.config import BindConfig, DistillConfig, load_config  # noqa: E402
from lbedge.train.data import BadDataError  # noqa: E402
from lbedge.train.distill import PRESETS, Distiller  # noqa: E402
from lbedge.train.merge import merge  # noqa: E402
from lbedge.train.state import MetricsLog, Process, train_loop  # noqa: E402

CLASSES = {"red circle": (0, 0, 255), "blue square": (255, 0, 0), "green triangle": (0, 200, 0)}


def shapes(root: Path, n_per: int = 8, seed: int = 0) -> Path:
    """A small learnable dataset: coloured shapes in class folders."""
    rng = np.random.default_rng(seed)
    for name, color in CLASSES.items():
        d = root / name.replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per):
            img = np.full((128, 128, 3), int(rng.integers(20, 80)), np.uint8)
            c, r = (int(rng.integers(45, 85)), int(rng.integers(45, 85))), int(rng.integers(20, 35))
            if "circle" in name:
                cv2.circle(img, c, r, color, -1)
            elif "square" in name:
                cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), color, -1)
            else:
                cv2.fillPoly(img, [np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]])], color)
            cv2.imwrite(str(d / f"{i}.png"), img)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return save_pretrained(random_model("image", seed=0), root / "base", tokenizer_dir=TOKENIZER_DIR)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes(tmp_path_factory.mktemp("shapes"))


def cfg(base, data, out, **kw) -> BindConfig:
    args = dict(
        base=str(base),
        modality="image",
        data=str(data),
        output=str(out),
        lora_r=4,
        lr=1e-2,
        max_steps=30,
        batch_size=12,
        warmup_steps=3,
        eval_every=10,
        save_every=10,
        val_fraction=0.25,
    )
    args.update(kw)
    return BindConfig(**args)


def test_binding_learns_and_keeps_the_language_tower_frozen(base, data, tmp_path):
    b = Binder(cfg(base, data, tmp_path / "run"))
    before = b.evaluate()
    res = b.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    after = res.evals[-1]
    assert after["zero_shot_top1"] > before["zero_shot_top1"] and after["zero_shot_top1"] >= 0.6
    assert after["retrieval_r1"] > before["retrieval_r1"]
    assert b.text_tower_unchanged()  # bit-identical language tower
    ref = load_model(base).state_dict()
    trained = load_model(tmp_path / "run" / "last").state_dict()
    for k in ref:
        if k.startswith("text_"):
            assert torch.equal(ref[k], trained[k]), k
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    assert any(k.startswith("vision_model.encoder.base_model.model.") and ".lora_A." in k for k in stored)


def test_merge_equals_lora_outputs(base, data, tmp_path):
    Binder(cfg(base, data, tmp_path / "run", max_steps=10)).run(progress=False)
    rep = merge(tmp_path / "run", tmp_path / "merged")
    assert rep.min_cosine >= 0.9999 and rep.lora_pairs == 8
    conf = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert conf["vision_config"]["lora_r"] == 0 and (tmp_path / "merged" / "model.safetensors").is_file()
    enc = from_pretrained(tmp_path / "merged")  # loads as an ordinary checkpoint
    assert enc.embed(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 8)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(base, data, tmp_path):
    c1 = cfg(base, data, tmp_path / "straight", max_steps=12, save_every=4, eval_every=100)
    Binder(c1).run(progress=False)
    c2 = cfg(base, data, tmp_path / "interrupted", max_steps=12, save_every=4, eval_every=100)
    Binder(c2).run(progress=False, stop_after=8)  # "killed" after step 8 (checkpoint at 8)
    state = json.loads((tmp_path / "interrupted" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 8
    resumed = Binder(c2)
    assert resumed.try_resume() and resumed.step == 8
    resumed.run(progress=False)
    a = load_model(tmp_path / "straight" / "last").state_dict()
    b = load_model(tmp_path / "interrupted" / "last").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_data_is_reported_or_stops(base, data, tmp_path):
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    (bad / "red_circle" / "broken.png").write_bytes(b"nope")
    (bad / "red_circle" / "notes.wav").write_bytes(b"RIFF")
    b = Binder(cfg(base, bad, tmp_path / "skip", max_steps=2))
    res = b.run(progress=False)
    reported = {Path(r["file"]).name: r["reason"] for r in res.bad_samples}
    assert set(reported) == {"broken.png", "notes.wav"}
    assert "cannot decode" in reported["broken.png"] and "not a image file" in reported["notes.wav"]
    lines = (tmp_path / "skip" / "bad_samples.jsonl").read_text().splitlines()
    assert len(lines) == 2
    with pytest.raises(BadDataError, match="broken.png|notes.wav"):
        Binder(cfg(base, bad, tmp_path / "stop", on_bad_data="stop"))


def test_manifest_with_multiview_texts(base, data, tmp_path):
    rows = []
    for f in sorted(data.rglob("*.png")):
        label = f.parent.name.replace("_", " ")
        rows.append({"file": str(f), "texts": [label, f"a {label}", f"{label} on grey"]})
    rows.append({"file": str(next(data.rglob("*.png"))), "texts": []})  # empty texts: reported
    man = tmp_path / "m.jsonl"
    man.write_text("\n".join(json.dumps(r) for r in rows))
    b = Binder(cfg(base, man, tmp_path / "run", max_steps=3))
    assert any("no text" in x.reason for x in b.store.bad)
    assert all(len(s.texts) == 3 for s in b.store.samples)
    b.run(progress=False)


def test_config_file_and_overrides(tmp_path, base, data):
    f = tmp_path / "bind.toml"
    f.write_text(f'[bind]\nbase = "{base}"\ndata = "{data}"\nlora_r = 8\nmax_steps = 5\n')
    c = load_config(BindConfig, f, {"max_steps": 7})
    assert c.lora_r == 8 and c.max_steps == 7
    f.write_text("[bind]\nnonsense = 1\n")
    with pytest.raises(Exception, match="unknown BindConfig option"):
        load_config(BindConfig, f)


def test_new_modality_starts_from_the_image_tower(base, tmp_path):
    from lbedge.train.modality import convert_modality

    img = load_model(base)
    audio = convert_modality(img, "audio")
    assert audio.config.modality == "audio" and audio.vision_model.embeddings.position_embedding.weight.shape[0] == 593
    video = convert_modality(img, "video")
    x = torch.randn(2, 3, 224, 224)
    clip = x[:, :, None].repeat(1, 1, 8, 1, 1)  # a still clip: the new temporal layers start as identity
    with torch.no_grad():
        torch.testing.assert_close(video.encode_vision(clip), img.encode_vision(x), atol=1e-5, rtol=1e-4)


def test_distilled_student_matches_its_teacher(base, data, tmp_path):
    d = Distiller(
        DistillConfig(
            teacher=str(base),
            student="16,2,2,16",
            data=str(data),
            output=str(tmp_path / "d"),
            max_steps=40,
            batch_size=16,
            lr=3e-3,
            eval_every=40,
            augment=False,
        )
    )
    res = d.run(progress=False)
    assert res.heldout["after"]["mean_cosine"] >= 0.9
    assert res.heldout["after"]["mean_cosine"] > res.heldout["before"]["mean_cosine"]
    assert res.student["params"] < res.teacher["params"] and res.student["gflops"] < res.teacher["gflops"]
    teacher_text = load_model(base).state_dict()
    student = load_model(res.output)  # an ordinary checkpoint, same language tower
    for k, v in student.state_dict().items():
        if k.startswith("text_"):
            assert torch.equal(v, teacher_text[k])
    assert (tmp_path / "d" / "report.json").is_file() and list((tmp_path / "d" / "teacher_cache").glob("*.npy"))
    assert set(PRESETS) >= {"vit-s16", "vit-ti16"}


def test_trained_student_flows_into_the_deploy_path(base, data, tmp_path):
    pytest.importorskip("onnxruntime")
    from lbedge.bundle import load_bundle
    from lbedge.quantize.bundle_build import build_bundle

    d = Distiller(
        DistillConfig(
            teacher=str(base),
            student="16,2,2,16",
            data=str(data),
            output=str(tmp_path / "d"),
            max_steps=5,
            batch_size=8,
            augment=False,
        )
    )
    out = d.run(progress=False).output
    build_bundle(out, tmp_path / "bundle", calib=[data])
    enc = load_bundle(tmp_path / "bundle")
    ref = from_pretrained(out)
    x = enc.preprocess(sorted(data.rglob("*.png"))[:3])
    assert (load_bundle(tmp_path / "bundle", precision="fp32").embed(x) * ref.embed(x)).sum(1).min() > 0.9999
    assert enc.embed(x).shape == (3, 8)


def test_cli_train_commands(base, data, tmp_path):
    from click.testing import CliRunner

    from lbedge.cli import main

    r = CliRunner().invoke(
        main,
        [
            "train",
            "bind",
            "--base",
            str(base),
            "--modality",
            "image",
            "--data",
            str(data),
            "-o",
            str(tmp_path / "run"),
            "--max-steps",
            "4",
            "--lora-r",
            "4",
            "--batch-size",
            "8",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "zero-shot top-1" in r.output and (tmp_path / "run" / "last" / "config.json").is_file()
    r = CliRunner().invoke(main, ["train", "merge", str(tmp_path / "run"), "-o", str(tmp_path / "merged")])
    assert r.exit_code == 0 and "min cosine vs LoRA model 1.0" in r.output, r.output
    r = CliRunner().invoke(
        main,
        [
            "train",
            "distill",
            "--teacher",
            str(tmp_path / "merged"),
            "--student",
            "16,2,2,16",
            "--data",
            str(data),
            "-o",
            str(tmp_path / "d"),
            "--max-steps",
            "3",
        ],
    )
    assert r.exit_code == 0 and "M params" in r.output, r.output
    r = CliRunner().invoke(main, ["train", "bind", "--data", str(data)])
    assert r.exit_code == 2 and r.output.startswith("error: bind needs `base`")


def test_distillation_resumes_exactly(base, data, tmp_path):
    def run(out, **kw):
        d = Distiller(
            DistillConfig(
                teacher=str(base),
                student="16,2,2,16",
                data=str(data),
                output=str(out),
                max_steps=8,
                batch_size=8,
                save_every=2,
                augment=False,
            )
        )
        return d.run(progress=False, **kw)

    run(tmp_path / "straight")
    run(tmp_path / "cut", stop_after=4)
    assert json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())["step"] == 4
    run(tmp_path / "cut")
    a = load_model(tmp_path / "straight" / "student").state_dict()
    b = load_model(tmp_path / "cut" / "student").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_student_with_a_smaller_input_resolution(base, data, tmp_path):
    d = Distiller(
        DistillConfig(
            teacher=str(base),
            student="16,2,2,16",
            resolution=112,
            data=str(data),
            output=str(tmp_path / "d"),
            max_steps=20,
            batch_size=8,
            lr=3e-3,
            augment=False,
        )
    )
    res = d.run(progress=False)
    enc = from_pretrained(res.output)
    assert enc.input_shape == (3, 112, 112)
    assert enc.embed(sorted(data.rglob("*.png"))[:2]).shape == (2, 8)  # preprocessed at 112 directly
    assert res.heldout["after"]["mean_cosine"] > res.heldout["before"]["mean_cosine"]


def test_full_training_without_lora_learns_the_whole_vision_tower(base, data, tmp_path):
    """lora_r = 0 trains every vision weight (a tower from scratch), never the language tower."""
    b = Binder(cfg(base, data, tmp_path / "full", lora_r=0, lr=3e-3, max_steps=30))
    before = b.evaluate()
    res = b.run(progress=False)
    assert res.evals[-1]["zero_shot_top1"] > before["zero_shot_top1"] and b.text_tower_unchanged()
    ref = load_model(base).state_dict()
    trained = load_model(tmp_path / "full" / "last").state_dict()
    changed = {k.split(".")[0] for k in ref if not torch.equal(ref[k], trained[k])}
    assert changed == {"vision_model", "visual_projection", "logit_scale"}
    conf = json.loads((tmp_path / "full" / "last" / "config.json").read_text())
    assert conf["vision_config"]["lora_r"] == 0


def test_attribute_augment_trains_colour_free_texts_on_recoloured_images(base, data, tmp_path):
    rows = []
    for f in sorted(data.rglob("*.png")):
        shape = f.parent.name.split("_")[1]
        rows.append({"file": str(f), "texts": [f"a {shape}", f"a {f.parent.name.replace('_', ' ')}"]})
    man = tmp_path / "m.jsonl"
    man.write_text("\n".join(json.dumps(r) for r in rows))
    idx = list(range(12))
    coloured = [f"a {r['file'].split('/')[-2].replace('_', ' ')}" for r in rows[:12]]
    always = Binder(cfg(base, man, tmp_path / "a", attribute_augment=1.0, max_steps=2))
    assert always._attribute_free_texts(idx, coloured, torch.Generator().manual_seed(0)) == [
        f"a {c.split()[-1]}" for c in coloured
    ]  # every text became its colour-free one
    half = Binder(cfg(base, man, tmp_path / "h", attribute_augment=0.5, max_steps=2))
    got = half._attribute_free_texts(idx, coloured, torch.Generator().manual_seed(0))
    assert 0 < sum(g != c for g, c in zip(got, coloured)) < 12
    assert all(g == c or g == f"a {c.split()[-1]}" for g, c in zip(got, coloured))
    before = always.store.arrays.copy()
    always.run(progress=False)
    np.testing.assert_array_equal(always.store.arrays, before)  # augmentation never touches the stored data


# --- the state and loop both trainers share (lbedge.train.state) --------------------------------------------------


class Counting:
    """A stand-in trainer: each step's loss is its step; an evaluation reports the step it saw (or nothing)."""

    def __init__(self, evaluates: bool = True):
        self.step, self.saved, self.evaluates = 0, [], evaluates

    def train_step(self) -> dict:
        self.step += 1
        return {"step": self.step, "loss": float(self.step)}

    def evaluate(self) -> dict:
        return {"seen": self.step} if self.evaluates else {}

    def save(self) -> None:
        self.saved.append(self.step)


def test_train_loop_evaluates_saves_stops_and_continues(tmp_path):
    t = Counting()
    loop = dict(max_steps=10, eval_every=4, save_every=3, save=t.save)
    with MetricsLog(tmp_path) as metrics:
        res = train_loop(t, metrics=metrics, stop_after=7, **loop)  # interrupted after step 7
    assert t.step == 7 and t.saved == [3, 6, 7] and res.evals == [{"step": 4, "seen": 4}] and res.last["loss"] == 7
    with MetricsLog(tmp_path) as metrics:  # continued: metrics appended
        res = train_loop(t, metrics=metrics, **loop)
    assert t.saved == [3, 6, 7, 9, 10] and [e["step"] for e in res.evals] == [8, 10]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in rows if "eval" in r] == [4, 8, 10] and all("seconds" in r for r in rows if "loss" in r)
    quiet = Counting(evaluates=False)
    (tmp_path / "quiet").mkdir()
    with MetricsLog(tmp_path / "quiet") as metrics:
        assert train_loop(quiet, metrics=metrics, max_steps=4, eval_every=2, save_every=10, save=quiet.save).evals == []
    assert quiet.saved == [4] and "eval" not in (tmp_path / "quiet" / "metrics.jsonl").read_text()


def test_run_state_keeps_rng_and_data_order_and_resumes_older_runs(base, data, tmp_path, caplog):
    def binder(data_dir=data):
        return Binder(cfg(base, data_dir, tmp_path / "run", max_steps=4, save_every=2, eval_every=100))

    first = binder()
    first.run(progress=False, stop_after=2)
    last = tmp_path / "run" / "last"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["config"]["max_steps"] == 4
    assert state["data_order"]["train"] == len(first.train_idx) and state["data_order"]["seed"] == 0
    saved = torch.load(last / "optimizer.pt", weights_only=True)
    torch.manual_seed(123)
    resumed = binder()
    assert resumed.try_resume() and resumed.step == 2
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])  # the RNG of the moment it was saved
    del saved["rng"], state["data_order"]  # a run saved before both were kept
    torch.save(saved, last / "optimizer.pt")
    (last / "trainer_state.json").write_text(json.dumps(state))
    assert binder().try_resume()
    other = shutil.copytree(data, tmp_path / "other")
    next(other.rglob("*.png")).unlink()
    first.save()
    with caplog.at_level(logging.WARNING):
        assert binder(other).try_resume()  # other data: resumed, with a warning
    assert "saved with other data" in caplog.text


def test_only_the_main_process_writes(base, data, tmp_path):
    waits = []
    b = Binder(cfg(base, data, tmp_path / "run", max_steps=2))
    b.state.process = Process(is_main=False, barrier=lambda: waits.append(b.step))
    b.save()
    assert waits == [0, 0] and not (tmp_path / "run" / "last").exists()  # waited before and after, wrote nothing
    with MetricsLog(tmp_path, tensorboard=True, process=Process(is_main=False)) as metrics:
        metrics.step({"step": 1, "loss": 0.5})
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tb").exists()
