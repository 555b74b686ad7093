"""The deploy path on tiny official-format checkpoints: export, FP16, INT8, bundles, backends, engine checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import OFFICIAL

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lbedge import CheckpointError, EngineMismatch, InputError, MissingDependency  # noqa: E402
from lbedge.bundle import Manifest, choose_backend, load_bundle  # noqa: E402
from lbedge.checkpoint import from_pretrained, load_model  # noqa: E402
from lbedge.engine import EngineManifest, RuntimeInfo, check_engine, require_compatible  # noqa: E402
from lbedge.quantize.bundle_build import build_bundle  # noqa: E402
from lbedge.quantize.export import ExportError, export_tower, ort_outputs, torch_outputs, tower_module  # noqa: E402
from lbedge.quantize.fp16 import convert_fp16  # noqa: E402
from lbedge.quantize.int8 import Int8Config, quantize_int8  # noqa: E402
from lbedge.quantize.trt_ops import check_ops  # noqa: E402


def smooth_images(folder: Path, n: int = 12) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:180, 0:240]
    for i in range(n):
        img = np.stack([(x * (1 + i % 3) + 20 * i) % 256, (y * (2 + i % 2)) % 256, np.full_like(x, 15 * i)], 2)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), img.astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    base = tmp_path_factory.mktemp("deploy")
    calib = smooth_images(base / "calib")
    (calib / "broken.png").write_bytes(b"not an image")
    out = base / "bundle"
    build_bundle(OFFICIAL / "image", out, calib=[calib])
    return out


# --- export ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image", "audio", "video", "video_v15"])
def test_vision_export_matches_torch_and_parses_for_tensorrt(tmp_path, name):
    model = load_model(OFFICIAL / name)
    rep = export_tower(model, "vision", tmp_path / "v.onnx")
    onnx.checker.check_model(str(tmp_path / "v.onnx"), full_check=True)
    m = onnx.load(str(tmp_path / "v.onnx"))
    assert m.opset_import[0].version >= 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert rep.agreement.max_abs_diff < 1e-4 and rep.agreement.min_cosine > 0.9999
    assert rep.nodes_final < rep.nodes_exported  # onnxslim simplified
    assert rep.trt_issues == {"8.6": [], "10": []}
    assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"}  # no custom ops
    x = np.random.default_rng(1).normal(size=(5, *model.config.preprocess.input_shape)).astype(np.float32)
    np.testing.assert_allclose(
        ort_outputs(tmp_path / "v.onnx", x), torch_outputs(tower_module(model, "vision"), x), atol=1e-5
    )  # dynamic batch: 5 works too


def test_text_export_uses_int32_ids(tmp_path):
    model = load_model(OFFICIAL / "image")
    export_tower(model, "text", tmp_path / "t.onnx")
    m = onnx.load(str(tmp_path / "t.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    enc = from_pretrained(OFFICIAL / "image")
    ids, _ = enc.tokenize(["a photo of a parakeet", "a lion"])
    np.testing.assert_allclose(
        ort_outputs(tmp_path / "t.onnx", ids.astype(np.int32)),
        enc.embed_text(["a photo of a parakeet", "a lion"]),
        atol=1e-5,
    )


def test_tensorrt_op_check_reports_unsupported_ops(tmp_path):
    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    issues = check_ops(tmp_path / "v.onnx", "8.5")  # JetPack 5.1 has no LayerNormalization import
    assert [i.op for i in issues] == ["LayerNormalization"] and "not supported" in issues[0].problem
    node = onnx.helper.make_node("Unique", ["x"], ["y"])
    g = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None])],
    )
    issues = check_ops(onnx.helper.make_model(g), "10")
    assert issues and issues[0].op == "Unique"


def test_export_validation_fails_beyond_tolerance(tmp_path):
    from lbedge.quantize.export import ExportConfig

    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_tower(
            load_model(OFFICIAL / "image"), "vision", tmp_path / "v.onnx", config=ExportConfig(atol=0.0, min_cosine=1.1)
        )


# --- FP16 / INT8 -------------------------------------------------------------------------------------------


def test_fp16_keeps_fragile_ops_in_fp32(tmp_path):
    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    convert_fp16(tmp_path / "v.onnx", tmp_path / "h.onnx")
    m = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "h.onnx")))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.value_info) + list(m.graph.input)}
    types.update({i.name: i.data_type for i in m.graph.initializer})
    for n in m.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax", "ReduceL2"):
            assert types[n.input[0]] == onnx.TensorProto.FLOAT, n.name
        if n.op_type == "MatMul":
            assert types[n.input[0]] == onnx.TensorProto.FLOAT16, n.name
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(2).normal(size=(3, 3, 224, 224)).astype(np.float32)
    a, b = ort_outputs(tmp_path / "v.onnx", x), ort_outputs(tmp_path / "h.onnx", x)
    assert ((a * b).sum(1)).min() > 0.999


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_is_symmetric_per_channel_qdq(tmp_path, method):
    from lbedge.preprocess import Preprocessor

    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    x = Preprocessor(model.config.preprocess)(sorted(smooth_images(tmp_path / "c").glob("*.png")))
    ref = ort_outputs(tmp_path / "v.onnx", x[8:])
    rep = quantize_int8(
        tmp_path / "v.onnx", tmp_path / "q.onnx", x[:8], holdout=x[8:], reference=ref, config=Int8Config(method=method)
    )
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and rep.quantized_nodes > 0
    for n in qs:  # TensorRT explicit quantization: int8, zero point 0
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
    per_channel = [
        inits[n.input[1]]
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
    ]
    assert any(s.size > 1 for s in per_channel)  # weights quantized per output channel
    assert rep.agreement.min_cosine > 0.98


def test_int8_falls_back_to_float_when_agreement_falls_short(tmp_path):
    from lbedge.preprocess import Preprocessor

    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    x = Preprocessor(model.config.preprocess)(sorted(smooth_images(tmp_path / "c").glob("*.png")))
    ref = ort_outputs(tmp_path / "v.onnx", x[8:])
    rep = quantize_int8(
        tmp_path / "v.onnx",
        tmp_path / "q.onnx",
        x[:8],
        holdout=x[8:],
        reference=ref,
        config=Int8Config(min_cosine=1.01, max_fallback_rounds=2),
    )  # unreachable on purpose
    assert len(rep.rounds) == 3  # two fallback rounds were tried
    assert rep.rounds[0]["excluded"] == 0 and rep.rounds[-1]["excluded"] > 0
    # none reached the target: the kept graph has the fewest float layers within 0.001 of the best agreement
    best = max(r["min_cosine"] for r in rep.rounds)
    kept = next(r for r in rep.rounds if r["min_cosine"] >= best - 1e-3)
    assert len(rep.excluded_nodes) == kept["excluded"]
    q = onnx.load(str(tmp_path / "q.onnx"))
    dq_outputs = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in q.graph.node}
    for name in rep.excluded_nodes:  # the fallback layers read float tensors, not dequantized ones
        assert by_name[name].op_type in ("MatMul", "Conv")
        assert not set(by_name[name].input) & dq_outputs, name


# --- bundles -------------------------------------------------------------------------------------------------


def test_bundle_manifest_records_everything(bundle):
    man = Manifest.read(bundle)
    assert man.modality == "image" and man.embed_dim == 8 and man.schema_version == 1
    assert set(man.towers["vision"]) == {"fp32", "fp16", "int8"} and set(man.towers["text"]) == {"fp32", "fp16"}
    assert man.logit_scale == pytest.approx(np.exp(4.2), rel=1e-5)
    assert man.preprocess["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert man.provenance["source_sha256"] and man.provenance["calibration_sha256"]
    assert any("broken.png" in s for s in man.provenance["calibration_skipped"])
    assert man.towers["vision"]["int8"].agreement["min_cosine"] > 0.98
    assert man.towers["vision"]["int8"].agreement["top1_agreement"] is not None
    assert man.text["fingerprint"] == from_pretrained(OFFICIAL / "image").text_fingerprint


def test_load_bundle_is_torch_free_and_matches_torch(bundle):
    code = (
        "import sys, json, numpy as np, lbedge; "
        "e = lbedge.load_bundle(sys.argv[1], precision='fp32'); assert lbedge.load(sys.argv[1]).vision; "
        "x = e.embed(sys.argv[2:]); t = e.embed_text(['a photo of a parakeet', 'a lion']); "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'x': x.tolist(), 't': t.tolist(), "
        "'backend': e.vision.name}))"
    )
    files = [str(p) for p in sorted((bundle.parent / "calib").glob("img_*.png"))[:3]]
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code, str(bundle), *files], check=True, capture_output=True, text=True
        ).stdout
    )
    assert out["torch"] is False and out["backend"] == "onnxruntime"
    enc = from_pretrained(OFFICIAL / "image")
    ref = enc.embed(files)
    assert (np.asarray(out["x"]) * ref).sum(1).min() > 0.99999
    assert (np.asarray(out["t"]) * enc.embed_text(["a photo of a parakeet", "a lion"])).sum(1).min() > 0.99999


def test_bundle_zero_shot_agrees_with_torch(bundle, tmp_path):
    import lbedge

    files = sorted((bundle.parent / "calib").glob("img_*.png"))
    labels = ["parakeet", "lion", "room", "car", "tree"]
    a = lbedge.ZeroShotClassifier(load_bundle(bundle, precision="fp32"), labels, cache=tmp_path)
    b = lbedge.ZeroShotClassifier(from_pretrained(OFFICIAL / "image"), labels, cache=tmp_path)
    assert [p.label for p in a(files)] == [p.label for p in b(files)]
    q = lbedge.ZeroShotClassifier(load_bundle(bundle), labels, cache=tmp_path)  # auto: int8 vision
    assert q.encoder.precision == {"vision": "int8", "text": "fp32"}
    assert np.mean([p.label == r.label for p, r in zip(q(files), b(files))]) >= 0.8


def test_bundle_is_relocatable(bundle, tmp_path):
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(bundle, moved)
    x = np.zeros((1, 3, 224, 224), np.float32)
    np.testing.assert_allclose(load_bundle(moved).embed(x), load_bundle(bundle).embed(x), atol=1e-6)


def test_bundle_integrity_errors(bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    data = (b / "vision.int8.onnx").read_bytes()
    (b / "vision.int8.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"vision\.int8\.onnx is corrupt"):
        load_bundle(b)
    (b / "vision.int8.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"vision\.int8\.onnx is missing"):
        load_bundle(b)
    (b / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(CheckpointError, match="merges.txt is corrupt"):
        load_bundle(b, precision="fp32")
    raw = json.loads((b / "manifest.json").read_text())
    raw["schema_version"] = 99
    (b / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="schema 99"):
        load_bundle(b)
    (b / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not an lbedge bundle"):
        load_bundle(b)


def test_bundle_input_errors(bundle):
    enc = load_bundle(bundle)
    with pytest.raises(InputError, match="must have shape"):
        enc.vision.run({"pixel_values": np.zeros((1, 3, 200, 200), np.float32)})
    with pytest.raises(InputError, match="no bf16 vision graph"):
        load_bundle(bundle, precision="bf16")
    with pytest.raises(InputError, match="no int8 text graph"):
        load_bundle(bundle, text_precision="int8")
    with pytest.raises(InputError, match="unknown backend"):
        load_bundle(bundle, backend="cuda")


def test_tensorrt_backend_needs_tensorrt(bundle):
    if choose_backend(Manifest.read(bundle), bundle, "auto") == "tensorrt":
        pytest.skip("TensorRT is installed here")
    assert choose_backend(Manifest.read(bundle), bundle, "auto") == "onnxruntime"
    with pytest.raises((MissingDependency, EngineMismatch)):
        load_bundle(bundle, backend="tensorrt")


# --- engine manifests: every check with its reason ---------------------------------------------------------


def _manifest(**kw) -> EngineManifest:
    base = dict(
        tensorrt_version="10.3.0",
        cuda_version="12.6",
        compute_capability="8.7",
        device_name="Orin",
        platform="aarch64-linux",
        precision="int8",
        onnx_sha256="abc",
        engine_sha256="eee",
        build_flags={"dla_core": -1, "version_compatible": False},
    )
    base.update(kw)
    return EngineManifest(**base)


ORIN = RuntimeInfo("10.3.0", "12.6", "8.7", "Orin", "aarch64-linux", dla_cores=2)


def test_engine_checks_pass_on_the_build_device():
    checks = check_engine(_manifest(), ORIN, onnx_sha256="abc", engine_sha256="eee")
    assert all(c.ok for c in checks) and {c.name for c in checks} >= {
        "tensorrt_version",
        "compute_capability",
        "platform",
        "onnx_sha256",
        "engine_sha256",
    }


@pytest.mark.parametrize(
    "runtime,kw,failed",
    [
        (RuntimeInfo("8.6.2", "12.2", "8.7", "Orin", "aarch64-linux"), {}, "tensorrt_version"),
        (RuntimeInfo("10.3.0", "12.6", "7.2", "Xavier", "aarch64-linux"), {}, "compute_capability"),
        (RuntimeInfo("10.3.0", "12.6", "8.7", "Orin", "x86_64-linux"), {}, "platform"),
        (ORIN, {"onnx_sha256": "other"}, "onnx_sha256"),
        (ORIN, {"engine_sha256": "tampered"}, "engine_sha256"),
        (RuntimeInfo("10.3.0", "12.6", "8.7", "Orin Nano", "aarch64-linux", dla_cores=0), {"dla": 0}, "dla_core"),
    ],
)
def test_engine_mismatch_is_refused_with_reasons(runtime, kw, failed):
    m = _manifest(build_flags={"dla_core": kw.pop("dla", -1), "version_compatible": False})
    kw = {"onnx_sha256": "abc", "engine_sha256": "eee", **kw}
    bad = [c for c in check_engine(m, runtime, **kw) if not c.ok]
    assert [c.name for c in bad] == [failed] and bad[0].reason
    with pytest.raises(EngineMismatch, match=failed):
        require_compatible(m, runtime, "e.engine", **kw)


def test_version_compatible_engines_accept_newer_same_major():
    m = _manifest(tensorrt_version="10.1.0", build_flags={"version_compatible": True})
    assert all(c.ok for c in check_engine(m, ORIN))
    older = RuntimeInfo("10.0.1", "12.6", "8.7", "Orin", "aarch64-linux")
    assert not all(c.ok for c in check_engine(m, older))
    assert _manifest().cache_key() != _manifest(precision="fp16").cache_key()


def test_version_compatible_8_6_engines_run_on_tensorrt_10_never_on_older():
    jp60 = _manifest(tensorrt_version="8.6.2", build_flags={"version_compatible": True})
    assert all(c.ok for c in check_engine(jp60, ORIN))  # TensorRT docs: 8.6+ -> 9, 10
    plain = _manifest(tensorrt_version="8.6.2")
    assert [c.name for c in check_engine(plain, ORIN) if not c.ok] == ["tensorrt_version"]
    newer = _manifest(tensorrt_version="10.3.0", build_flags={"version_compatible": True})
    jp60_runtime = RuntimeInfo("8.6.2", "12.2", "8.7", "Orin", "aarch64-linux")
    bad = [c for c in check_engine(newer, jp60_runtime) if not c.ok]
    assert [c.name for c in bad] == ["tensorrt_version"] and "newer than this runtime" in bad[0].reason


def test_engine_manifest_roundtrip_and_damage(tmp_path):
    m = _manifest(precision_control="strongly typed", agreement={"min_cosine": 0.9995, "threshold": 0.999})
    m.save(tmp_path / "e.json")
    assert EngineManifest.load(tmp_path / "e.json") == m
    old = json.loads((tmp_path / "e.json").read_text())
    del old["agreement"], old["precision_control"]  # written by an older lbedge: still loads
    (tmp_path / "e.json").write_text(json.dumps(old))
    assert EngineManifest.load(tmp_path / "e.json").precision_control == ""
    (tmp_path / "e.json").write_text(json.dumps({**old, "agreement": [0.9]}))
    with pytest.raises(CheckpointError, match="agreement"):
        EngineManifest.load(tmp_path / "e.json")
    (tmp_path / "e.json").write_text("{")
    with pytest.raises(CheckpointError, match="lbedge compile"):
        EngineManifest.load(tmp_path / "e.json")


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (runs on Jetsons and NVIDIA GPU hosts)")
    from lbedge.quantize.tensorrt_build import compile_bundle
    from lbedge.zeroshot import PROBE_LABELS, TEMPLATES, fill

    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    rows = compile_bundle(b, say=print)  # default options, as `lbedge compile`
    assert {(r["tower"], r["precision"]) for r in rows} == {("vision", "int8"), ("vision", "fp16"), ("text", "fp16")}
    x = np.random.default_rng(0).normal(size=(11, 3, 224, 224)).astype(np.float32)  # > one engine batch
    ort = load_bundle(b, backend="onnxruntime", precision="fp32", text_precision="fp32")
    for prec in ("fp16", "int8"):
        trt = load_bundle(b, backend="tensorrt", precision=prec)
        assert (trt.embed(x) * ort.embed(x)).sum(1).min() > (0.999 if prec == "fp16" else 0.99)
    trt = load_bundle(b, backend="tensorrt")
    prompts = [fill(t, label) for label in PROBE_LABELS for t in TEMPLATES["image"]]  # labels x templates
    assert len(prompts) > trt.text.max_batch
    t, o = trt.embed_text(prompts), ort.embed_text(prompts)  # FP16 text: CLIP's end-token pick
    assert (t * o).sum(1).min() > 0.999
    rows = compile_bundle(b, say=print)  # cached, not rebuilt
    assert all(r["reused"] for r in rows)


# --- CLI -----------------------------------------------------------------------------------------------------


def test_cli_deploy_commands(tmp_path, make_checkpoint):
    from click.testing import CliRunner

    from lbedge.cli import main

    calib = smooth_images(tmp_path / "calib")
    ckpt = make_checkpoint("thermal", seed=4)
    r = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "TensorRT 8.6: ok" in r.output and "TensorRT 10: ok" in r.output
    r = CliRunner().invoke(main, ["quantize", str(tmp_path / "b"), "-p", "int8", "--calib", str(calib)])
    assert r.exit_code == 0, r.output
    assert "vision int8" in r.output
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "b"), "-i", str(calib), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["precision"] == "int8" and rows[0]["passed"]
    r = CliRunner().invoke(
        main, ["bench", str(tmp_path / "b"), "--batch", "1,2", "--iters", "2", "--warmup", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    stages = {(row["stage"], row["precision"], row["batch"]) for row in res["rows"]}
    assert ("preprocess", "fp32", 1) in stages and ("vision", "int8", 2) in stages and ("text", "fp32", 1) in stages
    assert res["peak_rss_mb"] > 0
    graphs = {(g["tower"], g["precision"]): g for g in res["graphs"]}  # each measured in a process of its own
    assert {("vision", "fp32"), ("vision", "int8"), ("text", "fp32")} <= set(graphs)
    assert all(g["graph_mb"] > 0 and g["rss_before_mb"] > 0 for g in graphs.values())
    r = CliRunner().invoke(main, ["quantize", str(tmp_path / "b"), "-p", "int8"])
    assert r.exit_code == 2 and "--calib" in r.output and "--val" in r.output  # dynamic INT8 needs held-out inputs
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "b"), "--batch", "x"])
    assert r.exit_code == 2 and "--batch" in r.output


def test_int8_cpu_target_defaults_to_dynamic_quantization(tmp_path):
    """The cpu target: dynamic per-channel weights (no calibration), ONNX Runtime only; TensorRT refuses."""
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.int8 import QuantizationError

    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    x = Preprocessor(model.config.preprocess)(sorted(smooth_images(tmp_path / "c").glob("*.png")))
    ref = ort_outputs(tmp_path / "v.onnx", x[8:])
    rep = quantize_int8(
        tmp_path / "v.onnx", tmp_path / "q.onnx", x[:0], holdout=x[8:], reference=ref, config=Int8Config(target="cpu")
    )
    assert rep.method == "dynamic" and rep.calibration_samples == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops and "QuantizeLinear" not in ops
    assert rep.quantized_nodes > 0 and rep.agreement.min_cosine > 0.99
    with pytest.raises(QuantizationError, match="TensorRT cannot parse"):
        quantize_int8(tmp_path / "v.onnx", tmp_path / "t.onnx", x[:8], config=Int8Config(method="dynamic"))


def test_cpu_bundle_gets_an_int8_text_graph_only_when_it_agrees(tmp_path):
    import lbedge

    out = tmp_path / "cpu"
    man = build_bundle(
        OFFICIAL / "image",
        out,
        precisions=("fp32", "int8"),
        calib=[smooth_images(tmp_path / "c")],
        int8_config=Int8Config(target="cpu"),
    )
    assert man.towers["vision"]["int8"].details["int8"]["method"] == "dynamic"
    texts = ["a photo of a dog.", "a photo of a cat.", "an empty street"]
    fp32 = lbedge.load_bundle(out, text_precision="fp32").embed_text(texts)
    if "int8" in man.towers["text"]:  # kept: it agreed with FP32, and ORT uses it by default
        assert man.towers["text"]["int8"].agreement["min_cosine"] >= 0.999
        enc = lbedge.load_bundle(out)
        assert enc.text.path.name == "text.int8.onnx"
        assert ((enc.embed_text(texts) * fp32).sum(1)).min() > 0.99
    else:  # not kept: the manifest says why, FP32 text is used
        assert "0.999" in man.provenance["text_int8_skipped"] and not (out / "text.int8.onnx").exists()
        assert lbedge.load_bundle(out).text.path.name == "text.fp32.onnx"
