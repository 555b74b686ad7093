"""Change-gated inference (``Pipeline(gate=...)``, ``lbedge demo --gate``): model calls skipped, accuracy kept,
latency of the first result after a change; lb-mini's INT8 bundles, paced at the recordings' own rate.

    .venv/bin/python benchmarks/bench_gate.py [--out build/benchmarks/results_gate.json] [--gates 0.01:1 0.05:1]
        [--model-ms 0 60]

Two recordings:

- ``lbmini``: `make demo`'s recordings (8 held-out scenes of 2 s: RGB MP4, RealSense depth, 16-bit thermal at
  8 FPS, a WAV in one 2 s window per scene), all four sources at once, as `lbedge demo --lb-mini` runs them;
- ``static``: a static scene, one lb-mini RGB frame repeated with sensor noise (Gaussian, sigma 2 of 255) at
  15 FPS, the scene changing to another object every 4 s (6 segments), through the image bundle.

Each is run without a gate, then with each ``--gates`` THRESHOLD:MAX_AGE_S, with lb-mini's models as they are (about
2 ms a frame here) and with ``--model-ms`` of extra model time per frame (a sleep emulating a heavier model, e.g.
a ViT-L tower on a Jetson, so that the ungated pipeline is saturated). Per source: the share of model calls
skipped (reused results), the agreement of every frame's label with the ungated run's (same frame), top-1 against
the scene's truth, the capture-to-result latency of the first frame after each scene change (median), and how
many frames after a change its first classified (not reused) result came. Also: the gate's measure between
consecutive frames (within a scene / at a scene change), per source, to choose a threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lbedge import Pipeline, load_bundle  # noqa: E402
from lbedge.gate import change, parse_gate, thumbnail  # noqa: E402
from lbmini.demo import DEMO_LABELS, DEMO_TEMPLATES, demo_media, demo_sources  # noqa: E402
from lbmini.models import bundle_dirs, ensure_text_bundle  # noqa: E402


def cpu() -> dict:
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags") and key not in info:
            info[key] = value.strip()
    flags = set(info.get("flags", "").split())
    picked = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"model": info.get("model name", platform.processor()), "cores": _cores(), "flags": picked}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def static_recording(media: dict, folder: Path, *, fps: float, seconds: float, segments: int) -> tuple[Path, list]:
    """One RGB frame per segment (the middle frame of scene k of the lb-mini recording), repeated with noise."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cap = cv2.VideoCapture(str(Path(media["root"]) / media["files"]["rgb"]))
    frames = []
    ok, img = cap.read()
    while ok:
        frames.append(img)
        ok, img = cap.read()
    cap.release()
    per_scene = int(media["frames_per_scene"])
    truth = [s["label"].removeprefix("a ").removeprefix("an ") for s in media["scenes"]]
    rng = np.random.default_rng(0)
    n, labels = int(round(fps * seconds)), []
    i = 0
    for seg in range(segments):
        k = seg % len(truth)
        base = frames[k * per_scene + per_scene // 2].astype(np.float32)
        for _ in range(n):
            noisy = np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:05d}.png"), noisy)
            labels.append((seg, truth[k]))
            i += 1
    return folder, labels


def measure_changes(sources: dict, encoders: dict, scene_of) -> dict:
    """The gate's measure between consecutive frames of each source: within a scene and at scene changes."""
    out = {}
    for name, src in sources.items():
        enc = encoders[src.modality]
        within, across, prev = [], [], None
        src.open()
        try:
            while (frame := src.read()) is not None:
                t = thumbnail(enc.preprocess_frame(frame))
                k = scene_of(frame)
                if prev is not None:
                    (within if k == prev[1] else across).append(change(t, prev[0]))
                prev = (t, k)
        finally:
            src.close()

        def q(v):
            return {f"p{p}": round(float(np.percentile(v, p)), 4) for p in (5, 50, 95, 100)} if v else {}

        out[name] = {"within_scene": q(within), "at_scene_change": {**q(across), "min": round(float(min(across)), 4)}}
    return out


def run(sources: dict, encoders: dict, gate, scene_of, labels=DEMO_LABELS, templates=DEMO_TEMPLATES) -> dict:
    for s in sources.values():
        s.open()
    rows = []
    pipe = Pipeline(sources, encoders, list(labels), templates=list(templates), gate=gate)
    t0 = time.monotonic()
    with pipe:
        for r in pipe:
            u = r.update
            rows.append(
                {
                    "source": u.source,
                    "seq": u.sequence,
                    "scene": scene_of(u.frame),
                    "label": u.raw_label,
                    "reused": u.reused,
                    "latency_ms": u.latency_ms,
                    "infer_ms": u.infer_ms,
                }
            )
    return {"rows": rows, "wall_s": time.monotonic() - t0, "stats": pipe.stats()}


