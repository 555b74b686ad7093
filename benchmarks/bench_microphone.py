"""Microphone timing: how far apart windows arrive at the reader, and how far apart the device clock puts them,
recorded through the PulseAudio virtual microphone the tests use (tests/pulse.py; no sound card).

    .venv/bin/python benchmarks/bench_microphone.py [--window 1.0] [--hop 0.5] [--reads 20] [--busy N] [--out F]

Arrival gaps depend on the machine and its load (the scheduler decides when the reader runs), so the tests
assert what was heard and in what order, not when; these figures say how a machine behaves, printed with its
CPU model and load. A reader keeping up sees gaps of about one hop; a late one sees a longer gap, then a short
one (the next window is already complete), and skips windows once it is more than a hop behind
(``dropped_windows``). The device-clock gaps should stay at one hop per window whatever the load.
``--busy N`` keeps N processes spinning meanwhile, to see a loaded machine.
Needs the Debian packages pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2 and lbedge[audio].
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pulse import missing_pieces, virtual_microphone  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform module says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_tone(path: Path, seconds: float, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(0.5 * 32767 * np.cos(2 * np.pi * 1000.0 * t)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(pcm.tobytes())


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(n: int):
    """``n`` processes spinning on the CPU for the duration of the block."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()


def record(window: float, hop: float, reads: int) -> dict:
    """Read ``reads`` windows while a tone plays; arrival times, device timestamps and counters."""
    from lbedge.sensors.microphone import Microphone

    with tempfile.TemporaryDirectory() as tmp, virtual_microphone(tmp) as vmic:
        write_tone(Path(tmp) / "tone.wav", window + reads * hop + 1.0)
        arrivals, frames = [], []
        with Microphone(device="pulse", window=window, hop=hop, target_rate=16000) as mic:
            vmic.play(Path(tmp) / "tone.wav")
            for _ in range(reads):
                frames.append(mic.read())
                arrivals.append(time.monotonic())
    return {
        "arrival_gaps_s": np.diff(arrivals).round(4).tolist(),
        "device_gaps_s": np.diff([f.device_timestamp or np.nan for f in frames]).round(4).tolist(),
        "dropped_windows": frames[-1].meta["dropped_windows"],
        "overflows": frames[-1].meta["overflows"],
    }


def summary(gaps: list[float], hop: float) -> str:
    g = np.asarray(gaps, float)
    off = np.abs(g - hop)
    return (
        f"min {g.min():.3f}  p50 {np.median(g):.3f}  p95 {np.percentile(g, 95):.3f}  max {g.max():.3f} s; "
        f"off the hop by up to {off.max():.3f} s, {int((off >= 0.15).sum())} of {g.size} by 0.15 s or more"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU meanwhile")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    a = ap.parse_args()
    why = missing_pieces()
    if why:
        print(f"cannot make a virtual microphone here: {why}", file=sys.stderr)
        return 2
    with busy(a.busy):
        recorded = record(a.window, a.hop, a.reads)
        load = [round(v, 2) for v in os.getloadavg()]
    result = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "busy_processes": a.busy,
        "load_average": load,
        "window_s": a.window,
        "hop_s": a.hop,
        **recorded,
    }
    print(
        f"CPU: {result['cpu']} ({result['cpu_count']} logical CPUs), {a.busy} busy processes, "
        f"load average {load} at the end"
    )
    print(f"window {a.window:g} s, hop {a.hop:g} s, {a.reads} reads")
    print(f"arrival gaps:      {summary(result['arrival_gaps_s'], a.hop)}")
    print(f"device-clock gaps: {summary(result['device_gaps_s'], a.hop)}")
    print(f"dropped windows {result['dropped_windows']}, input overflows {result['overflows']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
