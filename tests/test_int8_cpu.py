"""INT8 for ONNX Runtime chosen from the CPU: the weight width (8 bits where the kernels accumulate exactly,
7 bits elsewhere), recorded in the bundle and checked where it runs; dynamic INT8 built without calibration."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import OFFICIAL

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from lbedge import cpu  # noqa: E402
from lbedge.cpu import cpu_flags, cpu_model, int8_weight_bits, int8_weights_suit  # noqa: E402

X86_VNNI = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
ARM_ORIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp\n"


def test_flags_are_read_from_cpuinfo():
    assert "avx512_vnni" in cpu_flags(X86_VNNI) and "avx2" in cpu_flags(X86_AVX2)
    assert "asimddp" in cpu_flags(ARM_ORIN)
    assert cpu_flags("model name: nothing here\n") == frozenset()
    assert cpu_model(X86_VNNI) == "Intel Xeon" and cpu_model("flags: avx2\n")  # the platform's name where none


@pytest.mark.parametrize(
    ("text", "machine", "bits"),
    [
        (X86_VNNI, "x86_64", 8),
        ("flags: avx2 amx_int8 amx_tile\n", "x86_64", 8),
        ("flags: avx2 avx_vnni\n", "x86_64", 8),
        (X86_AVX2, "x86_64", 7),
        ("flags: avx512f avx512bw\n", "x86_64", 7),  # AVX-512 without VNNI still saturates
        ("", "x86_64", 7),  # flags unknown: the width that is exact everywhere
        (ARM_ORIN, "aarch64", 8),
        ("Features: fp asimd\n", "aarch64", 7),
        ("", "riscv64", 7),
    ],
)
def test_weight_width_follows_the_int8_kernels(text, machine, bits):
    chosen = int8_weight_bits(cpu_flags(text), machine)
    assert chosen.bits == bits and chosen.reason


def test_an_8_bit_graph_suits_only_cpus_that_accumulate_exactly():
    assert int8_weights_suit(8, cpu_flags(X86_VNNI), "x86_64")[0]
    assert int8_weights_suit(7, cpu_flags(X86_AVX2), "x86_64")[0]
    ok, why = int8_weights_suit(8, cpu_flags(X86_AVX2), "x86_64")
    assert not ok and "--weight-bits 7" in why and "saturating" in why


def _calibration(tmp_path):
    from lbedge.checkpoint import load_model
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.export import export_tower, ort_outputs
    from test_deploy import smooth_images

    model = load_model(OFFICIAL / "image")
    export_tower(model, "vision", tmp_path / "v.onnx")
    x = Preprocessor(model.config.preprocess)(sorted(smooth_images(tmp_path / "c").glob("*.png")))
    return x, ort_outputs(tmp_path / "v.onnx", x[8:])


def _max_weight(path) -> int:
    """The largest |int8| of the graph's quantized MatMul weights."""
    model = onnx.load(str(path))
    ints = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max(int(np.abs(a.astype(np.int16)).max()) for a in ints if a.size > 16)


@pytest.mark.parametrize(("flags", "bits"), [(X86_VNNI, 8), (X86_AVX2, 7)])
def test_the_cpu_target_takes_the_building_cpus_width(tmp_path, monkeypatch, flags, bits):
    from lbedge.quantize.int8 import Int8Config, quantize_int8

    monkeypatch.setattr(cpu, "cpu_flags", lambda cpuinfo=None: cpu_flags(flags))
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    x, ref = _calibration(tmp_path)
    rep = quantize_int8(
        tmp_path / "v.onnx", tmp_path / "q.onnx", x[:0], holdout=x[8:], reference=ref, config=Int8Config(target="cpu")
    )
    assert rep.weight_bits == bits and rep.to_dict()["weight_bits"] == bits and "built on x86" in rep.weight_bits_reason
    biggest = _max_weight(tmp_path / "q.onnx")
    assert (biggest > 64) if bits == 8 else (biggest <= 64)
    assert rep.agreement.min_cosine > 0.99
    forced = quantize_int8(
        tmp_path / "v.onnx", tmp_path / "r.onnx", x[:0], config=Int8Config(target="cpu", reduce_range=bits == 8)
    )
    assert forced.weight_bits == 15 - bits and "asked for" in forced.weight_bits_reason


def test_dynamic_int8_needs_held_out_inputs_not_calibration(tmp_path, make_checkpoint):
    from click.testing import CliRunner

    from lbedge.bundle import Manifest
    from lbedge.cli import main
    from test_deploy import smooth_images

    val = smooth_images(tmp_path / "val", n=4)
    ckpt = make_checkpoint("thermal", seed=4)
    run = CliRunner().invoke
    assert run(main, ["export", "-m", str(ckpt), "-o", str(tmp_path / "b")]).exit_code == 0
    r = run(main, ["quantize", "-m", str(tmp_path / "b"), "-p", "int8", "--int8-target", "cpu"])
    assert r.exit_code == 2 and "--val" in r.output and "calibrates nothing" in r.output
    r = run(main, ["quantize", "-m", str(tmp_path / "b"), "-p", "int8", "--int8-target", "cpu", "--method", "minmax"])
    assert r.exit_code == 2 and "--calib" in r.output
    r = run(
        main, ["quantize", "-m", str(tmp_path / "b"), "-p", "int8", "--int8-target", "tensorrt", "--weight-bits", "7"]
    )
    assert r.exit_code == 2 and "cpu target" in r.output
    r = run(main, ["quantize", "-m", str(tmp_path / "b"), "-p", "int8", "--int8-target", "cpu", "--val", str(val)])
    assert r.exit_code == 0, r.output
    details = Manifest.read(tmp_path / "b").towers["vision"]["int8"].details
    assert details["calibration_files"] == 0 and details["holdout_files"] == 4
    assert details["int8"]["method"] == "dynamic" and details["int8"]["weight_bits"] in (7, 8)


def test_an_8_bit_bundle_on_a_cpu_without_vnni_says_so(tmp_path, monkeypatch, caplog):
    from lbedge.bundle import Manifest, choose_tower
    from lbedge.quantize.bundle_build import build_bundle
    from lbedge.quantize.int8 import Int8Config
    from test_deploy import smooth_images

    out = tmp_path / "b"
    build_bundle(
        OFFICIAL / "image",
        out,
        precisions=("fp32", "int8"),
        calib=[smooth_images(tmp_path / "c")],
        int8_config=Int8Config(target="cpu", reduce_range=False),
    )
    man = Manifest.read(out)
    assert man.towers["vision"]["int8"].details["int8"]["weight_bits"] == 8
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "cpu_flags", lambda cpuinfo=None: cpu_flags(X86_VNNI))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lbedge"):
        choice = choose_tower(man, out, "vision", "onnxruntime", "int8")
    assert choice.reason == "ONNX Runtime" and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.setattr(cpu, "cpu_flags", lambda cpuinfo=None: cpu_flags(X86_AVX2))
    with caplog.at_level(logging.WARNING, logger="lbedge"):
        choice = choose_tower(man, out, "vision", "onnxruntime", "int8")
    assert choice.precision == "int8" and "--weight-bits 7" in choice.reason
    assert any("8-bit weights" in r.getMessage() for r in caplog.records)
