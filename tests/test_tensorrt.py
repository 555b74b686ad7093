"""TensorRT: every decision up to TensorRT itself, for real, without TensorRT; and the engine tests (``-m tensorrt``)
that need TensorRT and an NVIDIA GPU.

Without TensorRT, ``compile_bundle`` runs end to end on copies of lb-mini's bundles with a stand-in ``tensorrt``
module and CUDA runtime: only :func:`serialize_network` (ONNX file -> engine bytes) is replaced, and the "engine"
runs on ONNX Runtime. Precision choice, skip messages, the shared text bundle compiled into its own folder, the
agreement check, manifests, confined paths, timing-cache naming and engine reuse all run as on a Jetson.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from lbedge.backends import tensorrt_backend as tb  # noqa: E402
from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from lbedge.bundle import Manifest, TowerFile  # noqa: E402
from lbedge.engine import (  # noqa: E402
    EngineManifest,
    RuntimeInfo,
    check_engine,
    tensorrt_problem,
    timing_cache_name,
    version_compatible_runs,
)
from lbedge.errors import EngineMismatch, MissingDependency  # noqa: E402
from lbedge.paths import bundle_file, lexical_problem  # noqa: E402
from lbedge.quantize import tensorrt_build as tbuild  # noqa: E402
from lbedge.quantize.tensorrt_build import (  # noqa: E402
    BuildOptions,
    EngineBuildError,
    LayerInfo,
    Serialized,
    check_agreement,
    compile_bundle,
    network_flag_names,
    pinned_fp32_layers,
    plan_tower,
    precision_control,
    profile_shapes,
    synthetic_probe,
)

ROOT = Path(__file__).resolve().parent.parent
LBMINI = ROOT / "lbmini" / "bundles"
ORIN = RuntimeInfo("10.3.0", "12.6", "8.7", "Orin", "aarch64-linux", dla_cores=2, cuda_runtime="12.6")


def _entry(**details) -> TowerFile:
    return TowerFile(file="g.onnx", sha256="0" * 64, details=details)


# --- which graphs compile -------------------------------------------------------------------------------------


def test_lbmini_defaults_skip_cpu_int8_and_build_fp32():
    image = Manifest.read(LBMINI / "image")
    plan = plan_tower("vision", image.towers["vision"])
    assert plan.build == ["fp32"]
    (skip,) = plan.skipped
    assert skip.precision == "int8" and "ONNX Runtime on CPUs" in skip.reason
    assert "--int8-target tensorrt" in skip.reason


def test_text_compiles_its_best_precision_and_never_int8():
    have = {"fp32": _entry(), "int8": _entry(int8={"target": "cpu", "method": "dynamic"})}
    plan = plan_tower("text", have)
    assert plan.build == ["fp32"] and [s.precision for s in plan.skipped] == ["int8"]
    assert "dynamic quantization" in plan.skipped[0].reason
    plan = plan_tower("text", {**have, "fp16": _entry()})
    assert plan.build == ["fp16"]
    assert {s.precision: s.reason for s in plan.skipped}["fp32"].startswith("not compiled by default")
    plan = plan_tower("text", have, ["int8"])  # asked for: skipped, not an error (text)
    assert plan.build == [] and "dynamic quantization" in plan.skipped[0].reason


def test_vision_defaults_with_tensorrt_int8_and_fp16():
    have = {"fp32": _entry(), "fp16": _entry(), "int8": _entry(int8={"target": "tensorrt"})}
    plan = plan_tower("vision", have)
    assert plan.build == ["fp16", "int8"]
    assert [(s.precision, "ask with -p fp32" in s.reason) for s in plan.skipped] == [("fp32", True)]
    assert plan_tower("vision", have, ["fp32"]).build == ["fp32"]


def test_explicit_cpu_int8_is_an_error_and_missing_precisions_are_named():
    have = {"fp32": _entry(), "int8": _entry(int8={"target": "cpu"})}
    with pytest.raises(EngineBuildError, match="int8-target tensorrt"):
        plan_tower("vision", have, ["int8"])
    plan = plan_tower("vision", have, ["fp16", "fp32"])
    assert plan.build == ["fp32"]
    assert any(s.precision == "fp16" and "has no fp16 vision graph (has: fp32, int8)" in s.reason for s in plan.skipped)


# --- how FP32 layers stay FP32 ----------------------------------------------------------------------------------


def test_strong_typing_on_tensorrt_10_and_constraints_on_8_6():
    strong = precision_control("10.3.0", "fp16")
    assert strong.strongly_typed and strong.set_flags == () and not strong.pin_fp32
    assert precision_control("10.3.0", "int8").set_flags == ()  # QDQ graph types decide, no INT8 flag
    weak = precision_control("8.6.2", "fp16")
    assert not weak.strongly_typed and weak.pin_fp32 and set(weak.set_flags) == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert set(precision_control("8.6.2", "int8").set_flags) == {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert not precision_control("10.3.0", "fp16", dla_core=0).strongly_typed  # DLA on 10: precision flags
    assert precision_control("11.0.0", "fp16", dla_core=0).strongly_typed  # 11: no weak typing left
    assert precision_control("10.3.0", "fp32").clear_flags == ("TF32",)
    assert network_flag_names("8.6.2", False) == ["EXPLICIT_BATCH"]
    assert network_flag_names("10.3.0", True) == ["STRONGLY_TYPED"]


def test_pinned_layers_follow_the_fp16_graphs_casts():
    layers = [
        LayerInfo("CONVOLUTION", "patch", ("x16",), ("p",)),
        LayerInfo("CAST", "to32", ("p",), ("p32",), casts_to_fp32=True),
        LayerInfo("NORMALIZATION", "ln", ("p32",), ("n",)),
        LayerInfo("CAST", "to16", ("n",), ("n16",)),
        LayerInfo("MATRIX_MULTIPLY", "qk", ("n16", "k"), ("s",)),
        LayerInfo("SOFTMAX", "attn", ("s",), ("a",)),  # by type, even in FP16 territory
        LayerInfo("MATRIX_MULTIPLY", "av", ("a", "v"), ("o",)),  # a softmax output starts no region
        LayerInfo("CAST", "out32", ("o",), ("o32",), casts_to_fp32=True),
        LayerInfo("ELEMENTWISE", "sq", ("o32", "o32"), ("sq",)),
        LayerInfo("REDUCE", "sum", ("sq",), ("ss",)),
        LayerInfo("UNARY", "sqrt", ("ss",), ("nrm",)),  # inside the FP32 region
        LayerInfo("ELEMENTWISE", "div", ("o32", "nrm"), ("emb",)),
        LayerInfo("TOPK", "argmax", ("o32",), ("val", "idx"), float_outputs=False),  # index output: never
        LayerInfo("CONSTANT", "c", (), ("c",)),
    ]
    assert pinned_fp32_layers(layers) == ["ln", "attn", "sq", "sum", "sqrt", "div"]
    assert pinned_fp32_layers([("SOFTMAX", "s"), ("ELEMENTWISE", "add"), ("REDUCE", "mean")]) == ["s", "mean"]


def test_profile_shapes_static_on_dla_and_refuses_other_dynamic_dims():
    assert profile_shapes(["batch", 3, 64, 64], BuildOptions(max_batch=8)) == (
        (1, 3, 64, 64),
        (1, 3, 64, 64),
        (8, 3, 64, 64),
    )
    assert set(profile_shapes([-1, 64], BuildOptions(max_batch=4, dla_core=0))) == {(4, 64)}
    with pytest.raises(EngineBuildError, match="dynamic dimension"):
        profile_shapes([-1, -1], BuildOptions())
    with pytest.raises(EngineBuildError, match="opt"):
        BuildOptions(opt_batch=9, max_batch=8).check()


def test_batch_limits_from_the_profile():
    assert tb.batch_limits_of(((1, 3), (1, 3), (8, 3))) == (8, False)
    assert tb.batch_limits_of(((8, 3), (8, 3), (8, 3))) == (8, True)  # DLA: static, the encoder pads


# --- versions, caches -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "built,runtime,ok",
    [
        ("8.6.2", "8.6.2", True),
        ("8.6.1", "8.6.2", True),
        ("8.6.2", "10.3.0", True),
        ("8.6.2", "9.3.0", True),
        ("9.3.0", "10.3.0", True),
        ("10.3.0", "10.7.0", True),
        ("10.3.0", "11.0.0", True),
        ("8.6.2", "8.6.1", False),
        ("10.3.0", "10.1.0", False),
        ("10.3.0", "8.6.2", False),
        ("8.6.2", "11.0.0", False),
        ("8.5.2", "10.3.0", False),
    ],
)
def test_version_compatible_engines_follow_tensorrts_rule(built, runtime, ok):
    assert version_compatible_runs(built, runtime)[0] is ok
    m = EngineManifest(
        built, "12.2", "8.7", "Orin", "aarch64-linux", "fp16", "abc", build_flags={"version_compatible": True}
    )
    rt = RuntimeInfo(runtime, "12.6", "8.7", "Orin", "aarch64-linux")
    (check,) = [c for c in check_engine(m, rt) if c.name == "tensorrt_version"]
    assert check.ok is ok and check.reason


def test_tensorrt_before_8_6_is_refused_with_why():
    problem = tensorrt_problem("8.5.2.2")
    assert "8.6" in problem and "LayerNormalization" in problem and "3.8" in problem and "ONNX Runtime" in problem
    assert tensorrt_problem("8.6.2") is None and tensorrt_problem("10.3.0.30") is None


def test_timing_cache_is_named_for_device_and_versions():
    name = timing_cache_name(ORIN)
    assert name == "engines/timing.sm87.trt10.3.0.cuda12.6.aarch64-linux.orin.cache"
    assert lexical_problem(name) is None
    others = [
        RuntimeInfo("10.3.0", "12.6", "8.7", "Orin Nano 8GB", "aarch64-linux"),
        RuntimeInfo("8.6.2", "12.2", "8.7", "Orin", "aarch64-linux"),
        RuntimeInfo("10.3.0", "12.6", "9.0", "NVIDIA H200", "x86_64-linux"),
    ]
    assert len({name, *map(timing_cache_name, others)}) == 4
    assert lexical_problem(timing_cache_name(RuntimeInfo("10", "12", "8.7", "../../x/ y", "a/b"))) is None


# --- the device's CUDA, from the driver -------------------------------------------------------------------------


class FakeCudart:
    """The cuda-python runtime calls runtime_info makes, returning (error, value) as cuda-python does."""

    def __init__(self, driver: int, runtime: int, props_error: int = 0):
        self.driver, self.runtime, self.props_error = driver, runtime, props_error

    def cudaDriverGetVersion(self):
        return 0, self.driver

    def cudaRuntimeGetVersion(self):
        return 0, self.runtime

    def cudaGetDeviceProperties(self, device):
        props = types.SimpleNamespace(name=b"Orin\x00", major=8, minor=7)
        return (self.props_error, None) if self.props_error else (0, props)


def fake_trt(version: str = "10.3.0") -> types.ModuleType:
    """The few ``tensorrt`` names lbedge touches before TensorRT builds anything."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class Runtime:
        num_DLA_cores = 2

        def __init__(self, logger):
            self.logger = logger

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def test_runtime_info_reports_the_drivers_cuda(caplog):
    info = tb.runtime_info(trt=fake_trt(), cudart=FakeCudart(12060, 12060))
    assert (info.cuda_version, info.cuda_runtime, info.compute_capability, info.device_name, info.dla_cores) == (
        "12.6",
        "12.6",
        "8.7",
        "Orin",
        2,
    )
    with caplog.at_level(logging.WARNING):
        info = tb.runtime_info(trt=fake_trt(), cudart=FakeCudart(12020, 12090))  # JetPack 6.0, cuda-python 12.9
    assert info.cuda_version == "12.2" and info.cuda_runtime == "12.9"
    assert "cuda-python==12.2.*" in caplog.text


