"""Speed-up of training on two processes (torchrun, gloo, one thread each) over one process, on this machine.

    .venv/bin/python benchmarks/bench_distributed.py [--steps 20] [--repeat 3] [--work /tmp/bench_distributed]
        [--out build/benchmarks/results_distributed.json]

The jobs are lb-mini's (lbedge.lbmini.recipe) at its real sizes: the image stage (the whole 4-layer, 128-wide
ViT trained against the frozen MiniLM tower, global batch 64, attribute augmentation) and a distillation of that
tower into lb-mini's student (global batch 64, augmentation and photometric views, fresh teacher targets), on
256 scenes of lb-mini's world. Each runs through the command line as a user runs it:

- ``lbedge train bind --config ...`` in one process with 2 threads (``OMP_NUM_THREADS=2``: all the cores);
- the same with 1 thread;
- ``torchrun --standalone --nproc_per_node=2 lbedge train bind --config ...``: two processes, 1 thread each.

Reported per run: the wall time of the whole command (start-up, data, text table, training, evaluation, saves)
and the mean time of a training step after the first two (from metrics.jsonl). Variants are interleaved and
repeated; the medians over the repeats are what the table shows. The machine's CPU model, core count and load
average are recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (processes, threads per process)
    "1 process, 2 threads": (1, 2),
    "1 process, 1 thread": (1, 1),
    "2 processes (torchrun), 1 thread each": (2, 1),
}


def cpu() -> dict:
    """CPU model, flags of interest and core count from /proc/cpuinfo."""
    info: dict = {"cores": os.cpu_count(), "machine": platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "cpu family", "model", "cpu MHz") and key not in info:
            info[key] = value
        if key == "flags" and "flags" not in info:
            info["flags"] = [f for f in value.split() if f in ("avx2", "avx512f", "avx512_vnni", "amx_tile")]
    return info


def prepare(work: Path, steps: int) -> dict[str, Path]:
    """lb-mini's world (256 training scenes, image), its anchored base model, and the two jobs' configs."""
    from lbedge.lbmini import world
    from lbedge.lbmini.recipe import LbMini, LbMiniRecipe

    recipe = LbMini(LbMiniRecipe(work=str(work), out=str(work / "bundles")), say=lambda s: None)
    if not (work / "data" / "image" / "train.jsonl").is_file():
        world.write_dataset(work / "data", 256, 32, 0, size=128, modalities=("image",))
    if not (work / "base" / "config.json").is_file():
        recipe.make_base()
    r = recipe.r
    bind = work / "bind.toml"
    bind.write_text(
        "[bind]\n"
        f'base = "{work / "base"}"\nmodality = "image"\n'
        f'data = "{recipe.data_manifest("image", "train")}"\nval_data = "{recipe.data_manifest("image", "val")}"\n'
        f"lora_r = 0\nlr = {r.image_lr}\nweight_decay = 0.05\nbatch_size = {r.batch_size}\nmax_steps = {steps}\n"
        f'warmup_steps = 5\naugment_flip = false\nattribute_augment = {r.attribute_augment}\nprecision = "fp32"\n'
        "eval_every = 1000000\nsave_every = 1000000\n"
    )
    distill = work / "distill.toml"
    distill.write_text(
        "[distill]\n"
        f'teacher = "{work / "base"}"\nstudent = "{r.student}"\ndata = "{recipe.data_manifest("image", "train")}"\n'
        f"lr = {r.distill_lr}\nbatch_size = {r.batch_size}\nmax_steps = {steps}\nwarmup_steps = 5\n"
        "photometric = true\nval_fraction = 0.05\neval_every = 1000000\nsave_every = 1000000\n"
    )
    return {"bind": bind, "distill": distill}


def lbedge_command() -> list[str]:
    script = Path(sys.executable).with_name("lbedge")
    return [str(script)] if script.is_file() else ["-m", "lbedge.cli"]


def run(job: str, config: Path, out: Path, processes: int, threads: int) -> dict:
    """One run of ``lbedge train JOB`` (under torchrun for several processes): wall time and step times."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*lbedge_command(), "-q", "train", job, "--config", str(config), "-o", str(out)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cmd]
    elif cmd[0] == "-m":
        cmd = [sys.executable, *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rows if "loss" in r]
    step = (seconds[-1] - seconds[1]) / (len(seconds) - 2)  # the mean step after the first two
    return {"wall_s": round(wall, 2), "step_s": round(step, 4), "steps": len(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_distributed"))
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "benchmarks" / "results_distributed.json",
        help="output JSON",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    configs = prepare(args.work, args.steps)
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {job: {v: [] for v in VARIANTS} for job in configs}
    for i in range(args.repeat):
        for job, config in configs.items():
            for name, (procs, threads) in VARIANTS.items():
                res = run(job, config, args.work / "runs" / job, procs, threads)
                runs[job][name].append(res)
                print(
                    f"[{i + 1}/{args.repeat}] {job:8s} {name:40s} wall {res['wall_s']:7.2f} s, "
                    f"step {res['step_s'] * 1000:7.1f} ms",
                    flush=True,
                )
    summary: dict[str, dict[str, dict]] = {}
    for job, by_variant in runs.items():
        ref = statistics.median(r["step_s"] for r in by_variant["1 process, 2 threads"])
        ref_wall = statistics.median(r["wall_s"] for r in by_variant["1 process, 2 threads"])
        summary[job] = {}
        for name, rs in by_variant.items():
            step = statistics.median(r["step_s"] for r in rs)
            wall = statistics.median(r["wall_s"] for r in rs)
            summary[job][name] = {
                "step_ms": round(step * 1000, 1),
                "wall_s": round(wall, 1),
                "speed_up_steps": round(ref / step, 2),
                "speed_up_wall": round(ref_wall / wall, 2),
            }
    record = {
        "cpu": cpu(),
        "torch": __import__("torch").__version__,
        "steps": args.steps,
        "repeat": args.repeat,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    c = record["cpu"]
    print(f"\nCPU: {c.get('model name')}, {c['cores']} cores; load average {record['load_average_before']}")
    print("| job | variant | step ms | speed-up (steps) | wall s | speed-up (wall) |\n|---|---|---|---|---|---|")
    for job, by_variant in summary.items():
        for name, s in by_variant.items():
            print(
                f"| {job} | {name} | {s['step_ms']} | {s['speed_up_steps']}x | {s['wall_s']} | {s['speed_up_wall']}x |"
            )


if __name__ == "__main__":
    main()