def summarise(res: dict, base: dict | None, truth: list[str]) -> dict:
    out = {}
    ref = {(r["source"], r["seq"]): r["label"] for r in base["rows"]} if base else {}
    for name in sorted({r["source"] for r in res["rows"]}):
        rows = [r for r in res["rows"] if r["source"] == name]
        scored = [r for r in rows if r["scene"] is not None]
        firsts, delays = [], []
        for k in range(1, len(truth)):
            after = [r for r in rows if r["scene"] == k]
            if not after:
                continue
            firsts.append(after[0]["latency_ms"])
            delay = next((i for i, r in enumerate(after) if not r["reused"]), None)
            delays.append(delay if delay is not None else len(after))
        out[name] = {
            "results": len(rows),
            "model_calls": sum(not r["reused"] for r in rows),
            "skipped_share": round(sum(r["reused"] for r in rows) / max(1, len(rows)), 4),
            "agreement_vs_ungated": round(
                float(np.mean([ref[(name, r["seq"])] == r["label"] for r in rows if (name, r["seq"]) in ref])), 4
            )
            if ref
            else 1.0,
            "top1": round(float(np.mean([r["label"] == truth[r["scene"]] for r in scored])), 4) if scored else None,
            "first_after_change_latency_ms_p50": round(float(np.median(firsts)), 1) if firsts else None,
            "first_after_change_latency_ms_max": round(float(np.max(firsts)), 1) if firsts else None,
            "frames_to_first_classified_after_change_max": max(delays) if delays else None,
            "latency_ms_p50": round(float(np.median([r["latency_ms"] for r in rows])), 1),
            "infer_ms_p50": res["stats"][name]["infer_ms"],
        }
    return out


class slowed:
    """Emulate a heavier model: ``ms`` of extra model time per frame on every encoder (0: the bundles as they are)."""

    def __init__(self, encoders: dict, ms: float):
        self.encoders, self.ms = encoders, ms

    def __enter__(self):
        if self.ms:
            for enc in self.encoders.values():
                enc.embed = self._slow(enc.embed)
        return self

    def _slow(self, embed):
        def slow(x, *a, **kw):
            time.sleep(self.ms / 1000 * len(x))
            return embed(x, *a, **kw)

        return slow

    def __exit__(self, *exc):
        for enc in self.encoders.values():
            enc.__dict__.pop("embed", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "benchmarks" / "results_gate.json")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench_gate")
    ap.add_argument("--gates", nargs="+", default=["0.005:1", "0.01:1", "0.02:1", "0.05:1"])
    ap.add_argument(
        "--model-ms",
        nargs="+",
        type=float,
        default=[0.0, 60.0],
        help="extra model time per frame, emulating a heavier model (0: lb-mini as it is)",
    )
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--static-fps", type=float, default=15.0)
    ap.add_argument("--static-seconds", type=float, default=4.0, help="seconds per static segment")
    ap.add_argument("--static-segments", type=int, default=6)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gates = {g: parse_gate(g) for g in args.gates}
    ensure_text_bundle(say=print)
    media = demo_media(args.work / "lb-mini-media", scenes=args.scenes)
    encoders = {m: load_bundle(d) for m, d in bundle_dirs().items()}
    truth = [s["label"].removeprefix("a ").removeprefix("an ") for s in media["scenes"]]
    span = float(media["seconds_per_scene"])

    def scene_of(frame):
        t = frame.device_timestamp
        k = int((t + 1e-6) // span) if t is not None else None
        return k if k is not None and 0 <= k < len(truth) else None

    from lbedge.sensors.rgb import ImageFolderSource

    folder, seg_labels = static_recording(
        media,
        args.work / "static",
        fps=args.static_fps,
        seconds=args.static_seconds,
        segments=args.static_segments,
    )
    seg_truth = [dict(seg_labels)[s] for s in range(args.static_segments)]
    n_per = int(round(args.static_fps * args.static_seconds))

    def static_source(realtime=True):
        return {"rgb": ImageFolderSource(folder, fps=args.static_fps, realtime=realtime, name="rgb")}

    def seg_of(frame):
        return frame.sequence // n_per if 0 <= frame.sequence // n_per < args.static_segments else None

    image = {"image": encoders["image"]}
    report: dict = {"cpu": cpu(), "gates": args.gates, "measure": {}, "runs": {}}
    print("cpu:", report["cpu"])
    report["measure"]["lbmini"] = measure_changes(demo_sources(media, realtime=False), encoders, scene_of)
    report["measure"]["static"] = measure_changes(static_source(False), image, seg_of)
    print("measure:", json.dumps(report["measure"]))
    scenarios = {
        "lbmini": (lambda: demo_sources(media), encoders, scene_of, truth),
        "static": (static_source, image, seg_of, seg_truth),
    }
    for ms in args.model_ms:
        for scenario, (make, encs, scene, tr) in scenarios.items():
            key = f"{scenario}+{ms:g}ms"
            report["runs"][key] = {}
            with slowed(encs, ms):
                base = run(make(), encs, None, scene)
                report["runs"][key]["off"] = {**summarise(base, None, tr), "wall_s": round(base["wall_s"], 1)}
                print(f"{key}, no gate:", json.dumps(report["runs"][key]["off"]))
                for g, gate in gates.items():
                    res = run(make(), encs, gate, scene)
                    report["runs"][key][g] = {**summarise(res, base, tr), "wall_s": round(res["wall_s"], 1)}
                    print(f"{key}, gate {g}:", json.dumps(report["runs"][key][g]))
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