def test_cuda_13_runtime_on_a_cuda_12_jetpack_is_refused_with_the_install_line():
    with pytest.raises(MissingDependency, match=r'lbedge\[tensorrt\]" "cuda-python==12\.6\.\*"'):
        tb.runtime_info(trt=fake_trt(), cudart=FakeCudart(12060, 13000))
    with pytest.raises(MissingDependency, match="no CUDA driver"):
        tb.runtime_info(trt=fake_trt(), cudart=FakeCudart(0, 12060))
    with pytest.raises(MissingDependency, match="needs a newer driver"):
        tb.runtime_info(trt=fake_trt(), cudart=FakeCudart(12020, 12060, props_error=35))
    assert tb.runtime_info(trt=fake_trt("10.13.0"), cudart=FakeCudart(13000, 13000)).cuda_version == "13.0"
    assert "tensorrt-cuda13" in tb.install_line(13000)


def test_cuda_python_extras_stay_within_one_cuda_major():
    tomllib = pytest.importorskip("tomllib")
    packaging = pytest.importorskip("packaging.requirements")
    from packaging.version import Version

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cuda12 = packaging.Requirement(extras["tensorrt"][0]).specifier
    cuda13 = packaging.Requirement(extras["tensorrt-cuda13"][0]).specifier
    assert all(Version(v) in cuda12 for v in ("12.2.1", "12.6.0", "12.6.2.post1"))  # JetPack 6.0, 6.1/6.2
    assert Version("13.0.0") not in cuda12 and Version("12.9.10") not in cuda13  # 13.x needs a CUDA 13 driver
    assert Version("13.0.0") in cuda13


