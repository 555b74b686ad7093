"""Watches on lb-mini's world: recorded sequences of held-out scenes with known object onsets and offsets, a watch
file run over them through the live pipeline, and each detector's event precision, recall and onset delay
(``benchmarks/bench_watch.py``; the table in docs/watches.md).

Every scene of the world shows one object for ``seconds_per_scene``; an object is *present* from the start of its
first scene to the end of its last in a row. An event of a detector matches an occurrence of its object when it is
confirmed (reported: at least ``min_duration`` after its score first reached the threshold) while the object is
present: precision is the share of events that match one, recall the share of occurrences that some event matches,
and the onset delay runs from the occurrence's start to the first matching event's confirmation.
"""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lbedge import Pipeline, load_bundle
from lbedge.watch import FUSED, Interval, ScoreRecorder, WatchConfig, WatchEngine, WatchEvent, calibrate, load_watch

from .demo import demo_media, demo_sources
from .models import bundle_dirs, ensure_text_bundle

#: the sources a watch evaluation streams (audio gives one window per scene: too coarse for onsets)
EVAL_SOURCES: tuple[str, ...] = ("rgb", "depth", "thermal")
_MODALITY = {"rgb": "image", "depth": "depth", "thermal": "thermal", "audio": "audio"}


def category(label: str) -> str:
    """The object of a scene label: ``"a ball"`` -> ``"ball"``."""
    return label.removeprefix("a ").removeprefix("an ")


def truth_intervals(media: Mapping[str, Any]) -> list[Interval]:
    """One interval per scene of :func:`~lbedge.lbmini.demo.demo_media`'s recordings, its object present."""
    return [
        Interval(float(s["time"][0]), float(s["time"][1]), frozenset({category(s["label"])})) for s in media["scenes"]
    ]


