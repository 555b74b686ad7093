"""One model vocabulary on every command: ``-m/--model PATH`` takes a bundle or a checkpoint folder the same way
(classify, embed, bench, validate, eval, demo, build, export, quantize, compile), the older spellings still work,
and commands that write artifacts report them with ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import OFFICIAL, SAMPLES, needs_samples
from lbedge.cli import main
from test_deploy import smooth_images
from test_pipeline import colour_frames

pytest.importorskip("torch")
CKPT = OFFICIAL / "image"


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from lbedge.quantize.bundle_build import export_bundle

    out = tmp_path_factory.mktemp("cli-models") / "image"
    export_bundle(CKPT, out)
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


@needs_samples
def test_classify_and_embed_take_a_bundle_or_a_checkpoint(bundle, tmp_path):
    """`lbedge classify -c lbmini/bundles/image` refused a bundle; a torch-free Jetson user could not classify."""
    files = [SAMPLES / "image" / "0.jpg", SAMPLES / "image" / "1.jpg"]
    by_bundle = run("classify", "-m", bundle, "-l", "parakeet,lion,room", "--json", "-p", "fp32", *files)
    by_ckpt = run("classify", "--model", CKPT, "-l", "parakeet,lion,room", "--json", *files)
    assert by_bundle.exit_code == 0 and by_ckpt.exit_code == 0, by_bundle.output + by_ckpt.output
    labels = [[json.loads(line)["label"] for line in r.stdout.splitlines()] for r in (by_bundle, by_ckpt)]
    assert labels[0] == labels[1]
    for model in (bundle, CKPT):
        r = run("embed", "-m", model, "-o", tmp_path / "e.npy", *files)
        assert r.exit_code == 0, r.output
        assert np.load(tmp_path / "e.npy").shape == (2, 8)
    assert run("embed", "-c", CKPT, "-o", tmp_path / "e.npy", "--text", "a").exit_code == 0  # older spelling
    r = run("classify", "-m", tmp_path / "nothing", "-l", "a,b", "x.jpg")
    assert r.exit_code == 2 and "not a folder" in r.output
    r = run("classify", "-m", CKPT, "-l", "a,b", "--backend", "tensorrt", "x.jpg")
    assert r.exit_code == 2 and "runs on PyTorch" in r.output  # a checkpoint is not a bundle


@needs_samples
def test_classify_on_a_bundle_imports_no_torch(bundle):
    code = (
        "import sys; from lbedge.cli import main\n"
        f"main(['classify', '-m', {str(bundle)!r}, '-l', 'parakeet,lion', {str(SAMPLES / 'image' / '0.jpg')!r}],"
        " standalone_mode=False)\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch") and "0.jpg" in out.stdout


def test_bench_validate_and_eval_take_models_with_m(bundle, tmp_path):
    r = run("bench", "-m", CKPT, "--iters", "1", "--warmup", "0", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert {(row["stage"], row["backend"]) for row in res["rows"]} >= {("vision", "torch"), ("text", "torch")}
    r = run("bench", "-m", bundle, "--iters", "1", "--warmup", "0", "--json")
    assert r.exit_code == 0 and any(row["backend"] == "onnxruntime" for row in json.loads(r.stdout)["rows"])
    r = run("validate", "-m", CKPT, "-i", tmp_path)
    assert r.exit_code == 2 and "not a bundle" in r.output
    images = colour_frames(tmp_path / "f", ["red", "green", "blue", "red"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"file": str(p), "label": c}) + "\n"
            for p, c in zip(sorted(images.glob("*.png")), ["red", "green", "blue", "red"])
        )
    )
    r = run("eval", "-m", CKPT, "-m", bundle, "--data", manifest, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["model"] for row in rows] == ["image", "image"] and all(row["n"] == 4 for row in rows)


def test_demo_takes_models_with_m_and_the_older_names(bundle, tmp_path):
    frames = colour_frames(tmp_path / "f", ["red", "green"])
    for flag, model in (("-m", bundle), ("--bundle", bundle), ("--checkpoint", CKPT), ("--model", CKPT)):
        r = run("demo", flag, model, "--rgb", frames, "-l", "red,green", "--headless", "--jsonl", tmp_path / "r.jsonl")
        assert r.exit_code == 0, (flag, r.output)
        assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_deploy_commands_take_m_and_report_json(tmp_path):
    calib = smooth_images(tmp_path / "calib")
    r = run("export", "-m", CKPT, "-o", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["bundle"] == str(tmp_path / "b") and {g["tower"] for g in rep["graphs"]} == {"vision", "text"}
    assert all(g["bytes"] > 0 for g in rep["graphs"]) and "export" in rep
    r = run("quantize", "-m", tmp_path / "b", "-p", "int8", "--calib", calib, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    int8 = next(g for g in rep["graphs"] if g["precision"] == "int8")
    assert int8["min_cosine"] > 0.9 and int8["bytes"] > 0
    assert "INT8 form: cpu" in r.stderr  # auto: no TensorRT here, said so
    r = run("export", "-m", CKPT, CKPT, "-o", tmp_path / "c")
    assert r.exit_code == 0  # the same model twice is fine
    r = run("export", "-m", CKPT, tmp_path, "-o", tmp_path / "c")
    assert r.exit_code == 2 and "give the model once" in r.output
    r = run("compile", "-o", "x")
    assert r.exit_code == 2
