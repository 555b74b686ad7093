"""Soak: lb-mini's four INT8 bundles on four looping sensor streams for minutes, with failures injected, recording
RSS, thread count and per-source results over time.

    .venv/bin/python benchmarks/bench_soak.py [--seconds 300] [--out benchmarks/results_soak.json]

The streams are lb-mini's demo recordings (RGB MP4, RealSense depth, 16-bit thermal frames, WAV; `make demo`
writes them), each looped and paced at its recorded rate as a live sensor would deliver it. Three of the four
go through a chaos wrapper that now and then disconnects (SensorError), stalls for a while, or delivers
garbage, NaN or odd-sized frames; one stays healthy. What a robot needs from this: every source keeps
delivering between its failures, failures are recovered, RSS and the number of threads stay flat, and
``stop()`` leaves no thread behind. Needs `make lb-mini-text` (the MiniLM text bundle) and psutil.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np

import lbedge
from lbedge.errors import SensorError
from lbedge.frames import Frame

ROOT = Path(__file__).resolve().parents[1]


class Chaos:
    """A looping, paced source around a recording, failing at random (a live sensor on a bad day)."""

    live = True

    def __init__(self, inner, fps: float, seed: int, rate: float):
        self.inner, self.fps, self.rate = inner, fps, rate
        self.name, self.modality = inner.name, inner.modality
        self.rng = np.random.default_rng(seed)
        self.opened, self.next_due, self.seq = False, 0.0, 0
        self.injected = {"disconnect": 0, "stall": 0, "garbage": 0, "nan": 0, "odd_size": 0}

    def open(self):
        if not self.opened:
            self.inner.open()
            self.opened, self.next_due = True, time.monotonic()

    def read(self, timeout=None):
        delay = self.next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_due = max(self.next_due + 1.0 / self.fps, time.monotonic() - 1.0)
        frame = self.inner.read()
        if frame is None:  # loop the recording
            self.inner.close()
            self.inner.open()
            frame = self.inner.read()
        self.seq += 1
        roll = self.rng.random() / self.rate if self.rate else 1.0
        if roll < 0.004:
            self.injected["disconnect"] += 1
            raise SensorError("injected disconnect")
        if roll < 0.006:
            self.injected["stall"] += 1
            time.sleep(2.0)
        data = frame.data
        if roll < 0.012:
            self.injected["garbage"] += 1
            data = self.rng.integers(0, 255, size=int(self.rng.integers(0, 64)), dtype=np.uint8)
        elif roll < 0.016:
            self.injected["nan"] += 1
            data = np.full(np.shape(frame.data), np.nan, np.float32)
        elif roll < 0.02 and frame.modality != "audio":
            self.injected["odd_size"] += 1
            data = np.zeros((int(self.rng.integers(1, 700)), 3, 3), np.uint8)
        return Frame(
            data, frame.modality, time.monotonic(), self.seq, frame.device_timestamp, frame.units, self.name, frame.meta
        )

    def close(self):
        if self.opened:
            self.opened = False
            self.inner.close()


def machine() -> dict:
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return {
        "cpu": cpu or platform.processor(),
        "flags": [f for f in wanted if f in flags],
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "lbedge": lbedge.__version__,
    }


def main() -> None:
    import psutil

    from lbedge.lbmini import bundle_dirs
    from lbedge.lbmini.demo import DEMO_LABELS, DEMO_TEMPLATES, demo_media, demo_sources

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--media", default=str(ROOT / "out" / "lb-mini-media"))
    ap.add_argument(
        "--out",
        default=str(ROOT / "build" / "benchmarks" / "results_soak.json"),
        help="output JSON",
    )
    args = ap.parse_args()

    media = demo_media(args.media)
    fps = float(media["fps"])
    inner = demo_sources(media, realtime=False)
    rates = {"rgb": fps, "depth": fps, "thermal": fps, "audio": 1.0 / float(media["seconds_per_scene"])}
    sources = {
        n: Chaos(src, rates[n], seed=i, rate=0.0 if n == "rgb" else 1.0) for i, (n, src) in enumerate(inner.items())
    }
    encoders = {m: lbedge.load_bundle(d) for m, d in bundle_dirs().items()}
    pipe = lbedge.Pipeline(
        sources,
        encoders,
        list(DEMO_LABELS),
        templates=list(DEMO_TEMPLATES),
        reopen=lbedge.pipeline.ReopenPolicy(backoff=(0.05, 1.0)),
        stall_timeout=1.5,
    )
    counts = {n: 0 for n in sources}
    lock = threading.Lock()

    def count(result):
        with lock:
            counts[result.update.source] += 1

    pipe.on_result(count)
    proc = psutil.Process()
    samples = []
    threads_before = threading.active_count()
    t0 = time.monotonic()
    with pipe:
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(args.sample_s, max(0.0, args.seconds - (time.monotonic() - t0))))
            with lock:
                snap = dict(counts)
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 1),
                    "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                    "threads": threading.active_count(),
                    "results": snap,
                    "events": pipe.event_count,
                }
            )
            print(samples[-1], flush=True)
    elapsed = time.monotonic() - t0
    left = [t.name for t in pipe.threads if t.is_alive()]
    stats = pipe.stats()
    events = list(pipe.event_log)
    kinds = {k: sum(k in e for e in events) for k in ("failed", "recovered", "skipped", "stalled", "again")}
    rss = [s["rss_mib"] for s in samples]
    warm = [s["rss_mib"] for s in samples if s["t"] >= min(60.0, args.seconds / 3)] or rss
    report = {
        "machine": machine(),
        "seconds": round(elapsed, 1),
        "sources": {
            n: {
                "results": counts[n],
                "per_s": round(counts[n] / elapsed, 2),
                "skipped": stats[n]["skipped"],
                "injected": sources[n].injected,
            }
            for n in sources
        },
        "rss_mib": {"first": rss[0], "max": max(rss), "last": rss[-1], "warm_growth": round(warm[-1] - warm[0], 1)},
        "threads": {
            "before": threads_before,
            "max": max(s["threads"] for s in samples),
            "min": min(s["threads"] for s in samples),
            "left_after_stop": left,
        },
        "event_kinds": kinds,
        "events": pipe.event_count,
        "samples": samples,
        "every_source_delivered_in_every_sample": all(
            all(b["results"][n] > a["results"][n] for n in sources) for a, b in zip(samples, samples[1:])
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
