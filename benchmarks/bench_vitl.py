"""Real-size LanguageBind towers on this machine: PyTorch eager FP32 vs ONNX Runtime FP32 / FP16 / INT8.

Random weights (speed does not depend on them; accuracy figures on random weights are a lower bound
of what trained weights give, see RESULTS.md). Run from the repository root:

    .venv/bin/python benchmarks/bench_vitl.py --out benchmarks/results_vitl.json

Everything runs in this one process: the FP32 GEMM rate of the machine, the eager forward, the
exports, the INT8 calibration (on the official sample media and derived frames), and the ORT runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "languagebind_samples"


def vitl_config(modality: str) -> dict:
    vc = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        lora_r=0,
    )
    if modality == "audio":
        vc.update(num_mel_bins=112, target_length=1036)
    arch = "LanguageBind" + modality.capitalize()
    return {
        "model_type": arch,
        "architectures": [arch],
        "projection_dim": 768,
        "vision_config": vc,
        "text_config": dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=49408
        ),
    }


def gemm_rate(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    n, t = 10, time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - t) / 1e9


def calib_inputs(modality: str, pre) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out inputs from the official sample media (crops, flips and scales of them)."""
    import cv2

    if modality == "audio":
        from lbedge.preprocess.audio import read_audio_file

        clips = [read_audio_file(SAMPLES / "audio" / f) for f in ("0.wav", "1.wav")]
        xs = []
        for i in range(10):
            c = clips[i % 2]
            s = c.samples[:, (i * 3000) % 40000 :]
            xs.append(pre.one((s * (0.5 + 0.1 * i), c.sample_rate)))
        held = [pre.one(SAMPLES / "audio" / "0.wav"), pre.one(SAMPLES / "audio" / "1.wav")]
        return np.stack(xs), np.stack(held)
    imgs = [cv2.imread(str(SAMPLES / d / f))[..., ::-1] for d in ("image", "thermal") for f in ("0.jpg", "1.jpg")]
    xs = []
    for i in range(12):
        im = imgs[i % 4]
        h, w = im.shape[:2]
        crop = im[(i * 7) % (h // 4) :, (i * 5) % (w // 4) :]
        xs.append(pre.one(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop)))
    held = [
        pre.one(SAMPLES / "image" / "0.jpg"),
        pre.one(SAMPLES / "image" / "1.jpg"),
        pre.one(SAMPLES / "thermal" / "0.jpg"),
        pre.one(SAMPLES / "thermal" / "1.jpg"),
    ]
    return np.stack(xs), np.stack(held)


def measure(fn, warmup=1, iters=5) -> dict:
    from lbedge.bench import time_fn

    ms = time_fn(fn, warmup=warmup, iters=iters)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "iters": len(ms),
    }


