#!/usr/bin/env python
"""Preprocessing speed, one thread: lbedge's processors on the official sample media and on in-memory camera
frames, optionally side by side with the official processors (run in their own environment).

    .venv/bin/python benchmarks/bench_preprocess.py
    .venv/bin/python benchmarks/bench_preprocess.py --official-python /path/venv/bin/python \
        --official /path/LanguageBind

Prints a table (median milliseconds per input, warm-up excluded) and writes its JSON to --out
(default build/benchmarks/results_preprocess.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lbedge import PreprocessConfig, Preprocessor

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "languagebind_samples"


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def lbedge_times(samples: Path, repeat: int) -> dict[str, float]:
    pre = {m: Preprocessor(PreprocessConfig(m)) for m in ("image", "thermal", "depth", "audio")}
    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    frame720 = (np.random.default_rng(0).random((720, 1280, 3)) * 255).astype(np.uint8)
    depth = (np.random.default_rng(0).random((480, 640)) * 5000).astype(np.uint16)
    mic = (0.1 * np.random.default_rng(0).standard_normal((1, 32000))).astype(np.float32)
    return {
        "image file (image/0.jpg)": median_ms(lambda: pre["image"](samples / "image" / "0.jpg"), repeat),
        "thermal file (thermal/0.jpg)": median_ms(lambda: pre["thermal"](samples / "thermal" / "0.jpg"), repeat),
        "depth file (depth/0.png)": median_ms(lambda: pre["depth"](samples / "depth" / "0.png"), repeat),
        "audio file (audio/0.wav, 10.2 s)": median_ms(lambda: pre["audio"](samples / "audio" / "0.wav"), repeat),
        "RGB frame 640x480 (in memory)": median_ms(lambda: pre["image"](frame), repeat),
        "RGB frame 1280x720 (in memory)": median_ms(lambda: pre["image"](frame720), repeat),
        "depth frame 640x480 mm (in memory)": median_ms(lambda: pre["depth"](depth), repeat),
        "microphone window 2 s at 16 kHz": median_ms(lambda: pre["audio"]((mic, 16000)), repeat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--official-python", help="Python of an environment with the official code's pins.")
    ap.add_argument("--official", help="Checkout of the official LanguageBind repository.")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "benchmarks" / "results_preprocess.json",
        help="output JSON",
    )
    args = ap.parse_args()
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ours = lbedge_times(args.samples, args.repeat)
    theirs: dict[str, float] = {}
    if args.official_python and args.official:
        run = subprocess.run(
            [
                args.official_python,
                str(ROOT / "tools" / "bench_official_preprocess.py"),
                "--official",
                args.official,
                "--samples",
                str(args.samples),
                "--repeat",
                str(args.repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        theirs = json.loads(run.stdout.strip().splitlines()[-1])["official"]
    print(f"{'input':40s} {'lbedge ms':>10s} {'official ms':>12s}")
    for case, ms in ours.items():
        ref = theirs.get(case)
        print(f"{case:40s} {ms:10.2f} {ref if ref is not None else '-':>12}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"lbedge": ours, "official": theirs, "threads": 1, "repeat": args.repeat}, indent=1) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