def test_backends_refuse_tensorrt_8_5(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("8.5.2.2"))
    with pytest.raises(MissingDependency, match="8.6 or later"):
        tb.require_tensorrt()


def test_one_tensorrt_logger_per_process(monkeypatch):
    monkeypatch.setattr(tb, "_LOGGER", None)
    trt = fake_trt()
    assert tb.trt_logger(trt) is tb.trt_logger(trt)


# --- the agreement check ------------------------------------------------------------------------------------------


class NoiseBackend:
    """A deliberately wrong engine: right shapes, unrelated values."""

    name, input_names, output_names, max_batch, static_batch = "noise", ("pixel_values",), ("embeds",), 8, False

    def run(self, inputs):
        x = next(iter(inputs.values()))
        return {"embeds": np.random.default_rng(len(x)).normal(size=(len(x), 384)).astype(np.float32)}


@pytest.fixture(scope="module")
def fp16_image(tmp_path_factory) -> Path:
    """lb-mini's image graph converted to FP16 (LayerNorm, Softmax, reductions kept FP32)."""
    pytest.importorskip("onnx")
    from lbedge.quantize.fp16 import convert_fp16

    out = tmp_path_factory.mktemp("fp16") / "vision.fp16.onnx"
    convert_fp16(LBMINI / "image" / "vision.fp32.onnx", out)
    return out