def rss_of_bundle(folder: Path, precision: str, threads: int) -> dict:
    """Peak RSS (MiB) of a fresh process that loads the bundle and embeds one input, before and after the text
    tower is used (with a warm prompt cache a deployed classifier never loads the text graph)."""
    code = (
        "import sys, numpy as np; from lbedge.bundle import load_bundle; from lbedge.bench import peak_rss_mb; "
        f"e = load_bundle(sys.argv[1], precision='{precision}', threads={threads}); "
        "x = np.zeros((1, *e.input_shape), np.float32); e.embed(x); a = peak_rss_mb(); e.embed_text(['a dog']); "
        "assert 'torch' not in sys.modules; print(a, peak_rss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True, text=True)
    vision_only, with_text = (round(float(v), 1) for v in out.stdout.strip().splitlines()[-1].split())
    return {"vision_only_mb": vision_only, "with_text_tower_mb": with_text}


def run(modality: str, threads: int, work: Path) -> dict:
    import torch

    from lbedge.checkpoint import save_pretrained
    from lbedge.config import ModelConfig
    from lbedge.models.towers import LanguageBindModel
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.bundle_build import add_fp16, add_int8, export_bundle
    from lbedge.quantize.calibration import InputSet
    from lbedge.quantize.export import ort_outputs, tower_module
    from lbedge.quantize.int8 import Int8Config, quantize_int8
    from lbedge.quantize.onnx_utils import agreement

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    cfg = ModelConfig.from_dict(vitl_config(modality))
    model = LanguageBindModel(cfg).eval()
    ckpt = save_pretrained(model, work / f"ckpt_{modality}", tokenizer_dir=ROOT / "tests/fixtures/official/tokenizer")
    pre = Preprocessor(cfg.preprocess)
    calib, held = calib_inputs(modality, pre)
    vision = tower_module(model, "vision")
    flops = None
    x1 = torch.from_numpy(held[:1])
    res: dict = {
        "modality": modality,
        "input_shape": list(cfg.preprocess.input_shape),
        "params_vision_M": round(sum(p.numel() for p in model.vision_model.parameters()) / 1e6, 1),
    }
    with torch.inference_mode():
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            vision(x1)
        flops = fc.get_total_flops()
        res["vision_gflop"] = round(flops / 1e9, 1)
        res["torch_eager_fp32"] = measure(lambda: vision(x1))
        text = tower_module(model, "text")
        ids = torch.full((1, 77), 49407, dtype=torch.int64)
        ids[0, :4] = torch.tensor([49406, 320, 1929, 269])
        res["text_torch_eager_fp32"] = measure(lambda: text(ids))
    t = time.perf_counter()
    bundle = work / f"bundle_{modality}"
    export_bundle(ckpt, bundle, inputs=held[:2])
    res["export_seconds"] = round(time.perf_counter() - t, 1)
    if modality == "image":
        t = time.perf_counter()
        add_fp16(bundle, inputs=held, towers=("vision",))
        res["fp16_seconds"] = round(time.perf_counter() - t, 1)
    # the CPU deployment flavour goes into the bundle (U8S8, MinMax calibration)
    t = time.perf_counter()
    man = add_int8(
        bundle,
        InputSet(calib, [Path(f"c{i}") for i in range(len(calib))]),
        holdout=InputSet(held, [Path(f"h{i}") for i in range(len(held))]),
        config=Int8Config(target="cpu"),
    )
    res["int8_cpu_seconds"] = round(time.perf_counter() - t, 1)
    res["int8_cpu_report"] = man.towers["vision"]["int8"].details["int8"]
    graphs = {"fp32": bundle / "vision.fp32.onnx", "int8_cpu": bundle / "vision.int8.onnx"}
    if modality == "image":
        graphs["fp16"] = bundle / "vision.fp16.onnx"
        t = time.perf_counter()  # the TensorRT flavour (S8S8 symmetric) beside it, for comparison
        ref_h = ort_outputs(bundle / "vision.fp32.onnx", held, threads=threads)
        rep = quantize_int8(
            bundle / "vision.fp32.onnx",
            work / "vision.int8_tensorrt.onnx",
            calib,
            holdout=held,
            reference=ref_h,
            config=Int8Config(target="tensorrt", method="minmax"),
        )
        res["int8_tensorrt_seconds"] = round(time.perf_counter() - t, 1)
        res["int8_tensorrt_report"] = rep.to_dict()
        graphs["int8_tensorrt"] = work / "vision.int8_tensorrt.onnx"
    ref = ort_outputs(bundle / "vision.fp32.onnx", held, threads=threads)
    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend

    for prec, path in graphs.items():
        be = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], threads=threads)
        xb = held[:1]
        res[f"ort_{prec}"] = measure(lambda be=be, xb=xb: be.run({"pixel_values": xb}))
        res[f"ort_{prec}"]["agreement_vs_fp32"] = agreement(ref, be.run({"pixel_values": held})["embeds"]).to_dict()
    tb = OnnxRuntimeBackend(bundle / "text.fp32.onnx", providers=["CPUExecutionProvider"], threads=threads)
    res["text_ort_fp32"] = measure(lambda: tb.run({"input_ids": ids.numpy().astype(np.int32)}))
    gf = flops / 1e9
    for k in ("torch_eager_fp32", *(f"ort_{p}" for p in graphs)):
        res[k]["gflop_per_s"] = round(gf / (res[k]["p50_ms"] / 1000), 1)
    res["speedup_int8_cpu_vs_eager"] = round(res["torch_eager_fp32"]["p50_ms"] / res["ort_int8_cpu"]["p50_ms"], 2)
    res["speedup_ort_fp32_vs_eager"] = round(res["torch_eager_fp32"]["p50_ms"] / res["ort_fp32"]["p50_ms"], 2)
    res["peak_rss_mb_int8_bundle"] = rss_of_bundle(bundle, "int8", threads)
    res["bundle_mb"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(bundle.glob("*.onnx*"))}
    return res


