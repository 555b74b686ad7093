#!/usr/bin/env python
"""The official LanguageBind side of benchmarks/bench_official.py. Runs in the official code's own environment
(benchmarks/official_env.sh) and never imports lbedge.

    PY official_worker.py --official DIR make-checkpoint OUT   # a seeded random ViT-L/14 thermal checkpoint
    PY official_worker.py --official DIR serve CHECKPOINT      # answer timing requests on stdin

``make-checkpoint`` builds ``LanguageBindThermal`` with the released thermal model's shape (ViT-L/14 vision
tower with LoRA r=16 over the CLIP ViT-L/14 text tower), fills it with seeded random weights (the fixture
tool's scheme, so LoRA visibly changes the output) and writes it with the official ``save_pretrained``.

``serve`` loads a checkpoint with the official ``from_pretrained`` and reads JSON lines; it answers each with
one JSON line:

- ``{"pixels": PATH}``: the batch the timings run on (a float32 .npy);
- ``{"passes": N, "threads": T}``: N forward passes of ``get_image_features`` (the official eager path, LoRA
  unmerged as the official code runs it) on T threads: per pass, wall and process CPU milliseconds;
- ``{"embed": PATH}``: writes the features of the batch to PATH (.npy);
- ``{"rss": true}``: the peak resident memory of this process, MiB.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch  # before the official code (see tools/make_official_fixtures.py)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import make_official_fixtures as fx  # noqa: E402  (its pytorchvideo stand-in and random initialisation)


def peak_rss_mib() -> float:
    """VmHWM of /proc/self/status (this environment has no lbedge, whose lbedge.bench.peak_rss_mb does the same)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_checkpoint(lb, out: str, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = lb.LanguageBindThermalConfig(
        text_config=fx.VIT_L_TEXT,
        vision_config=fx.VIT_L_LORA_VISION,
        projection_dim=768,
        logit_scale_init_value=2.6592,
    )
    model = lb.LanguageBindThermal(cfg).eval()
    fx.randomize_(model, seed, logit_scale=2.6592)
    model.save_pretrained(out, safe_serialization=True)
    # the official __init__ (resize_pos) rewrites vision_config.image_size to a list, which its own
    # from_pretrained then cannot read back: the released checkpoints hold 224, so this one does too
    path = os.path.join(out, "config.json")
    with open(path) as f:
        saved = json.load(f)
    saved["vision_config"]["image_size"] = fx.VIT_L_LORA_VISION["image_size"]
    with open(path, "w") as f:
        json.dump(saved, f, indent=2)
    print(json.dumps({"checkpoint": out, "parameters": sum(p.numel() for p in model.parameters())}))


def serve(lb, checkpoint: str) -> None:
    t = time.perf_counter()
    model = lb.LanguageBindThermal.from_pretrained(checkpoint).eval()
    pixels = None
    reply({"ready": True, "load_s": round(time.perf_counter() - t, 2), "torch": torch.__version__})
    for line in sys.stdin:
        req = json.loads(line)
        if "pixels" in req:
            pixels = torch.from_numpy(np.load(req["pixels"]))
            reply({"ok": True})
        elif "passes" in req:
            torch.set_num_threads(int(req["threads"]))
            wall, cpu = [], []
            with torch.no_grad():
                model.get_image_features(pixel_values=pixels)  # warm-up at this thread count
                for _ in range(int(req["passes"])):
                    w, c = time.perf_counter(), time.process_time()
                    model.get_image_features(pixel_values=pixels)
                    wall.append((time.perf_counter() - w) * 1000)
                    cpu.append((time.process_time() - c) * 1000)
            reply({"wall_ms": wall, "cpu_ms": cpu})
        elif "embed" in req:
            with torch.no_grad():
                np.save(req["embed"], model.get_image_features(pixel_values=pixels).numpy())
            reply({"ok": True})
        elif "rss" in req:
            reply({"peak_mib": round(peak_rss_mib(), 1)})
        else:
            reply({"error": f"unknown request {req}"})


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, help="the official LanguageBind checkout")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("command", choices=["make-checkpoint", "serve"])
    ap.add_argument("path")
    args = ap.parse_args()
    fx.install_pytorchvideo_stub()
    sys.path.insert(0, os.path.abspath(args.official))
    import languagebind as lb

    if args.command == "make-checkpoint":
        make_checkpoint(lb, args.path, args.seed)
    else:
        serve(lb, args.path)


if __name__ == "__main__":
    main()
