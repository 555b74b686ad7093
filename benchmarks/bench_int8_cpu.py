"""INT8 on this CPU, against its own kernel ceiling: the ViT-L/14 image tower (random weights, as bench_vitl.py)
in FP32 and in the cpu target's dynamic INT8 with 7-bit and 8-bit weights, with and without fused attention.

    .venv/bin/python benchmarks/bench_int8_cpu.py [--rounds 3] [--out FILE.json]

One process. The FP32 graph is exported once and quantized three ways. Per graph: the worst and mean embedding
cosine to FP32 on the held-out inputs (the official sample media and frames derived from them), and two speeds:

- ``cpu_ms``: CPU time of one forward pass on one thread (ONNX Runtime runs a one-thread session on the calling
  thread, so ``time.thread_time`` measures the pass itself). Other work on the machine barely changes it: the
  figure to compare on a shared machine.
- ``wall_ms``: p50 wall time of 5 runs at ``--threads`` (2), in alternating rounds (median over the rounds).

The kernel ceiling: ONNX Runtime's INT8 ``MatMulInteger`` (U8S8, then the dynamic ``DynamicQuantizeMatMul`` path)
and FP32 ``MatMul`` on one ViT-L MLP shape (257x1024 @ 1024x4096), CPU time on one thread, as GOP/s; each tower's
rate (its 155.5 GOP over its ``cpu_ms``) is then a fraction of the INT8 ceiling. CPU model and flags recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_vitl import calib_inputs, vitl_config  # noqa: E402

TOWER_GOP = 155.5  # the image tower at batch 1 (2 x multiply-adds, FlopCounterMode; RESULTS.md)
M, K, N = 257, 1024, 4096  # one ViT-L MLP matmul


def cpu_record() -> dict:
    from lbedge.cpu import EXACT_X86_INT8, cpu_flags, cpu_model, int8_weight_bits

    keep = ("avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_tile", *EXACT_X86_INT8)
    return {
        "model": cpu_model(),
        "flags": sorted(f for f in cpu_flags() if f in keep),
        "lbedge_weight_bits": int8_weight_bits().bits,
    }


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def cpu_ms(sess, feed: dict, runs: int = 3) -> float:
    """Median CPU time of one run on the calling thread (a one-thread session)."""
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.thread_time()
        sess.run(None, feed)
        times.append((time.thread_time() - t) * 1000)
    return statistics.median(times)


def wall_ms(sess, feed: dict, runs: int = 5) -> float:
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def kernel_ceiling(work: Path) -> dict:
    """GOP/s of ONNX Runtime's FP32 MatMul, INT8 MatMulInteger and dynamic INT8 MatMul on one thread."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    w = rng.standard_normal((K, N)).astype(np.float32) * 0.02
    x = rng.standard_normal((1, M, K)).astype(np.float32)
    fp32 = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "mm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, M, K])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, M, N])],
            [numpy_helper.from_array(w, "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(fp32, str(work / "mm.onnx"))
    quantize_dynamic(str(work / "mm.onnx"), str(work / "mm.int8.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    xi = rng.integers(0, 255, (1, M, K), dtype=np.uint8)
    wi = rng.integers(-127, 127, (K, N), dtype=np.int8)
    integer = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
            "mmi",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, M, K])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [1, M, N])],
            [numpy_helper.from_array(wi, "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save(integer, str(work / "mmi.onnx"))
    gop = 2 * M * K * N / 1e9
    out = {}
    for name, path, feed in (
        ("fp32_matmul", work / "mm.onnx", {"x": x}),
        ("int8_matmulinteger", work / "mmi.onnx", {"x": xi}),
        ("int8_dynamic_matmul", work / "mm.int8.onnx", {"x": x}),
    ):
        out[name] = round(gop / (cpu_ms(session(path, 1), feed, runs=20) / 1000), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "benchmarks" / "results_int8_cpu.json")
    args = ap.parse_args()

    import torch

    from lbedge.config import ModelConfig
    from lbedge.models.towers import LanguageBindModel
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.export import export_tower, ort_outputs
    from lbedge.quantize.int8 import Int8Config, quantize_int8
    from lbedge.quantize.onnx_utils import agreement

    record: dict = {"cpu": cpu_record(), "threads": args.threads, "tower_gop": TOWER_GOP}
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(vitl_config("image"))
    model = LanguageBindModel(cfg).eval()
    _, held = calib_inputs("image", Preprocessor(cfg.preprocess))
    record["held_out"] = len(held)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        record["kernel_gops_one_thread"] = kernel_ceiling(work)
        print("kernels (GOP/s, one thread):", record["kernel_gops_one_thread"], flush=True)
        fp32 = work / "vision.fp32.onnx"
        export_tower(model, "vision", fp32)
        del model
        ref = ort_outputs(fp32, held)
        graphs = {"fp32": fp32}
        variants = {
            "int8_7bit": Int8Config(target="cpu", reduce_range=True, fuse_attention=False),
            "int8_8bit": Int8Config(target="cpu", reduce_range=False, fuse_attention=False),
            "int8_8bit_fused": Int8Config(target="cpu", reduce_range=False, fuse_attention=True),
        }
        for name, config in variants.items():
            dst = work / f"vision.{name}.onnx"
            t = time.perf_counter()
            rep = quantize_int8(fp32, dst, held[:0], config=config)
            agree = agreement(ref, ort_outputs(dst, held))
            record[name] = {
                "quantize_seconds": round(time.perf_counter() - t, 1),
                "weight_bits": rep.weight_bits,
                "fused_attention": rep.fused_attention,
                "min_cosine": round(agree.min_cosine, 6),
                "mean_cosine": round(agree.mean_cosine, 6),
            }
            graphs[name] = dst
            print(name, record[name], flush=True)
        feed = {"pixel_values": held[:1]}
        one = {k: session(p, 1) for k, p in graphs.items()}
        many = {k: session(p, args.threads) for k, p in graphs.items()}
        cpu_rounds: dict[str, list[float]] = {k: [] for k in graphs}
        wall_rounds: dict[str, list[float]] = {k: [] for k in graphs}
        for r in range(args.rounds):
            for name in graphs:
                cpu_rounds[name].append(cpu_ms(one[name], feed))
                wall_rounds[name].append(wall_ms(many[name], feed))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} cpu-ms" for k, v in cpu_rounds.items()), flush=True)
    int8_ceiling = record["kernel_gops_one_thread"]["int8_matmulinteger"]
    for name in graphs:
        row = record.setdefault(name, {})
        row["cpu_ms_per_round"] = [round(t, 1) for t in cpu_rounds[name]]
        row["cpu_ms"] = round(statistics.median(cpu_rounds[name]), 1)
        row["wall_ms_per_round"] = [round(t, 1) for t in wall_rounds[name]]
        row["wall_ms"] = round(statistics.median(wall_rounds[name]), 1)
        row["gops_one_thread"] = round(TOWER_GOP / (row["cpu_ms"] / 1000), 1)
        row["fraction_of_int8_kernel"] = round(row["gops_one_thread"] / int8_ceiling, 3)
        row["speedup_vs_fp32_cpu"] = round(record["fp32"]["cpu_ms"] / row["cpu_ms"], 2) if "fp32" in record else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