def timing_only(modality: str, threads: int, work: Path) -> dict:
    """Re-time the graphs a previous full run left in ``work`` (eager and ORT in one quiet process)."""
    import torch

    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from lbedge.checkpoint import load_model
    from lbedge.quantize.export import tower_module

    torch.set_num_threads(threads)
    model = load_model(work / f"ckpt_{modality}")
    shape = model.config.preprocess.input_shape
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    vision, text = tower_module(model, "vision"), tower_module(model, "text")
    ids = np.full((1, 77), 49407, np.int32)
    ids[0, :4] = [49406, 320, 1929, 269]
    out: dict = {}
    with torch.inference_mode():
        out["torch_eager_fp32"] = measure(lambda: vision(torch.from_numpy(x)))
        out["text_torch_eager_fp32"] = measure(lambda: text(torch.from_numpy(ids)))
    graphs = {
        "ort_fp32": work / f"bundle_{modality}" / "vision.fp32.onnx",
        "ort_fp16": work / f"bundle_{modality}" / "vision.fp16.onnx",
        "ort_int8_cpu": work / f"bundle_{modality}" / "vision.int8.onnx",
        "ort_int8_tensorrt": work / "vision.int8_tensorrt.onnx",
    }
    for name, path in graphs.items():
        if path.is_file() and (modality == "image" or "tensorrt" not in name):
            be = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], threads=threads)
            out[name] = measure(lambda be=be: be.run({"pixel_values": x}))
    tb = OnnxRuntimeBackend(
        work / f"bundle_{modality}" / "text.fp32.onnx", providers=["CPUExecutionProvider"], threads=threads
    )
    out["text_ort_fp32"] = measure(lambda: tb.run({"input_ids": ids}))
    return out


def requantize_cpu(modality: str, work: Path) -> dict:
    """Re-make the bundle's cpu-target INT8 graph with the current default recipe; its report."""
    from lbedge.bundle import Manifest
    from lbedge.config import PreprocessConfig
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.bundle_build import add_int8
    from lbedge.quantize.calibration import InputSet
    from lbedge.quantize.int8 import Int8Config

    bundle = work / f"bundle_{modality}"
    pre = Preprocessor(PreprocessConfig.from_dict(Manifest.read(bundle).preprocess))
    calib, held = calib_inputs(modality, pre)
    t = time.perf_counter()
    man = add_int8(
        bundle,
        InputSet(calib, [Path(f"c{i}") for i in range(len(calib))]),
        holdout=InputSet(held, [Path(f"h{i}") for i in range(len(held))]),
        config=Int8Config(target="cpu"),
    )
    return {
        "int8_cpu_seconds": round(time.perf_counter() - t, 1),
        "int8_cpu_report": man.towers["vision"]["int8"].details["int8"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="Only re-time eager vs ORT on the graphs a full run left in --work; merge into --out.",
    )
    ap.add_argument(
        "--requantize-cpu",
        action="store_true",
        help="With --timing-only: first re-make the cpu INT8 graph with the current default recipe.",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modalities", default="image,audio")
    ap.add_argument(
        "--out",
        default=str(ROOT / "build" / "benchmarks" / "results_vitl.json"),
        help="output JSON",
    )
    ap.add_argument("--work", default=None, help="Keep the exported bundles here (default: a temp folder).")
    args = ap.parse_args()
    if args.timing_only:
        res = json.loads(Path(args.out).read_text())
        if args.requantize_cpu:
            for m in args.modalities.split(","):
                res[m].update(requantize_cpu(m, Path(args.work)))
                res["requantize_command"] = " ".join(sys.argv)
        for m in args.modalities.split(","):
            res[m]["peak_rss_mb_int8_bundle"] = rss_of_bundle(Path(args.work) / f"bundle_{m}", "int8", args.threads)
        res["gemm_fp32_gflop_per_s"] = round(gemm_rate(args.threads), 1)
        res["timing_command"] = " ".join(sys.argv)
        for m in args.modalities.split(","):
            t = timing_only(m, args.threads, Path(args.work))
            for k, v in t.items():
                res[m].setdefault(k, {}).update(v)
            gf = res[m]["vision_gflop"]
            for k in t:
                if k.startswith(("torch_eager", "ort_")) and "text" not in k:
                    res[m][k]["gflop_per_s"] = round(gf / (res[m][k]["p50_ms"] / 1000), 1)
            res[m]["speedup_int8_cpu_vs_eager"] = round(
                res[m]["torch_eager_fp32"]["p50_ms"] / res[m]["ort_int8_cpu"]["p50_ms"], 2
            )
            res[m]["speedup_ort_fp32_vs_eager"] = round(
                res[m]["torch_eager_fp32"]["p50_ms"] / res[m]["ort_fp32"]["p50_ms"], 2
            )
            print(json.dumps({m: t}), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        return
    out = {
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "gemm_fp32_gflop_per_s": round(gemm_rate(args.threads), 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for m in args.modalities.split(","):
            out[m] = run(m, args.threads, work)
            print(json.dumps(out[m], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}))


if __name__ == "__main__":
    main()
