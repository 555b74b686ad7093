"""NVIDIA ModelOpt ONNX INT8 PTQ vs onnxruntime ``quantize_static`` QDQ (lbedge's ``tensorrt`` target) on the
real-size ViT-L/14 image tower, for TensorRT explicit quantization. Runs on CPUs only.

Two Python environments take part, and this script drives both (run it with the repository's venv):

* the repository venv (lbedge, onnxruntime CPU): calibration / held-out inputs, FP32 reference outputs,
  cosine, ONNX Runtime CPU latency, graph analysis and lbedge's TensorRT op-support check;
* a separate venv with ``nvidia-modelopt[onnx]`` (it pulls onnxruntime-gpu, cupy and a CUDA torch, so it
  must never go into the repository venv), e.g.
  ``python3 -m venv /tmp/moenv && /tmp/moenv/bin/pip install "nvidia-modelopt[onnx]==0.47.*" numpy``.
  It only runs ``modelopt.onnx.quantization.quantize`` (one subprocess per method, with a time limit).

Usage, from the repository root::

    .venv/bin/python benchmarks/modelopt_vs_ort.py --moenv /tmp/moenv --work /tmp/moe \
        --fp32 /tmp/vitl_bench/bundle_image/vision.fp32.onnx \
        --ort-int8 /tmp/vitl_bench/vision.int8_tensorrt.onnx \
        --methods max,entropy,max:dq_only,max:exclude=LayerNormalization+Add+Mul \
        --out benchmarks/results_modelopt.json

Graphs already quantized in ``--work`` are reused unless ``--requantize`` is given (their recorded
quantization time is kept). Weights are random, so cosine figures are a lower bound of trained weights'.
The ORT graph's quantization time is read from ``benchmarks/results_vitl.json`` (lbedge's bench run).
Layers modelopt leaves in float run in ``--high-precision`` (fp32 here, like the ORT graph; modelopt's own
default is fp16). A last diagnostic copies the ORT graph's calibrated Softmax-output scales into the modelopt
graph (modelopt fixes them to 1/127) and re-measures cosine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "languagebind_samples"
WEIGHTED = ("MatMul", "Conv", "Gemm")


# ----------------------------------------------------------------------------------------------- inputs
def make_inputs(work: Path) -> dict:
    """calib.npy (12) and held.npy (4): the inputs of ``calib_inputs("image", pre)`` in bench_vitl.py."""
    import lbedge

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_vitl import calib_inputs

    calib, held = calib_inputs("image", lbedge.Preprocessor(lbedge.PreprocessConfig("image")))
    calib, held = calib.astype(np.float32), held.astype(np.float32)
    np.save(work / "calib.npy", calib)
    np.save(work / "held.npy", held)
    return {
        "calib_shape": list(calib.shape),
        "held_shape": list(held.shape),
        "held_files": ["image/0.jpg", "image/1.jpg", "thermal/0.jpg", "thermal/1.jpg"],
        "preprocess": "lbedge.Preprocessor(lbedge.PreprocessConfig('image'))",
    }


# ------------------------------------------------------------------------------- modelopt (child process)
def modelopt_child(args: argparse.Namespace) -> None:
    """Runs inside the modelopt venv: quantize once, write a small JSON beside the graph."""
    import modelopt
    from modelopt.onnx.quantization import quantize

    calib = np.load(Path(args.work) / "calib.npy")
    t = time.perf_counter()
    quantize(
        onnx_path=args.src,
        quantize_mode="int8",
        calibration_data=calib,
        calibration_method=args.method,
        calibration_eps=["cpu"],
        high_precision_dtype=args.high_precision,
        dq_only=args.dq_only,
        op_types_to_exclude=[o for o in args.exclude.split("+") if o] or None,
        output_path=args.dst,
        log_file=args.dst + ".log",
    )
    secs = time.perf_counter() - t
    import onnxruntime

    Path(args.dst + ".json").write_text(
        json.dumps(
            {
                "seconds": round(secs, 1),
                "method": args.method,
                "high_precision_dtype": args.high_precision,
                "dq_only": args.dq_only,
                "op_types_to_exclude": [o for o in args.exclude.split("+") if o],
                "modelopt": modelopt.__version__,
                "onnxruntime_in_modelopt_venv": onnxruntime.__version__,
            },
            indent=1,
        )
    )


def run_modelopt(
    moenv: Path,
    work: Path,
    src: Path,
    method: str,
    high_precision: str,
    timeout: int,
    requantize: bool,
    dq_only: bool = False,
    exclude: str = "",
) -> dict:
    """``dq_only``: weights stored as int8 initializers + DequantizeLinear (modelopt's default keeps FP32
    weights with QuantizeLinear->DequantizeLinear on them, which TensorRT folds at build time)."""
    tag = ("_dqonly" if dq_only else "") + (f"_no{exclude.replace('+', '')}" if exclude else "")
    dst = work / f"vision.int8_modelopt_{method}_{high_precision}{tag}.onnx"
    info = work / (dst.name + ".json")
    if dst.is_file() and info.is_file() and not requantize:
        return {"path": str(dst), **json.loads(info.read_text()), "reused": True}
    # modelopt writes intermediate files next to its input: give it a link in the work folder
    link = work / "vision.fp32.onnx"
    if not link.exists():
        link.symlink_to(src)
    for p in (dst, info):
        p.unlink(missing_ok=True)
    cmd = [
        str(moenv / "bin" / "python"),
        str(Path(__file__).resolve()),
        "--child-modelopt",
        "--work",
        str(work),
        "--src",
        str(link),
        "--dst",
        str(dst),
        "--method",
        method,
        "--high-precision",
        high_precision,
        *(["--dq-only"] if dq_only else []),
        "--exclude",
        exclude,
    ]
    t = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        )
    except subprocess.TimeoutExpired:
        return {"path": None, "error": f"stopped after {timeout} s (time limit)", "method": method}
    (work / (dst.name + ".stdout")).write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode != 0 or not info.is_file():
        tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
        return {
            "path": None,
            "method": method,
            "returncode": p.returncode,
            "error": "\n".join(tail),
            "wall_seconds": round(time.perf_counter() - t, 1),
        }
    return {"path": str(dst), **json.loads(info.read_text()), "wall_seconds": round(time.perf_counter() - t, 1)}


# ---------------------------------------------------------------------------------------- graph analysis
def _category(name: str, op: str) -> str:
    rules = [
        (r"patch_embedding", "patch_embedding_conv"),
        (r"(q|k|v)_proj/MatMul", "attn_qkv_proj"),
        (r"out_proj/MatMul", "attn_out_proj"),
        (r"self_attn/MatMul_1$", "attn_bmm2_probs_x_v"),
        (r"self_attn/MatMul$", "attn_bmm1_q_x_kT"),
        (r"fc1/MatMul", "mlp_fc1"),
        (r"fc2/MatMul", "mlp_fc2"),
        (r"visual_projection/MatMul", "visual_projection"),
    ]
    if op in WEIGHTED:
        for pat, cat in rules:
            if re.search(pat, name):
                return cat
        return f"other_{op}"
    if op == "Add":
        if re.search(r"(_proj|fc1|fc2)/Add", name):
            return "bias_add"
        if re.search(r"layers\.\d+/Add(_1)?$", name):
            return "residual_add"
        return "other_add"
    if op in ("Sigmoid",) or re.search(r"mlp/Mul", name):
        return "quick_gelu"
    return op


def analyse(path: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def arr(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ops = Counter(n.op_type for n in g.node)

    def weight_dq(n) -> bool:
        """DequantizeLinear of a weight: int8 initializer -> DQ, or FP32 initializer -> Q -> DQ (modelopt)."""
        if n.op_type != "DequantizeLinear":
            return False
        if n.input[0] in inits:
            return True
        q = producer.get(n.input[0])
        return q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits

    # zero points / dtypes of activation Q nodes and weight DQ nodes
    act = {"count": 0, "dtypes": Counter(), "nonzero_zp": 0, "per_tensor": 0}
    wts = {"count": 0, "dtypes": Counter(), "nonzero_zp": 0, "per_channel": 0, "stored_as": Counter()}
    for n in g.node:
        zp = arr(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        sc = arr(n.input[1]) if len(n.input) > 1 else None
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            act["count"] += 1
            act["dtypes"][str(zp.dtype) if zp is not None else "uint8(no zero point)"] += 1
            act["nonzero_zp"] += int(zp is None or bool(np.any(zp != 0)))  # no zp = uint8 -> asymmetric
            act["per_tensor"] += int(sc is not None and sc.size == 1)
        elif weight_dq(n):
            wts["count"] += 1
            wts["dtypes"][str(zp.dtype) if zp is not None else "uint8(no zero point)"] += 1
            wts["nonzero_zp"] += int(zp is None or bool(np.any(zp != 0)))
            wts["per_channel"] += int(sc is not None and sc.size > 1)
            wts["stored_as"]["int8 initializer -> DQ" if n.input[0] in inits else "fp32 initializer -> Q -> DQ"] += 1
    act["dtypes"], wts["dtypes"], wts["stored_as"] = dict(act["dtypes"]), dict(wts["dtypes"]), dict(wts["stored_as"])
    act["symmetric_int8_zp0"] = act["count"] > 0 and act["nonzero_zp"] == 0 and set(act["dtypes"]) == {"int8"}
    wts["symmetric_int8_zp0"] = wts["count"] > 0 and wts["nonzero_zp"] == 0 and set(wts["dtypes"]) == {"int8"}

    # which compute nodes read quantized inputs / write quantized outputs
    def from_dq(t):
        p = producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    cats: dict[str, dict] = {}
    unquantized_weighted = []
    for n in g.node:
        if n.op_type in (
            "QuantizeLinear",
            "DequantizeLinear",
            "Constant",
            "Shape",
            "Gather",
            "Unsqueeze",
            "Concat",
            "Reshape",
            "Transpose",
            "Equal",
            "Where",
            "Expand",
            "ConstantOfShape",
            "Cast",
            "Identity",
            "Slice",
            "Squeeze",
        ):
            continue
        dyn = [
            i
            for i in n.input
            if i and i not in inits and i not in consts and not (i in producer and weight_dq(producer[i]))
        ]
        wq = [i for i in n.input if i in producer and weight_dq(producer[i])]
        in_q = sum(from_dq(i) for i in dyn)
        out_q = any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, []))
        c = cats.setdefault(
            _category(n.name, n.op_type),
            {"total": 0, "int8_inputs": 0, "some_int8_inputs": 0, "int8_weights": 0, "output_quantized": 0},
        )
        c["total"] += 1
        c["int8_inputs"] += int(bool(dyn) and in_q == len(dyn))
        c["some_int8_inputs"] += int(0 < in_q < len(dyn))
        c["int8_weights"] += int(bool(wq))
        c["output_quantized"] += int(out_q)
        if n.op_type in WEIGHTED and not (dyn and in_q == len(dyn)):
            unquantized_weighted.append(n.name)
    q_dq = {"QuantizeLinear": ops.get("QuantizeLinear", 0), "DequantizeLinear": ops.get("DequantizeLinear", 0)}
    others = {k: v for k, v in sorted(ops.items()) if k not in q_dq}
    float_types = Counter(onnx.TensorProto.DataType.Name(i.data_type) for i in g.initializer)
    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    return {
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "ir_version": m.ir_version,
        "opsets": opsets,
        "nodes": len(g.node),
        "op_counts": {**q_dq, "others_total": sum(others.values()), "others": others},
        "initializer_dtypes": dict(float_types),
        "activation_quantize": act,
        "weight_dequantize": wts,
        "compute_nodes": dict(sorted(cats.items())),
        "weighted_ops_not_int8": unquantized_weighted,
    }


def trt_check(path: Path) -> dict:
    from lbedge.quantize.trt_ops import check_ops

    out = {}
    for rel in ("10", "8.6"):
        try:
            out[rel] = [{"op": i.op, "count": i.count, "problem": i.problem} for i in check_ops(str(path), rel)]
        except Exception as e:  # report, don't stop
            out[rel] = f"error: {type(e).__name__}: {e}"
    return out


# ------------------------------------------------------------------------------------ ORT accuracy, speed
def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_graph(path: Path, held: np.ndarray, threads: int, iters: int) -> tuple[np.ndarray, dict]:
    s = ort_session(path, threads)
    name = s.get_inputs()[0].name
    out = s.run(None, {name: held})[0]
    x1 = held[:1]
    s.run(None, {name: x1})  # warm-up
    load = os.getloadavg()[0]  # other processes on the machine distort CPU latency
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        s.run(None, {name: x1})
        ms.append((time.perf_counter() - t) * 1000)
    del s
    return out, {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
        "runs": iters,
        "batch": 1,
        "threads": threads,
        "loadavg_1min_before": round(load, 2),
    }


def cosine(ref: np.ndarray, got: np.ndarray) -> dict:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    c = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return {
        "min": round(float(c.min()), 6),
        "mean": round(float(c.mean()), 6),
        "per_input": [round(float(v), 6) for v in c],
        "max_abs_diff": round(float(np.abs(ref - got).max()), 6),
    }


def ort_quant_time() -> dict:
    p = ROOT / "benchmarks" / "results_vitl.json"
    try:
        img = json.loads(p.read_text())["image"]
        return {
            "seconds": img["int8_tensorrt_report"]["seconds"],
            "wall_seconds": img.get("int8_tensorrt_seconds"),
            "source": "benchmarks/results_vitl.json image.int8_tensorrt_report (lbedge quantize_int8, "
            "target=tensorrt, minmax, 12 calibration inputs, same machine)",
        }
    except Exception as e:
        return {"seconds": None, "source": f"not available: {e}"}


# ------------------------------------------------------------------------------------------ diagnostic
def softmax_scale_diagnostic(
    mo_path: Path, ort_path: Path, work: Path, ref: np.ndarray, held: np.ndarray, threads: int
) -> dict:
    """modelopt fixes the Softmax output range to [0, 1] (scale 1/127); ORT's graph keeps the calibrated max.
    Copy the ORT graph's calibrated Softmax-output scales into the modelopt graph and re-measure cosine, to
    see how much of the accuracy gap that one choice explains."""
    import onnx
    from onnx import numpy_helper

    def softmax_q_scales(m):
        cons: dict[str, list] = {}
        for n in m.graph.node:
            for i in n.input:
                cons.setdefault(i, []).append(n)
        return {
            n.name: [c.input[1] for c in cons.get(n.output[0], []) if c.op_type == "QuantizeLinear"]
            for n in m.graph.node
            if n.op_type == "Softmax"
        }

    mo, ortm = onnx.load(str(mo_path)), onnx.load(str(ort_path))
    init_mo = {i.name: i for i in mo.graph.initializer}
    init_ort = {i.name: i for i in ortm.graph.initializer}
    s_mo, s_ort = softmax_q_scales(mo), softmax_q_scales(ortm)
    before, after = [], []
    for name, scales in s_mo.items():
        if not scales or not s_ort.get(name):
            continue
        v = numpy_helper.to_array(init_ort[s_ort[name][0]]).astype(np.float32)
        for sn in scales:
            before.append(float(numpy_helper.to_array(init_mo[sn])))
            init_mo[sn].CopyFrom(numpy_helper.from_array(v.reshape(numpy_helper.to_array(init_mo[sn]).shape), sn))
            after.append(float(v))
    dst = work / "diag_modelopt_softmax_scales_from_ort.onnx"
    onnx.save(mo, str(dst))
    del mo, ortm
    s = ort_session(dst, threads)
    out = s.run(None, {s.get_inputs()[0].name: held})[0]
    return {
        "graph": str(mo_path),
        "softmax_output_scales_replaced": len(after),
        "modelopt_softmax_scale": sorted(set(round(b, 8) for b in before)),
        "ort_calibrated_softmax_scale_range": [round(min(after), 8), round(max(after), 8)] if after else None,
        "cosine_vs_fp32_with_ort_softmax_scales": cosine(ref, out),
    }


# ------------------------------------------------------------------------------------------------- main
def versions(moenv: Path) -> dict:
    import onnx
    import onnxruntime

    v = {
        "python": platform.python_version(),
        "repo_venv": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    code = (
        "import json, modelopt, onnx, onnxruntime, numpy; print(json.dumps({'nvidia-modelopt': "
        "modelopt.__version__, 'onnx': onnx.__version__, 'onnxruntime-gpu': onnxruntime.__version__, "
        "'numpy': numpy.__version__}))"
    )
    try:
        v["modelopt_venv"] = json.loads(
            subprocess.run([str(moenv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=300)
            .stdout.strip()
            .splitlines()[-1]
        )
    except Exception as e:
        v["modelopt_venv"] = f"error: {e}"
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/moe")
    ap.add_argument("--moenv", default="/tmp/moenv")
    ap.add_argument("--fp32", default="/tmp/vitl_bench/bundle_image/vision.fp32.onnx")
    ap.add_argument("--ort-int8", default="/tmp/vitl_bench/vision.int8_tensorrt.onnx")
    ap.add_argument(
        "--methods",
        default="max,entropy,max:dq_only",
        help="modelopt runs, in order: a calibration method (max, entropy), ':dq_only' for int8 "
        "weight initializers instead of Q->DQ on FP32 weights, ':exclude=OP+OP' for "
        "op_types_to_exclude (e.g. max:exclude=LayerNormalization+Add+Mul)",
    )
    ap.add_argument(
        "--high-precision",
        default="fp32",
        help="modelopt high_precision_dtype for the layers left in float (fp32: like the ORT graph; "
        "modelopt's default is fp16)",
    )
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per modelopt quantization")
    ap.add_argument("--requantize", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument(
        "--out",
        default=str(ROOT / "build" / "benchmarks" / "results_modelopt.json"),
        help="output JSON",
    )
    ap.add_argument(
        "--diagnostic-only",
        action="store_true",
        help="only (re)run the Softmax-scale diagnostic and merge it into an existing --out",
    )
    # child mode (inside the modelopt venv)
    ap.add_argument("--child-modelopt", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--dq-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--exclude", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_modelopt:
        return modelopt_child(args)

    work, moenv = Path(args.work), Path(args.moenv)
    work.mkdir(parents=True, exist_ok=True)
    diag_graph = work / f"vision.int8_modelopt_max_{args.high_precision}_dqonly.onnx"
    if args.diagnostic_only:
        res = json.loads(Path(args.out).read_text())
        held = np.load(work / "held.npy")
        ref = ort_session(Path(args.fp32), args.threads).run(None, {"pixel_values": held})[0]
        res["softmax_scale_diagnostic"] = softmax_scale_diagnostic(
            diag_graph, Path(args.ort_int8), work, ref, held, args.threads
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        print(res["softmax_scale_diagnostic"])
        return
    t0 = time.perf_counter()
    for stale in work.glob("vision.fp32_*.onnx"):  # modelopt's intermediates, if a run was interrupted
        stale.unlink()
    res: dict = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "gpu": None},
        "fp32_graph": args.fp32,
        "versions": versions(moenv),
        "inputs": make_inputs(work),
    }
    held = np.load(work / "held.npy")

    graphs: dict[str, dict] = {}
    for spec in [m for m in args.methods.split(",") if m]:
        method, _, opt = spec.partition(":")
        exclude = opt.partition("=")[2] if opt.startswith("exclude=") else ""
        q = run_modelopt(
            moenv,
            work,
            Path(args.fp32),
            method,
            args.high_precision,
            args.timeout,
            args.requantize,
            dq_only=opt == "dq_only",
            exclude=exclude,
        )
        key = (
            f"modelopt_{method}"
            + ("_dq_only" if opt == "dq_only" else "")
            + (f"_exclude_{exclude.replace('+', '_')}" if exclude else "")
        )
        graphs[key] = {
            "quantizer": f"modelopt.onnx.quantization.quantize int8 {method}"
            + (" dq_only=True" if opt == "dq_only" else "")
            + (f" op_types_to_exclude={exclude.split('+')}" if exclude else ""),
            **q,
        }
        print(f"{key}: {q.get('seconds', q.get('error'))}", flush=True)
    graphs["ort_static_tensorrt"] = {
        "quantizer": "onnxruntime quantize_static via lbedge (target=tensorrt, "
        "S8S8, per-channel symmetric weights, MinMax)",
        "path": args.ort_int8,
        **ort_quant_time(),
    }

    ref, res["fp32"] = run_graph(Path(args.fp32), held, args.threads, args.iters)
    res["fp32"] = {"ort_cpu_latency": res["fp32"], "file_mb": round(Path(args.fp32).stat().st_size / 2**20, 1)}
    print("fp32 done", res["fp32"], flush=True)
    for name, gr in graphs.items():
        if not gr.get("path"):
            continue
        p = Path(gr["path"])
        gr["graph"] = analyse(p)
        gr["trt_check_ops"] = trt_check(p)
        try:
            out, lat = run_graph(p, held, args.threads, args.iters)
            gr["cosine_vs_fp32"] = cosine(ref, out)
            gr["ort_cpu_latency"] = lat
        except Exception as e:
            gr["ort_error"] = f"{type(e).__name__}: {e}"
        print(name, gr.get("cosine_vs_fp32"), gr.get("ort_cpu_latency"), flush=True)
    res["graphs"] = graphs
    if diag_graph.is_file():
        res["softmax_scale_diagnostic"] = softmax_scale_diagnostic(
            diag_graph, Path(args.ort_int8), work, ref, held, args.threads
        )
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    res["notes"] = [
        "random weights: cosine on trained weights is typically higher (lower bound)",
        "ONNX Runtime CPU latency says little about TensorRT speed (TRT fuses QDQ into int8 kernels)",
        "no GPU / TensorRT here: TRT compatibility = lbedge.quantize.trt_ops.check_ops (ONNX parser op "
        "table) plus the zero-point/dtype checks in graph.activation_quantize",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print("wrote", args.out, flush=True)


if __name__ == "__main__":
    main()
