"""Soak: the pipeline at full speed for a while (LBEDGE_SOAK_SECONDS, default 120) with sources that fail in
every way a sensor can: it keeps producing results for the healthy ones, recovers the others, stays bounded
in memory, and stops with no thread left."""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import pytest

from lbedge.errors import SensorError
from lbedge.frames import Frame
from lbedge.pipeline import Pipeline
from test_pipeline import LABELS, fake_encoder

psutil = pytest.importorskip("psutil")
SECONDS = float(os.environ.get("LBEDGE_SOAK_SECONDS", "45"))  # minutes-long runs: benchmarks/bench_soak.py


class ChaosCamera:
    """A live camera at full speed that now and then disconnects, stalls, or delivers garbage or NaN frames."""

    modality, live = "image", True

    def __init__(self, name: str, seed: int, healthy: bool = False):
        self.name, self.healthy = name, healthy
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.opened = False
        self.reopens = 0

    def open(self):
        if not self.opened:
            self.opened = True
            self.reopens += 1

    def read(self, timeout=None):
        self.seq += 1
        roll = self.rng.random() if not self.healthy else 1.0
        if roll < 0.002:
            self.opened = False
            raise SensorError("USB disconnect")
        if roll < 0.004:
            time.sleep(0.3)  # a stall
        if roll < 0.01:
            data = self.rng.integers(0, 255, size=int(self.rng.integers(0, 50)), dtype=np.uint8)  # garbage
        elif roll < 0.015:
            data = np.full((48, 64, 3), np.nan, np.float32)  # NaN
        elif roll < 0.02:
            data = np.zeros((self.rng.integers(1, 900), 3, 3), np.uint8)  # odd size
        else:
            data = np.zeros((48, 64, 3), np.uint8)
            data[..., self.seq % 3] = 255
        time.sleep(0.001)
        return Frame(data, "image", time.monotonic(), self.seq, source=self.name)

    def close(self):
        self.opened = False

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return iter(())


def test_soak_with_failing_sources_stays_bounded(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))
    # thousands of warnings: pytest would keep every record for the report; the pipeline's event_log has them
    caplog.set_level(logging.ERROR, logger="lbedge.pipeline")
    sources = {
        "healthy": ChaosCamera("healthy", 0, healthy=True),
        "chaos1": ChaosCamera("chaos1", 1),
        "chaos2": ChaosCamera("chaos2", 2),
    }
    pipe = Pipeline(sources, fake_encoder(delay=0.002), LABELS, reopen_backoff=(0.01, 0.1), max_batch=4)
    proc = psutil.Process()
    counts = {n: 0 for n in sources}
    lock = threading.Lock()
    warm_rss = None
    per_window: list[dict[str, int]] = []
    rss_trace: list[float] = []

    def count(result):
        with lock:
            counts[result.update.source] += 1

    pipe.on_result(count)
    t0 = time.monotonic()
    with pipe:
        warmup = min(10.0, SECONDS / 6)
        time.sleep(warmup)
        warm_rss = proc.memory_info().rss
        windows = 6
        for _ in range(windows):  # every sixth of the run, everyone made progress
            with lock:
                before = dict(counts)
            time.sleep((SECONDS - warmup) / windows)
            with lock:
                per_window.append({n: counts[n] - before[n] for n in counts})
            rss_trace.append(proc.memory_info().rss / 2**20)
        end_rss = proc.memory_info().rss
    elapsed = time.monotonic() - t0
    assert not [t for t in pipe.threads if t.is_alive()]
    total = sum(counts.values())
    assert total > 50 * elapsed  # full speed: many results per second
    for window in per_window:
        assert all(v > 0 for v in window.values()), per_window  # no source stalled the others, none died
    assert sources["chaos1"].reopens > 1 and sources["chaos2"].reopens > 1  # disconnects were recovered
    log = list(pipe.event_log)
    assert any("skipped" in e for e in log) and any("recovered" in e for e in log)
    growth_mb = (end_rss - warm_rss) / 2**20
    print(
        f"soak {elapsed:.0f} s: {total} results ({total / elapsed:.0f}/s), {counts}, "
        f"RSS {warm_rss / 2**20:.0f} -> {end_rss / 2**20:.0f} MiB, trace {[round(r) for r in rss_trace]}"
    )
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MiB"