def test_agreement_accepts_an_fp16_stand_in_and_refuses_a_wrong_one(fp16_image):
    probe = synthetic_probe(Manifest.read(LBMINI / "image").preprocess)
    assert probe.x.shape == (16, 3, 64, 64) and "synthetic" in probe.what
    reference = OnnxRuntimeBackend(LBMINI / "image" / "vision.fp32.onnx", providers=["CPUExecutionProvider"])
    a = check_agreement(reference, OnnxRuntimeBackend(fp16_image), probe, 0.999, "fp16 stand-in")
    assert 0.999 <= a.min_cosine <= 1.0
    with pytest.raises(EngineBuildError, match="disagrees with ONNX Runtime FP32.*not written"):
        check_agreement(reference, NoiseBackend(), probe, 0.99, "noise stand-in")


@pytest.mark.parametrize("modality", ["image", "depth", "thermal", "audio"])
def test_synthetic_inputs_are_deterministic_and_finite(modality):
    pre = Manifest.read(LBMINI / modality).preprocess
    a, b = synthetic_probe(pre, 3), synthetic_probe(pre, 3)
    assert np.array_equal(a.x, b.x) and np.isfinite(a.x).all() and a.x.std() > 0


# --- compile_bundle end to end, TensorRT replaced by a stand-in ------------------------------------------------------


@pytest.fixture(scope="module")
def lbmini_text(lb_mini_text) -> Path:
    """lb-mini's shared text bundle (tests/conftest.py: the built one, else built once for the session)."""
    return lb_mini_text


