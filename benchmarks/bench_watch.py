"""Watches on lb-mini's world: event precision, recall and onset delay of a watch file's detectors.

    .venv/bin/python benchmarks/bench_watch.py [--watch examples/watches/lbmini.toml] [--scenes 40]
        [--out benchmarks/results_watch.json]

Records held-out scenes of lb-mini's world (RGB MP4, RealSense depth, 16-bit thermal; each scene one object for
2 s, so every object's onsets and offsets are known), runs the watch with its hand-set thresholds, calibrates it on
other scenes at a false-alarm rate of 1 % of frames (`lbedge watch calibrate` with ground truth), runs the
calibrated watch on the same test scenes, and prints both as a Markdown table (docs/watches.md). Needs lb-mini's
text bundle (`make lb-mini-text`, or built on first use).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lbedge.lbmini.watch_eval import evaluate_watch, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watch", default=str(ROOT / "examples" / "watches" / "lbmini.toml"))
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--calib-scenes", type=int, default=40)
    ap.add_argument("--calib-seed", type=int, default=4)
    ap.add_argument("--false-alarm-rate", type=float, default=0.01)
    ap.add_argument("--student", action="store_true", help="The distilled students instead of the teachers.")
    ap.add_argument("--work", default=str(ROOT / "out" / "watch-eval"), help="Where the recordings are written.")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_watch.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = evaluate_watch(
        args.watch,
        out=args.work,
        scenes=args.scenes,
        seed=args.seed,
        calib_scenes=args.calib_scenes,
        calib_seed=args.calib_seed,
        false_alarm_rate=args.false_alarm_rate,
        student=args.student,
    )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    calibrated = Path(result["calibrated_file"]).resolve()
    if calibrated.is_relative_to(ROOT):
        result["calibrated_file"] = str(calibrated.relative_to(ROOT))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"CPU: {result['cpu']}; {result['seconds']} s; written {args.out}")
    print(markdown_table(result))


if __name__ == "__main__":
    main()
