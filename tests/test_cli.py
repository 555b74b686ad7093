"""The lbedge command line on a real (tiny, official-format) checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import OFFICIAL, SAMPLES, needs_samples
from lbedge.cli import main

pytest.importorskip("torch")
CKPT = str(OFFICIAL / "image")


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_help_and_version():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("info", "classify", "embed", "download"):
        assert cmd in r.output
    assert run("--version").output.strip().endswith("0.1.0")


def test_info_describes_checkpoint_and_machine():
    r = run("info", "-m", CKPT, "--load", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    c = d["model"]
    assert c["kind"] == "checkpoint" and c["modality"] == "image" and c["embed_dim"] == 8
    assert c["input_shape"] == [3, 224, 224]
    assert c["lora_pairs_merged"] == 8 and c["logit_scale"] == pytest.approx(np.exp(4.2), rel=1e-4)
    assert d["optional"]["torch"] is True
    assert "CPUExecutionProvider" in d["onnxruntime"]["providers"]
    assert d["opencv_features"]["gui"] and d["jetson"] == {"jetson": False}
    from lbedge.cpu import bf16_support, int8_weight_bits

    assert d["cpu"]["int8_weight_bits"] == int8_weight_bits().bits and d["cpu"]["bf16_native"] == bf16_support().native
    assert isinstance(d["cameras_v4l2"], list) and "audio_inputs" in d
    assert "modality" in run("info", "--checkpoint", CKPT).output  # the older option name still works


def test_help_lists_commands_in_the_order_of_the_work():
    out = run("--help").output
    order = [
        "info",
        "download",
        "classify",
        "embed",
        "build",
        "export",
        "quantize",
        "build-text",
        "bake",
        "validate",
        "bench",
        "compile",
        "demo",
        "watch",
        "label-bag",
        "eval",
        "train",
    ]
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == order


@needs_samples
def test_classify_table_and_json(tmp_path):
    files = [SAMPLES / "image" / "0.jpg", SAMPLES / "image" / "1.jpg"]
    env = {"LBEDGE_CACHE": str(tmp_path)}
    r = run("classify", "--checkpoint", CKPT, "--labels", "parakeet, lion,room", *files, env=env)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "label", "score"] and len(lines) == 3
    r = run("classify", "-c", CKPT, "-l", "parakeet,lion,room", "--json", "--top-k", "2", *files, env=env)
    rows = [json.loads(line) for line in r.output.strip().splitlines()]
    assert [row["file"] for row in rows] == [str(f) for f in files]
    assert all(len(row["top"]) == 2 and row["label"] in ("parakeet", "lion", "room") for row in rows)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("parakeet\nlion\n\nroom\n")
    r2 = run("classify", "-c", CKPT, "--labels-file", labels_file, "--json", "--top-k", "2", *files, env=env)
    assert [json.loads(line) for line in r2.output.strip().splitlines()] == rows


@needs_samples
def test_embed_files_and_text(tmp_path):
    out = tmp_path / "e.npy"
    r = run("embed", "-c", CKPT, "-o", out, SAMPLES / "image" / "0.jpg", SAMPLES / "image" / "1.jpg")
    assert r.exit_code == 0, r.output
    e = np.load(out)
    ref = np.load(OFFICIAL / "image" / "reference.npz")
    assert e.shape == (2, 8) and (e * ref["image_embeds"]).sum(1).min() > 0.99999
    r = run("embed", "-c", CKPT, "-o", out, "--text", "a photo of a parakeet", "--text", "a lion climbing a tree")
    assert r.exit_code == 0 and np.load(out).shape == (2, 8)


def test_errors_are_one_line_with_exit_1_and_usage_errors_exit_2(tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(OFFICIAL / "image", bad)
    (bad / "pytorch_model.bin").write_bytes(b"truncated")
    r = run("classify", "-c", bad, "-l", "a,b", "x.jpg")
    assert r.exit_code == 1  # failed at run time
    assert r.output.startswith("error: ") and r.output.count("\n") == 1 and "pytorch_model.bin" in r.output
    r = run("classify", "-c", CKPT, "x.jpg")
    assert r.exit_code == 2 and "--labels" in r.output  # called wrongly
    r = run("classify", "-c", CKPT, "-l", "a,b", tmp_path / "missing.jpg", env={"LBEDGE_CACHE": str(tmp_path)})
    assert r.exit_code == 1 and "not found" in r.output
    r = run("embed", "-c", CKPT, "-o", tmp_path / "x.npy")
    assert r.exit_code == 2 and "either FILES or --text" in r.output


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    """`embed -o` into a missing or unwritable folder gave a traceback after the work; `--output /sys/o.mp4`
    exited 0 saying it wrote a file it did not."""
    r = run("embed", "-c", CKPT, "-o", "/sys/no/x.npy", "--text", "a")
    assert r.exit_code == 2 and "cannot write to /sys/no" in r.output and "Traceback" not in r.output
    r = run("embed", "-c", CKPT, "-o", tmp_path / "new" / "sub" / "x.npy", "--text", "a")  # created
    assert r.exit_code == 0 and (tmp_path / "new" / "sub" / "x.npy").is_file()
    r = run("demo", "--checkpoint", CKPT, "--rgb", tmp_path, "-l", "a,b", "--headless", "-o", "/sys/o.mp4")
    assert r.exit_code == 2 and "cannot write to /sys" in r.output
    r = run("demo", "--checkpoint", CKPT, "--rgb", tmp_path, "-l", "a,b", "--headless", "--jsonl", "/proc/x/r.jsonl")
    assert r.exit_code == 2 and "--jsonl" in r.output


def test_labels_that_are_not_text_are_usage_errors(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_bytes(b"cat\n\xff\xfedog\n")
    r = run("classify", "-c", CKPT, "--labels-file", f, "x.jpg")
    assert r.exit_code == 2 and "not UTF-8" in r.output and "Traceback" not in r.output
    r = run("classify", "-c", CKPT, "-l", "cat,cat", "x.jpg")
    assert r.exit_code == 2 and "duplicate" in r.output


def test_verbosity_flags_and_internal_errors_are_one_line(tmp_path, monkeypatch):
    import lbedge.zeroshot as zs

    assert run("-q", "info").exit_code == 0 and run("-vv", "info").exit_code == 0

    def boom(*a, **kw):
        raise TypeError("unexpected")

    monkeypatch.setattr(zs.ZeroShotClassifier, "__init__", boom)
    r = run("classify", "-c", CKPT, "-l", "a,b", "x.jpg")
    assert r.exit_code == 1 and "internal error (TypeError: unexpected)" in r.output
    assert "Traceback" not in r.output and "LBEDGE_DEBUG=1" in r.output