@pytest.fixture
def lbmini_set(tmp_path, lbmini_text) -> Path:
    """A copy of lb-mini's image bundle beside a copy of its text bundle (``"text_bundle": "../text"``)."""
    shutil.copytree(LBMINI / "image", tmp_path / "set" / "image")
    shutil.copytree(lbmini_text, tmp_path / "set" / "text", ignore=shutil.ignore_patterns("engines"))
    text = Manifest.read(tmp_path / "set" / "text")
    text.engines = []
    text.write(tmp_path / "set" / "text")
    return tmp_path / "set"


class StandIn:
    """Replaces TensorRT where only TensorRT can act: serializing a network and running an engine. The "engine"
    names its ONNX graph, which ONNX Runtime runs."""

    def __init__(self, monkeypatch, version: str = "10.3.0", wrong: bool = False):
        monkeypatch.setitem(sys.modules, "tensorrt", fake_trt(version))
        monkeypatch.setattr(tb, "_cudart", lambda: FakeCudart(12060, 12060))
        monkeypatch.setattr(tbuild, "serialize_network", self.serialize)
        self.version, self.wrong, self.built, self.caches_in, self.staged = version, wrong, [], [], []

    def serialize(self, onnx_path, precision, opts, cache):
        self.built.append((Path(onnx_path).name, precision))
        self.caches_in.append(cache)
        control = precision_control(self.version, precision, opts.dla_core).mode
        return Serialized(
            b"stand-in engine\n" + str(onnx_path).encode(),
            {"x": {}},
            {"embeds": {}},
            control,
            (cache or b"") + b"timing;",
        )

    def factory(self, engine: Path, onnx_sha256: str):
        assert engine.parent.name.startswith(".staging-") and engine.with_suffix(".json").is_file()
        self.staged.append(engine)
        if self.wrong:
            return NoiseBackend()
        return OnnxRuntimeBackend(Path(engine.read_bytes().split(b"\n", 1)[1].decode()))


def _engine_manifest(folder: Path) -> EngineManifest:
    return EngineManifest.load(bundle_file(folder, Manifest.read(folder).engines[0]["manifest"]))


def _engine_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "engines").glob("*") if p.suffix in (".engine", ".json"))


def test_compile_lbmini_with_defaults_builds_what_exists(monkeypatch, lbmini_set):
    trt = StandIn(monkeypatch)
    said = []
    rows = compile_bundle(lbmini_set / "image", say=said.append, backend_factory=trt.factory)
    text = "\n".join(said)
    assert "vision int8 skipped" in text and "text int8 skipped" in text and "synthetic smooth image" in text
    assert "prompts (30 probe labels x 6 templates)" in text
    assert [(r["tower"], r["precision"], r["reused"]) for r in rows] == [
        ("vision", "fp32", False),
        ("text", "fp32", False),
    ]
    assert Path(rows[1]["bundle"]) == (lbmini_set / "text").resolve()
    assert trt.built == [("vision.fp32.onnx", "fp32"), ("text.fp32.onnx", "fp32")]
    for folder, tower in ((lbmini_set / "image", "vision"), (lbmini_set / "text", "text")):
        man = Manifest.read(folder)  # still a valid manifest (schema, confinement)
        (entry,) = man.engines
        assert entry["tower"] == tower and entry["precision"] == "fp32"
        em = EngineManifest.load(bundle_file(folder, entry["manifest"]))
        assert bundle_file(folder, entry["file"]).is_file() and em.precision_control == "fp32 (TF32 off)"
        assert em.agreement["min_cosine"] >= 0.999 and em.agreement["threshold"] == 0.999
        assert em.cuda_version == "12.6" and em.engine_sha256
        assert (folder / timing_cache_name(em_info(em))).read_bytes() == b"timing;"
        assert not list((folder / "engines").glob(".staging-*"))
        assert "timing" not in json.dumps(json.loads((folder / "manifest.json").read_text()))
    assert trt.caches_in == [b"", b""]

    again = compile_bundle(lbmini_set / "image", say=said.append, backend_factory=trt.factory)
    assert all(r["reused"] for r in again) and len(trt.built) == 2  # cached: nothing rebuilt


def em_info(em: EngineManifest) -> RuntimeInfo:
    return RuntimeInfo(em.tensorrt_version, em.cuda_version, em.compute_capability, em.device_name, em.platform)