def write_truth(media: Mapping[str, Any], path: str | Path) -> Path:
    """The recordings' ground truth as a ``lbedge watch calibrate --truth`` file."""
    path = Path(path)
    doc = [{"start": iv.start, "end": iv.end, "present": sorted(iv.present)} for iv in truth_intervals(media)]
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def occurrences(media: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Object -> its (start, end) times, consecutive scenes of one object merged into one occurrence."""
    out: dict[str, list[tuple[float, float]]] = {}
    for iv in truth_intervals(media):
        for obj in iv.present:
            spans = out.setdefault(obj, [])
            if spans and abs(spans[-1][1] - iv.start) < 1e-6:
                spans[-1] = (spans[-1][0], iv.end)
            else:
                spans.append((iv.start, iv.end))
    return out


def score_events(
    events: Sequence[WatchEvent],
    truth: Mapping[str, Sequence[tuple[float, float]]],
    watch: WatchConfig,
    streams: Sequence[str],
    duration: float,
) -> list[dict[str, Any]]:
    """Per detector and stream: events, occurrences, precision, recall, mean and worst onset delay, false alarms
    per minute (``duration``: the recordings' seconds)."""
    rows = []
    for d in watch.detectors:
        occ = list(truth.get(d.name, []))
        for stream in d.streams(list(streams)):
            evs = [e for e in events if e.detector == d.name and e.stream == stream and e.kind == "end"]
            matched = [any(a <= e.confirmed < b for a, b in occ) for e in evs]
            delays = []
            for a, b in occ:
                hits = [e for e in evs if a <= e.confirmed < b]
                if hits:
                    delays.append(min(e.confirmed for e in hits) - a)
            false = len(evs) - sum(matched)
            rows.append(
                {
                    "detector": d.name,
                    "stream": stream,
                    "threshold": d.threshold_for(stream),
                    "events": len(evs),
                    "occurrences": len(occ),
                    "precision": sum(matched) / len(evs) if evs else None,
                    "recall": len(delays) / len(occ) if occ else None,
                    "onset_delay_s": statistics.mean(delays) if delays else None,
                    "onset_delay_max_s": max(delays) if delays else None,
                    "false_per_min": false / (duration / 60.0) if duration > 0 else None,
                }
            )
    return rows


def _pipeline(watch: WatchConfig, media: Mapping[str, Any], encoders: Mapping[str, Any], sources: Sequence[str]):
    all_sources = demo_sources(dict(media), realtime=False)
    chosen = {n: s for n, s in all_sources.items() if n in sources}
    labels = watch.label_set()
    return Pipeline(
        chosen,
        {_MODALITY[n]: encoders[_MODALITY[n]] for n in chosen},
        labels,
        templates=list(watch.templates) if watch.templates is not None else None,
        top_k=len(labels),
        smoothing="none",
        sync_clock="device",  # the recordings' own times: fusion and events do not depend on the reading speed
        max_batch=1,  # the sources in step, so that fusion sees each source's frame of the moment
    )


def run_watch(
    watch: WatchConfig, media: Mapping[str, Any], encoders: Mapping[str, Any], sources: Sequence[str] = EVAL_SOURCES
) -> WatchEngine:
    """Stream the recordings of ``media`` through the pipeline with ``watch`` attached; returns its engine (closed:
    ``engine.events`` holds every finished event)."""
    pipe = _pipeline(watch, media, encoders, sources)
    engine = pipe.watch(watch)
    with pipe:
        for _ in pipe:
            pass
    engine.close()
    return engine


def record_scores(
    watch: WatchConfig, media: Mapping[str, Any], encoders: Mapping[str, Any], sources: Sequence[str] = EVAL_SOURCES
) -> ScoreRecorder:
    """Every detector's score on every stream of the recordings (for calibration)."""
    pipe = _pipeline(watch, media, encoders, sources)
    rec = ScoreRecorder(watch, list(pipe.sources), fusion_tolerance=pipe.sync_tolerance, fusion_skew=10.0)
    pipe.on_result(rec.update)
    with pipe:
        for _ in pipe:
            pass
    rec.close()
    return rec


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def evaluate_watch(
    watch: WatchConfig | str | Path,
    *,
    out: str | Path = "out/watch-eval",
    scenes: int = 40,
    seed: int = 3,
    calib_scenes: int = 40,
    calib_seed: int = 4,
    false_alarm_rate: float = 0.01,
    student: bool = False,
    sources: Sequence[str] = EVAL_SOURCES,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``watch`` (hand-set thresholds) on ``scenes`` held-out scenes (``seed``), calibrate it on
    ``calib_scenes`` other scenes (``calib_seed``, ground truth from the world, ``false_alarm_rate`` per frame) and
    run the calibrated watch on the same test scenes. Returns both tables' rows, the calibration report and where
    the calibrated watch file was written."""
    cfg = load_watch(watch)
    out = Path(out)
    ensure_text_bundle(say=say)
    encoders = {m: load_bundle(d) for m, d in bundle_dirs(student=student).items() if m != "audio"}
    test = demo_media(out / f"test-{scenes}-{seed}", scenes=scenes, seed=seed)
    calib = demo_media(out / f"calib-{calib_scenes}-{calib_seed}", scenes=calib_scenes, seed=calib_seed)
    say(f"recorded {scenes} test scenes (seed {seed}) and {calib_scenes} calibration scenes (seed {calib_seed})")
    duration = scenes * float(test["seconds_per_scene"])
    truth = occurrences(test)
    engine = run_watch(cfg, test, encoders, sources)
    hand = score_events(engine.events, truth, cfg, [*sources, FUSED], duration)
    say(f"hand-set thresholds: {len(engine.events)} events")
    rec = record_scores(cfg, calib, encoders, sources)
    tuned, report = calibrate(
        cfg,
        rec.scores,
        false_alarm_rate=false_alarm_rate,
        truth=truth_intervals(calib),
        note=f"lb-mini world, {calib_scenes} held-out scenes, seed {calib_seed}",
    )
    calibrated_file = out / "calibrated.toml"
    calibrated_file.write_text(tuned.to_toml(), encoding="utf-8")
    engine = run_watch(tuned, test, encoders, sources)
    cal = score_events(engine.events, truth, tuned, [*sources, FUSED], duration)
    say(f"calibrated thresholds: {len(engine.events)} events")
    return {
        "scenes": scenes,
        "seed": seed,
        "calib_scenes": calib_scenes,
        "calib_seed": calib_seed,
        "false_alarm_rate": false_alarm_rate,
        "student": student,
        "cpu": cpu_model(),
        "hand_set": hand,
        "calibrated": cal,
        "calibration": report,
        "calibrated_file": str(calibrated_file),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_table(result: Mapping[str, Any]) -> str:
    """The evaluation as a Markdown table: per detector and stream, hand-set beside calibrated."""
    head = (
        "| detector | stream | occurrences | hand-set: events | precision | recall | onset delay (s) | "
        "calibrated: threshold | events | precision | recall | onset delay (s) | false alarms/min |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for h, c in zip(result["hand_set"], result["calibrated"]):
        lines.append(
            f"| {h['detector']} | {h['stream']} | {h['occurrences']} | {h['events']} | {_pct(h['precision'])} | "
            f"{_pct(h['recall'])} | {_sec(h['onset_delay_s'])} | {c['threshold']:.3f} | {c['events']} | "
            f"{_pct(c['precision'])} | {_pct(c['recall'])} | {_sec(c['onset_delay_s'])} | "
            f"{c['false_per_min']:.1f} |"
        )
    return "\n".join(lines)


__all__ = [
    "EVAL_SOURCES",
    "evaluate_watch",
    "markdown_table",
    "occurrences",
    "record_scores",
    "run_watch",
    "score_events",
    "truth_intervals",
    "write_truth",
]
