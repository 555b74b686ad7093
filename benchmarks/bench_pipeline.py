"""Pipeline overhead with a backend of fixed latency (issue targets: throughput >= 95 % of the backend's own,
capture-to-result latency <= backend latency + 10 ms at 30 FPS input).

    .venv/bin/python benchmarks/bench_pipeline.py [--latency-ms 20] [--seconds 10]
    .venv/bin/python benchmarks/bench_pipeline.py --bundle BUNDLE [--fps 5] [--threads 2]   # a real image model

A synthetic live camera delivers 640x480 RGB frames at 30 FPS; the "model" sleeps ``latency`` per call, so
the pipeline's own costs (preprocessing, queues, classification, smoothing, fusion) are what is measured.
Preprocessing runs in each source's reader thread, overlapping the model; its cost is reported separately.

With ``--bundle`` the model is a real image bundle (ONNX Runtime, its best graph): end to end, frame in to label
out, against the model's own time in the same run (the pipeline's median ``infer_ms``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lbedge import ClipTokenizer, Encoder, PreprocessConfig  # noqa: E402
from lbedge.frames import Frame  # noqa: E402
from lbedge.pipeline import Pipeline  # noqa: E402


class Backend:
    def __init__(self, fn, name):
        self.name, self.input_names, self.output_names, self.fn = "fixed", (name,), ("embeds",), fn

    def run(self, inputs):
        return {"embeds": self.fn(inputs[self.input_names[0]])}


class Camera:
    modality, live = "image", True

    def __init__(self, fps: float, seconds: float):
        self.name, self.fps, self.n, self.i, self.t0 = "camera", fps, int(fps * seconds), 0, None
        self.frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)

    def open(self):
        self.t0 = self.t0 or time.monotonic()

    def read(self, timeout=None):
        if self.i >= self.n:
            return None
        due = self.t0 + self.i / self.fps
        time.sleep(max(0.0, due - time.monotonic()))
        self.i += 1
        return Frame(self.frame, "image", time.monotonic(), self.i - 1)

    def close(self):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bundle", type=Path, help="a real image bundle instead of the fixed-latency model")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads with --bundle")
    a = ap.parse_args()
    if a.bundle is not None:
        return real_model(a)
    tok = ClipTokenizer.from_dir(ROOT / "tests/fixtures/official/tokenizer")
    lat = a.latency_ms / 1000

    def vision(x):
        time.sleep(lat)
        return np.ones((len(x), 4), np.float32)

    enc = Encoder(
        modality="image",
        preprocess_config=PreprocessConfig("image"),
        vision=Backend(vision, "x"),
        text=Backend(lambda ids: np.eye(4, dtype=np.float32)[np.arange(len(ids)) % 4], "ids"),
        tokenizer=tok,
        logit_scale=10.0,
        embed_dim=4,
        text_fingerprint="bench",
    )
    from lbedge.preprocess import Preprocessor

    pre = Preprocessor(PreprocessConfig("image"))
    cam = Camera(a.fps, a.seconds)
    t = time.perf_counter()
    for _ in range(20):
        pre(cam.frame)
    pre_ms = (time.perf_counter() - t) / 20 * 1000
    lat_ms, t0 = [], time.monotonic()
    with Pipeline({"camera": cam}, enc, ["a", "b", "c", "d"], templates=["{}"]) as p:
        for r in p:
            lat_ms.append(r.update.latency_ms)
    wall = time.monotonic() - t0
    backend_rate = min(a.fps, 1000 / a.latency_ms)  # preprocessing overlaps the model (reader threads)
    out = {
        "command": " ".join(sys.argv),
        "backend_latency_ms": a.latency_ms,
        "input_fps": a.fps,
        "preprocess_ms_640x480": round(pre_ms, 2),
        "results": len(lat_ms),
        "dropped": p.dropped["camera"],
        "throughput_fps": round(len(lat_ms) / wall, 2),
        "backend_fps_capped_at_input": round(backend_rate, 2),
        "throughput_vs_backend": round(len(lat_ms) / wall / backend_rate, 3),
        "latency_p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "latency_p90_ms": round(float(np.percentile(lat_ms, 90)), 1),
        "latency_minus_model_p50_ms": round(float(np.percentile(lat_ms, 50)) - a.latency_ms, 1),
    }
    print(json.dumps(out, indent=1))


def real_model(a: argparse.Namespace) -> None:
    """End-to-end latency through the pipeline with a real bundle, beside the model's own time."""
    import lbedge
    from lbedge.cpu import cpu_model

    enc = lbedge.load_bundle(a.bundle, threads=a.threads)
    cam = Camera(a.fps, a.seconds)
    lat_ms, t0 = [], time.monotonic()
    with Pipeline({"camera": cam}, enc, ["a dog", "a cat", "a car", "a person"]) as p:
        for r in p:
            lat_ms.append(r.update.latency_ms)
        stats = p.stats()["camera"]
    wall = time.monotonic() - t0
    lat = float(np.percentile(lat_ms[2:] or lat_ms, 50))  # the first results include the graph's warm-up
    out = {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "bundle": str(a.bundle),
        "precision": getattr(enc, "precision", None),
        "input_fps": a.fps,
        "results": len(lat_ms),
        "dropped": p.dropped["camera"],
        "throughput_fps": round(len(lat_ms) / wall, 2),
        "model_p50_ms": stats["infer_ms"],
        "preprocess_p50_ms": stats["preprocess_ms"],
        "capture_to_label_p50_ms": round(lat, 1),
        "beyond_the_model_ms": round(lat - stats["infer_ms"], 1),
        "end_to_end_over_model": round(lat / stats["infer_ms"], 3) if stats["infer_ms"] else None,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