def test_compile_a_text_bundle_and_a_vision_fp16_graph(monkeypatch, lbmini_set):
    from lbedge.quantize.bundle_build import add_fp16

    trt = StandIn(monkeypatch)
    rows = compile_bundle(lbmini_set / "text", say=lambda s: None, backend_factory=trt.factory)
    assert [(r["tower"], r["precision"]) for r in rows] == [("text", "fp32")]
    add_fp16(lbmini_set / "image", towers=("vision",))
    rows = compile_bundle(lbmini_set / "image", say=lambda s: None, backend_factory=trt.factory)
    assert [(r["tower"], r["precision"], r["reused"]) for r in rows] == [
        ("vision", "fp16", False),
        ("text", "fp32", True),
    ]
    em = _engine_manifest(lbmini_set / "image")
    assert em.precision_control == "strongly typed" and em.agreement["min_cosine"] >= 0.999


def test_an_engine_that_disagrees_leaves_nothing_behind(monkeypatch, lbmini_set):
    trt = StandIn(monkeypatch, wrong=True)
    with pytest.raises(EngineBuildError, match="vision tower.*disagrees with ONNX Runtime FP32"):
        compile_bundle(lbmini_set / "image", say=lambda s: None, backend_factory=trt.factory)
    assert trt.staged and not trt.staged[0].exists()
    assert _engine_files(lbmini_set / "image") == [] and Manifest.read(lbmini_set / "image").engines == []


def test_explicit_int8_on_a_cpu_int8_bundle_is_an_error(monkeypatch, lbmini_set):
    trt = StandIn(monkeypatch)
    with pytest.raises(EngineBuildError, match="vision int8 graph.*ONNX Runtime on CPUs"):
        compile_bundle(lbmini_set / "image", precisions=["int8"], backend_factory=trt.factory)
    assert trt.built == []


def test_a_mismatched_cached_engine_needs_rebuild(monkeypatch, lbmini_set):
    trt = StandIn(monkeypatch)
    compile_bundle(lbmini_set / "text", say=lambda s: None, backend_factory=trt.factory)
    (old,) = _engine_files(lbmini_set / "text")[:1]
    other = RuntimeInfo("10.3.0", "12.6", "8.7", "Orin", "aarch64-linux", cuda_runtime="12.6")
    with pytest.raises(EngineMismatch, match="--rebuild"):
        compile_bundle(
            lbmini_set / "text",
            opts=BuildOptions(max_batch=4),
            backend_factory=trt.factory,
            runtime=other,
            say=lambda s: None,
        )
    rows = compile_bundle(
        lbmini_set / "text",
        opts=BuildOptions(max_batch=4),
        backend_factory=trt.factory,
        runtime=other,
        rebuild=True,
        say=lambda s: None,
    )
    assert not rows[0]["reused"] and old not in _engine_files(lbmini_set / "text")
    assert len(Manifest.read(lbmini_set / "text").engines) == 1


def test_compile_refuses_tensorrt_8_5(monkeypatch, lbmini_set):
    StandIn(monkeypatch, version="8.5.2.2")
    with pytest.raises(MissingDependency, match="LayerNormalization"):
        compile_bundle(lbmini_set / "image")


def test_cli_compile_with_real_inputs_and_min_cosine(monkeypatch, lbmini_set, tmp_path):
    import cv2
    from click.testing import CliRunner

    from lbedge.cli import main

    trt = StandIn(monkeypatch)
    monkeypatch.setattr(tbuild, "default_factory", trt.factory)
    frames = tmp_path / "frames"
    frames.mkdir()
    y, x = np.mgrid[0:80, 0:100]
    for i in range(3):
        cv2.imwrite(
            str(frames / f"f{i}.png"), np.stack([(x * (i + 1)) % 256, y % 256, x * 0 + 40 * i], 2).astype(np.uint8)
        )
    r = CliRunner().invoke(
        main, ["compile", str(lbmini_set / "image"), "--inputs", str(frames), "--min-cosine", "0.9999"]
    )
    assert r.exit_code == 0, r.output
    assert "3 inputs from" in r.output and "vision fp32:" in r.output and "text fp32:" in r.output
    em = _engine_manifest(lbmini_set / "image")
    assert em.agreement["samples"] == 3 and em.agreement["threshold"] == 0.9999
    r = CliRunner().invoke(main, ["compile", str(lbmini_set / "image"), "-p", "int8"])
    assert r.exit_code == 1 and "int8-target tensorrt" in r.output
    r = CliRunner().invoke(main, ["compile", str(lbmini_set / "image"), "--opt-batch", "9"])
    assert r.exit_code == 2


