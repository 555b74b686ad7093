"""Which backend and precision each tower of a bundle runs at, from the TensorRT engines that exist, on the
committed lb-mini bundles (a CPU-form INT8 vision graph, an FP32 + INT8 shared text bundle). TensorRT itself is
replaced by a stand-in backend that runs the tower's ONNX graph; everything else is the real loader."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import lbedge.backends.tensorrt_backend as trt_backend
import lbedge.bundle as bundle_mod
from conftest import ROOT
from lbedge import load_bundle
from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend
from lbedge.errors import EngineMismatch

LBMINI = ROOT / "lbmini" / "bundles"


class StandInEngine(OnnxRuntimeBackend):
    """Plays a TensorRT engine: runs the ONNX graph the engine was built from (named by the fake engine file)."""

    name = "tensorrt"
    opened: list[Path] = []

    def __init__(self, engine_path, *, onnx_sha256=None, cuda_graph=False, verify=True):
        StandInEngine.opened.append(Path(engine_path))
        super().__init__(Path(engine_path).read_text().strip(), max_batch=8)


def add_engine(folder: Path, tower: str, precision: str) -> None:
    """Record an engine for ``tower`` at ``precision`` in the bundle, as `lbedge compile` does."""
    man = json.loads((folder / "manifest.json").read_text())
    rel = f"engines/{tower}.{precision}.test.engine"
    (folder / "engines").mkdir(exist_ok=True)
    (folder / rel).write_text(str(folder / man["towers"][tower][precision]["file"]))
    (folder / rel.replace(".engine", ".json")).write_text("{}")
    man.setdefault("engines", []).append(
        {"tower": tower, "precision": precision, "file": rel, "manifest": rel.replace(".engine", ".json")}
    )
    (folder / "manifest.json").write_text(json.dumps(man))


@pytest.fixture
def lbmini(lb_mini_copy, monkeypatch):
    """Copies of lb-mini's image bundle and its shared text bundle, with TensorRT 'installed'."""
    tmp_path = lb_mini_copy
    real = bundle_mod.available
    monkeypatch.setattr(bundle_mod, "available", lambda m: True if m == "tensorrt" else real(m))
    monkeypatch.setattr(trt_backend, "TensorRTBackend", StandInEngine)
    StandInEngine.opened = []
    return tmp_path


def test_vision_engine_and_text_without_engine_run_side_by_side(lbmini, caplog):
    """compile skips the CPU-form INT8 graph, so only an FP32 vision engine exists: auto must take it (it asked
    for an INT8 engine before and failed) and run the text tower, which has no engine, on ONNX Runtime."""
    add_engine(lbmini / "image", "vision", "fp32")
    with caplog.at_level(logging.WARNING, logger="lbedge.bundle"):
        enc = load_bundle(lbmini / "image")
        t = enc.embed_text(["a ball", "a cone"])
    assert enc.backends == {"vision": "tensorrt", "text": "onnxruntime"}
    assert enc.precision == {"vision": "fp32", "text": "int8"}
    assert StandInEngine.opened == [lbmini / "image" / "engines" / "vision.fp32.test.engine"]
    assert "text tower" in caplog.text and f"lbedge compile {lbmini / 'text'}" in caplog.text  # never silent
    ref = load_bundle(lbmini / "image", backend="onnxruntime", precision="fp32")
    x = np.random.default_rng(0).normal(size=(3, *enc.input_shape)).astype(np.float32)
    np.testing.assert_allclose(enc.embed(x), ref.embed(x), atol=1e-5)
    assert t.shape == (2, 384)


def test_every_tower_takes_its_best_built_engine(lbmini):
    add_engine(lbmini / "image", "vision", "fp32")
    add_engine(lbmini / "text", "text", "fp32")
    enc = load_bundle(lbmini / "image")
    assert enc.backends == {"vision": "tensorrt", "text": "tensorrt"}
    assert enc.precision == {"vision": "fp32", "text": "fp32"}
    enc.embed_text(["a ball"])
    assert StandInEngine.opened[-1] == lbmini / "text" / "engines" / "text.fp32.test.engine"


def test_tensorrt_asked_for_explicitly_needs_engines_for_every_tower(lbmini):
    with pytest.raises(EngineMismatch, match=r"no TensorRT engine for its vision tower.*lbedge compile"):
        load_bundle(lbmini / "image", backend="tensorrt")
    add_engine(lbmini / "image", "vision", "fp32")
    with pytest.raises(EngineMismatch, match=f"lbedge compile {lbmini / 'text'}"):
        load_bundle(lbmini / "image", backend="tensorrt")
    with pytest.raises(
        EngineMismatch,
        match=r"no TensorRT engine for its int8 vision tower \(built: fp32\).*"
        r"--precision int8",
    ):
        load_bundle(lbmini / "image", backend="tensorrt", precision="int8", text_precision="fp32")


def test_a_precision_without_an_engine_runs_on_onnx_runtime_and_says_so(lbmini, caplog):
    add_engine(lbmini / "image", "vision", "fp32")
    with caplog.at_level(logging.WARNING, logger="lbedge.bundle"):
        enc = load_bundle(lbmini / "image", precision="int8")
    assert enc.backends["vision"] == "onnxruntime" and enc.precision["vision"] == "int8"
    assert "no int8 vision engine" in caplog.text


def test_without_tensorrt_nothing_changes(tmp_path):
    if bundle_mod.available("tensorrt"):
        pytest.skip("TensorRT is installed here")
    shutil.copytree(LBMINI / "image", tmp_path / "image")
    if (LBMINI / "text").is_dir():
        shutil.copytree(LBMINI / "text", tmp_path / "text")
    add_engine(tmp_path / "image", "vision", "fp32")
    choice = bundle_mod.choose_tower(
        bundle_mod.Manifest.read(tmp_path / "image"), tmp_path / "image", "vision", "auto", "auto"
    )
    assert (choice.backend, choice.precision) == ("onnxruntime", "int8")
