"""The official LanguageBind code and lbedge side by side, in one invocation, on one ViT-L/14 thermal checkpoint.

    benchmarks/official_env.sh build/official-env              # once: the official code's own environment
    .venv/bin/python benchmarks/bench_official.py --official-env build/official-env [--out FILE.json]

The official environment (its own venv with the official pins, see official_env.sh) writes a seeded random
checkpoint of the released thermal model's shape with the official ``save_pretrained``; lbedge loads that same
folder. Each contestant is a worker process of its own, holding its model:

- ``official``: the official ``LanguageBindThermal`` eager in FP32 (LoRA unmerged, as the official code runs);
- ``torch_fp32`` / ``torch_bf16``: lbedge's PyTorch backend on the merged model, FP32 and BF16;
- ``ort_fp32`` / ``ort_int8``: lbedge's ONNX Runtime backend on its exported FP32 graph and on the cpu target's
  dynamic INT8 graph (weight width chosen from this CPU, as ``lbedge build`` does).

Rounds alternate between the workers, so load on the machine falls on all of them alike. Per round and
worker: the process CPU time of single-thread passes (stable on a shared machine) and the wall time of passes
at ``--threads``. Every speed is also a ratio to the official code measured in the same round, and a fraction
of the machine's kernel ceiling (``bench_int8_cpu.kernel_ceiling`` plus torch's BF16 GEMM), all one thread.
The embeddings of four held-out inputs (the official thermal and image samples) are compared with the
official ones by cosine; each worker's peak RSS is recorded. CPU model and flags are written beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_int8_cpu import TOWER_GOP, cpu_record, kernel_ceiling  # noqa: E402

from lbedge.cpu import bf16_support  # noqa: E402

WORKERS = ("official", "torch_fp32", "ort_fp32", "ort_int8", "torch_bf16")


# --- the lbedge side of the protocol (official_worker.py speaks the same) ------------------------------------


def lbedge_backend(kind: str, work: Path):
    """The backend a worker of ``kind`` times, built the way the product builds it."""
    if kind.startswith("torch"):
        import torch

        from lbedge.backends.torch_backend import TorchBackend
        from lbedge.checkpoint import load_model
        from lbedge.models.towers import VisionTower

        dtype = torch.bfloat16 if kind == "torch_bf16" else torch.float32
        return TorchBackend(VisionTower(load_model(work / "checkpoint")), ("pixel_values",), "embeds", dtype=dtype)
    return None  # ONNX Runtime: one session per thread count, made on demand


def serve_lbedge(kind: str, work: Path) -> None:
    from lbedge.backends.onnxruntime_backend import OnnxRuntimeBackend

    t = time.perf_counter()
    backend = lbedge_backend(kind, work)
    sessions: dict[int, object] = {}

    def runner(threads: int):
        if backend is not None:
            import torch

            torch.set_num_threads(threads)
            return backend
        if threads not in sessions:
            sessions[threads] = OnnxRuntimeBackend(work / f"vision.{kind.split('_')[1]}.onnx", threads=threads)
        return sessions[threads]

    pixels = None
    reply({"ready": True, "load_s": round(time.perf_counter() - t, 2)})
    for line in sys.stdin:
        req = json.loads(line)
        if "pixels" in req:
            pixels = np.load(req["pixels"])
            reply({"ok": True})
        elif "passes" in req:
            run = runner(int(req["threads"]))
            run.run({"pixel_values": pixels})
            wall, cpu = [], []
            for _ in range(int(req["passes"])):
                w, c = time.perf_counter(), time.process_time()
                run.run({"pixel_values": pixels})
                wall.append((time.perf_counter() - w) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            reply({"wall_ms": wall, "cpu_ms": cpu})
        elif "embed" in req:
            np.save(req["embed"], runner(1).run({"pixel_values": pixels})["embeds"])
            reply({"ok": True})
        elif "rss" in req:
            from lbedge.bench import peak_rss_mb

            reply({"peak_mib": round(peak_rss_mb(), 1)})


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the parent ----------------------------------------------------------------------------------------------


class Worker:
    """One contestant's process, asked one JSON line at a time."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self.ask(None)

    def ask(self, req: dict | None) -> dict:
        if req is not None:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended (exit code {self.proc.wait()}): see its error above")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def bf16_gemm_gflops() -> float:
    """torch's BF16 GEMM on one ViT-L MLP shape, one thread (native only with avx512_bf16 or AMX)."""
    import torch
    from bench_int8_cpu import K, M, N

    torch.set_num_threads(1)
    a, b = torch.randn(M, K, dtype=torch.bfloat16), torch.randn(K, N, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(10):
        t = time.thread_time()
        a @ b
        times.append(time.thread_time() - t)
    return round(2 * M * K * N / statistics.median(times) / 1e9, 1)


def build(work: Path, official_python: str, official: str, checkpoint: Path | None) -> dict:
    """The checkpoint (official save_pretrained), the held-out inputs, lbedge's FP32 and INT8 graphs."""
    import torch
    from bench_vitl import calib_inputs

    from lbedge.checkpoint import load_model
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.export import export_tower, ort_outputs
    from lbedge.quantize.int8 import Int8Config, quantize_int8
    from lbedge.quantize.onnx_utils import agreement

    info: dict = {}
    if checkpoint is None:
        out = subprocess.run(
            [official_python, str(ROOT / "benchmarks" / "official_worker.py"), "--official", official]
            + ["make-checkpoint", str(work / "checkpoint")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        info["checkpoint"] = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        (work / "checkpoint").symlink_to(checkpoint.resolve())
    torch.manual_seed(0)
    model = load_model(work / "checkpoint").eval()
    _, held = calib_inputs("thermal", Preprocessor(model.config.preprocess))
    np.save(work / "held.npy", held)
    np.save(work / "one.npy", held[2:3])  # the official thermal sample 0
    export_tower(model, "vision", work / "vision.fp32.onnx")
    del model
    t = time.perf_counter()
    ref = ort_outputs(work / "vision.fp32.onnx", held)
    rep = quantize_int8(work / "vision.fp32.onnx", work / "vision.int8.onnx", held[:0], config=Int8Config(target="cpu"))
    agree = agreement(ref, ort_outputs(work / "vision.int8.onnx", held))
    info["int8"] = {
        "quantize_s": round(time.perf_counter() - t, 1),
        "weight_bits": rep.weight_bits,
        "method": rep.method,
        "min_cosine_vs_ort_fp32": round(agree.min_cosine, 6),
    }
    return info


def cosine_rows(a: np.ndarray, b: np.ndarray) -> list[float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return [round(float(x), 6) for x in (a * b).sum(axis=1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-env", type=Path, required=True, help="the folder official_env.sh made")
    ap.add_argument("--official", type=Path, help="the official checkout (default: OFFICIAL_ENV/LanguageBind)")
    ap.add_argument("--checkpoint", type=Path, help="reuse a checkpoint official_worker.py made")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=3, help="passes per worker and round at each setting")
    ap.add_argument("--no-bf16", action="store_true", help="skip lbedge's PyTorch BF16 worker")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "benchmarks" / "results_official.json")
    ap.add_argument("--serve", choices=WORKERS[1:], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_lbedge(args.serve, args.work)
        return
    official_python = str(args.official_env / "bin" / "python")
    official = str(args.official or args.official_env / "LanguageBind")
    names = [w for w in WORKERS if not (args.no_bf16 and w == "torch_bf16")]
    record: dict = {"cpu": cpu_record(), "threads": args.threads, "tower_gop": TOWER_GOP, "rounds": args.rounds}
    record["bf16_units"] = bf16_support().reason
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        record["kernel_gops_one_thread"] = kernel_ceiling(work)
        record["kernel_gops_one_thread"]["bf16_torch_matmul"] = bf16_gemm_gflops()
        print("kernels (GOP/s, one thread):", record["kernel_gops_one_thread"], flush=True)
        record["build"] = build(work, official_python, official, args.checkpoint)
        print("built:", record["build"], flush=True)
        workers = {}
        for name in names:
            if name == "official":
                argv = [official_python, str(ROOT / "benchmarks" / "official_worker.py"), "--official", official]
                argv += ["serve", str(work / "checkpoint")]
            else:
                argv = [sys.executable, __file__, "--official-env", str(args.official_env)]
                argv += ["--serve", name, "--work", str(work)]
            workers[name] = Worker(name, argv)
            print(f"{name} ready ({workers[name].hello})", flush=True)
        embeds = {}
        for name, w in workers.items():
            w.ask({"pixels": str(work / "held.npy")})
            w.ask({"embed": str(work / f"embeds.{name}.npy")})
            embeds[name] = np.load(work / f"embeds.{name}.npy")
            w.ask({"pixels": str(work / "one.npy")})
        rows: dict[str, dict] = {n: {"cpu_ms": [], "wall_ms": []} for n in names}
        bf16_passes = args.passes if bf16_support().native else 1  # emulated BF16 is slow without BF16 units
        for r in range(args.rounds):
            for name, w in workers.items():
                passes = bf16_passes if name == "torch_bf16" else args.passes
                one = w.ask({"passes": passes, "threads": 1})
                many = w.ask({"passes": passes, "threads": args.threads})
                rows[name]["cpu_ms"].append(statistics.median(one["cpu_ms"]))
                rows[name]["wall_ms"].append(statistics.median(many["wall_ms"]))
            got = ", ".join(f"{n} {v['cpu_ms'][-1]:.0f}/{v['wall_ms'][-1]:.0f}" for n, v in rows.items())
            print(f"round {r + 1}: {got} (1-thread CPU ms / wall ms)", flush=True)
        for name, w in workers.items():
            rows[name]["peak_rss_mib"] = w.ask({"rss": True})["peak_mib"]
            w.close()
    int8_ceiling = record["kernel_gops_one_thread"]["int8_matmulinteger"]
    base = rows["official"]
    for name, row in rows.items():
        row["cpu_ms_median"] = round(statistics.median(row["cpu_ms"]), 1)
        row["wall_ms_median"] = round(statistics.median(row["wall_ms"]), 1)
        row["speedup_cpu_per_round"] = [round(o / x, 2) for o, x in zip(base["cpu_ms"], row["cpu_ms"])]
        row["speedup_wall_per_round"] = [round(o / x, 2) for o, x in zip(base["wall_ms"], row["wall_ms"])]
        row["gops_one_thread"] = round(TOWER_GOP / (row["cpu_ms_median"] / 1000), 1)
        row["fraction_of_int8_kernel"] = round(row["gops_one_thread"] / int8_ceiling, 3)
        if name == "torch_bf16":
            bf16_ceiling = record["kernel_gops_one_thread"]["bf16_torch_matmul"]
            row["fraction_of_bf16_kernel"] = round(row["gops_one_thread"] / bf16_ceiling, 3)
        row["cosine_vs_official"] = cosine_rows(embeds["official"], embeds[name])
        row["cpu_ms"] = [round(x, 1) for x in row["cpu_ms"]]
        row["wall_ms"] = [round(x, 1) for x in row["wall_ms"]]
    record["workers"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