# --- on a machine with TensorRT and an NVIDIA GPU ---------------------------------------------------------------------

needs_tensorrt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None,
    reason="TensorRT is not installed (runs on Jetsons and NVIDIA GPU hosts)",
)


def _needs_tensorrt():
    tb.runtime_info()  # a GPU, a driver and a cuda-python that fits it


@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize(
    "bundle",
    ["image", "depth", "thermal", "audio", "student/image", "student/depth", "student/thermal", "student/audio"],
)
def test_lbmini_compiles_and_runs_on_tensorrt_with_defaults(tmp_path, lbmini_text, bundle):
    _needs_tensorrt()
    import lbedge
    from lbedge.zeroshot import PROBE_LABELS, TEMPLATES, fill

    depth = bundle.count("/") + 1
    dst = tmp_path / "lb" / bundle
    shutil.copytree(LBMINI / bundle, dst)
    shutil.copytree(lbmini_text, dst.parents[depth - 1] / "text")
    rows = compile_bundle(dst, say=print)  # default options, as `lbedge compile` runs
    assert {(r["tower"], r["precision"]) for r in rows} == {("vision", "fp32"), ("text", "fp32")}
    auto = lbedge.load_bundle(dst)  # what `lbedge demo` loads: the engines that exist
    assert auto.precision == {"vision": "fp32", "text": "fp32"} and auto.vision.name == "tensorrt"
    trt_enc = lbedge.load_bundle(dst, backend="tensorrt")
    ort_enc = lbedge.load_bundle(dst, backend="onnxruntime", precision="fp32", text_precision="fp32")
    x = synthetic_probe(Manifest.read(dst).preprocess, 11).x  # more rows than one engine batch
    assert (trt_enc.embed(x) * ort_enc.embed(x)).sum(1).min() > 0.999
    prompts = [fill(t, label) for label in PROBE_LABELS for t in TEMPLATES[trt_enc.modality]]
    assert len(prompts) > trt_enc.text.max_batch
    assert (trt_enc.embed_text(prompts) * ort_enc.embed_text(prompts)).sum(1).min() > 0.999
    clf = lbedge.ZeroShotClassifier(trt_enc, labels=list(PROBE_LABELS))
    assert clf(x[0]).label in PROBE_LABELS
    assert all(r["reused"] for r in compile_bundle(dst, say=print))


@pytest.mark.tensorrt
@needs_tensorrt
def test_fp16_text_engine_agrees_with_onnxruntime(tmp_path, lbmini_text):
    _needs_tensorrt()
    import lbedge
    from lbedge.quantize.bundle_build import add_fp16
    from lbedge.zeroshot import PROBE_LABELS, TEMPLATES, fill

    shutil.copytree(LBMINI / "image", tmp_path / "lb" / "image")
    shutil.copytree(lbmini_text, tmp_path / "lb" / "text")
    add_fp16(tmp_path / "lb" / "text", towers=("text",))
    rows = compile_bundle(tmp_path / "lb" / "image", say=print)
    assert ("text", "fp16") in {(r["tower"], r["precision"]) for r in rows}
    trt_enc = lbedge.load_bundle(tmp_path / "lb" / "image", backend="tensorrt", text_precision="fp16")
    ort_enc = lbedge.load_bundle(tmp_path / "lb" / "image", backend="onnxruntime", text_precision="fp32")
    prompts = [fill(t, label) for label in PROBE_LABELS for t in TEMPLATES["image"]]
    assert len(prompts) > trt_enc.text.max_batch
    t, o = trt_enc.embed_text(prompts), ort_enc.embed_text(prompts)
    assert (t * o).sum(1).min() > 0.999
    v = ort_enc.embed(synthetic_probe(Manifest.read(tmp_path / "lb" / "image").preprocess).x)
    assert ((v @ t.T).argmax(1) == (v @ o.T).argmax(1)).all()  # the same zero-shot answers
