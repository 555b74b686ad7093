"""BF16 on PyTorch: which CPUs compute it natively, checkpoints loaded in BF16 through the API and the CLI,
their agreement with FP32, and the refusals (bundles have no BF16 graphs; a typo names the choices)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import OFFICIAL, SAMPLES, needs_samples
from lbedge.cpu import bf16_support

torch = pytest.importorskip("torch")
CKPT = OFFICIAL / "image"


@pytest.mark.parametrize(
    "machine,flags,native",
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
        ("x86_64", {"avx2", "avx512f", "avx512_bf16"}, True),
        ("x86_64", {"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}, True),
        ("x86_64", set(), False),
        ("aarch64", {"asimd", "asimddp"}, False),  # Jetson Orin's Cortex-A78AE
        ("aarch64", {"asimd", "asimddp", "bf16"}, True),  # Neoverse V1 (Graviton3)
        ("riscv64", set(), False),
    ],
)
def test_bf16_support_reads_the_cpu_flags(machine, flags, native):
    here = bf16_support(frozenset(flags), machine)
    assert here.native is native
    assert ("amx_bf16" in here.reason) == ("amx_bf16" in flags)  # the reason names the fastest unit found


def test_a_checkpoint_in_bf16_agrees_with_fp32():
    import lbedge

    pixels = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    fp32 = lbedge.from_pretrained(CKPT)
    bf16 = lbedge.load(CKPT, precision="bf16", text_precision="bf16")
    assert bf16.precision == {"vision": "bf16", "text": "bf16"} and fp32.precision["vision"] == "fp32"
    a, b = fp32.embed(pixels), bf16.embed(pixels)
    assert b.dtype == np.float32 and b.shape == a.shape and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # it really ran in BF16
    assert (a * b).sum(axis=1).min() > 0.99
    ta, tb = fp32.embed_text(["a parakeet", "a lion"]), bf16.embed_text(["a parakeet", "a lion"])
    assert (ta * tb).sum(axis=1).min() > 0.99
    # BF16 text embeddings are not FP32 ones: prompt caches keep them apart
    assert fp32.text_fingerprint != bf16.text_fingerprint
    mixed = lbedge.load(CKPT, precision="bf16")
    assert mixed.precision == {"vision": "bf16", "text": "fp32"} and mixed.text_fingerprint == fp32.text_fingerprint


def test_emulated_bf16_is_named_on_a_cpu_without_bf16_units(monkeypatch, caplog):
    import lbedge
    from lbedge import cpu

    monkeypatch.setattr(cpu, "bf16_support", lambda: cpu.Bf16Support(False, "x86 without AMX-BF16 or AVX512-BF16"))
    with caplog.at_level(logging.WARNING, logger="lbedge.checkpoint"):
        lbedge.load(CKPT, precision="bf16")
    assert "without AMX-BF16" in caplog.text and "INT8 bundle" in caplog.text
    caplog.clear()
    monkeypatch.setattr(cpu, "bf16_support", lambda: cpu.Bf16Support(True, "x86 with amx_bf16"))
    with caplog.at_level(logging.WARNING, logger="lbedge.checkpoint"):
        lbedge.load(CKPT, precision="bf16")
    assert "BF16" not in caplog.text


def test_bf16_is_refused_where_it_cannot_run(tmp_path):
    import lbedge
    from lbedge.errors import UsageError
    from lbedge.quantize.bundle_build import export_bundle

    with pytest.raises(UsageError, match="fp32 or bf16"):
        lbedge.load(CKPT, precision="fp16")
    with pytest.raises(UsageError, match="fp32 or bf16"):
        lbedge.from_pretrained(CKPT, precision="bf61")
    bundle = tmp_path / "image"
    export_bundle(CKPT, bundle)
    with pytest.raises(UsageError, match="checkpoint folder"):
        lbedge.load(bundle, precision="bf16")


@needs_samples
def test_the_cli_classifies_with_a_bf16_checkpoint(monkeypatch, tmp_path):
    from lbedge.cli import main

    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))
    files = [str(SAMPLES / "image" / "0.jpg"), str(SAMPLES / "image" / "1.jpg")]
    args = ["classify", "-m", str(CKPT), "-l", "parakeet,lion,room", "--json", *files]
    runs = [CliRunner().invoke(main, args + extra) for extra in ([], ["-p", "bf16"])]
    assert all(r.exit_code == 0 for r in runs), runs[0].output + runs[1].output
    fp32, bf16 = ([json.loads(line) for line in r.stdout.splitlines()] for r in runs)
    assert len(fp32) == len(bf16) == 2
    for a, b in zip(fp32, bf16):
        assert a["label"] == b["label"]
        assert abs(a["top"][0]["score"] - b["top"][0]["score"]) < 0.05


def test_bench_times_a_checkpoint_in_fp32_and_bf16(tmp_path):
    from lbedge.cli import main
    from lbedge.quantize.bundle_build import export_bundle

    args = ["bench", "-m", str(CKPT), "--iters", "1", "--warmup", "0", "--json", "-p", "fp32", "-p", "bf16"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    got = {(row["stage"], row["precision"]) for row in rows if row["stage"] != "preprocess"}
    assert got == {(t, p) for t in ("vision", "text") for p in ("fp32", "bf16")}
    r = CliRunner().invoke(main, ["bench", "-m", str(CKPT), "-p", "int8"])
    assert r.exit_code == 2 and "fp32 or bf16" in r.output
    export_bundle(CKPT, tmp_path / "image")
    r = CliRunner().invoke(main, ["bench", "-m", str(tmp_path / "image"), "-p", "bf16"])
    assert r.exit_code == 2 and "checkpoint folder" in r.output
