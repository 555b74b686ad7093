"""``make demo``: lb-mini's INT8 bundles on recorded held-out scenes of its world, streamed through the live
pipeline (RGB MP4, RealSense recording, 16-bit thermal frames, WAV), with each scene's labels scored."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lbedge import Pipeline, load_bundle
from lbedge.demo import VIDEO_SUFFIXES, run_demo
from lbedge.gate import ChangeGate
from lbedge.web import WebView

from .evaluation import world_version
from .models import bundle_dirs, ensure_text_bundle
from .world import sample_scenes, write_recordings

DEMO_LABELS: tuple[str, ...] = ("ball", "box", "cone", "ring", "bar")
DEMO_TEMPLATES: tuple[str, ...] = ("a {}",)  # "a ball": the canonical label every training caption list starts with


def demo_media(
    out: str | Path, *, scenes: int = 8, seed: int = 2, fps: float = 8.0, seconds_per_scene: float = 2.0
) -> dict:
    """Record ``scenes`` held-out scenes of the world as sensor recordings (once; reused when ``truth.json``
    matches): an MP4 (RGB), a RealSense recording (depth; a 16-bit PNG folder without pyrealsense2), Lepton
    16-bit PNG frames (thermal) and a WAV (audio). Returns ``truth.json``'s contents plus ``root``."""
    out = Path(out)
    truth, stamp = out / "truth.json", out / "world-version"
    want = [s.to_dict() for s in sample_scenes(scenes, "heldout", seed)]
    if truth.is_file() and stamp.is_file() and stamp.read_text() == world_version():
        doc = json.loads(truth.read_text(encoding="utf-8"))
        if (
            [{**s["attributes"], "seed": s["seed"]} for s in doc["scenes"]] == want
            and doc["fps"] == fps
            and doc["seconds_per_scene"] == seconds_per_scene
        ):
            return {**doc, "root": str(out)}
    write_recordings(out, sample_scenes(scenes, "heldout", seed), fps=fps, seconds_per_scene=seconds_per_scene)
    stamp.write_text(world_version())
    return {**json.loads(truth.read_text(encoding="utf-8")), "root": str(out)}


def demo_sources(media: dict, *, realtime: bool = True) -> dict:
    """The pipeline sources of :func:`demo_media`'s recordings: name -> Source."""
    from lbedge.sensors.audio import AudioFileSource
    from lbedge.sensors.rgb import VideoFileSource
    from lbedge.sensors.sequences import DepthSequenceSource, ThermalSequenceSource

    root, files, fps = Path(media["root"]), media["files"], float(media["fps"])
    if files.get("depth"):
        from lbedge.sensors.realsense import RealSenseRecording

        depth = RealSenseRecording(root / files["depth"], realtime=realtime, lossless=True, name="depth")
    else:
        depth = DepthSequenceSource(root / files["depth_frames"], fps=fps, realtime=realtime, name="depth")
    span = float(media["seconds_per_scene"])
    return {
        "rgb": VideoFileSource(root / files["rgb"], realtime=realtime, name="rgb"),
        "depth": depth,
        "thermal": ThermalSequenceSource(
            root / files["thermal"], profile=files["thermal_profile"], fps=fps, realtime=realtime, name="thermal"
        ),
        "audio": AudioFileSource(root / files["audio"], window=span, hop=span, realtime=realtime, name="audio"),
    }


class SceneTally:
    """Per scene of a demo recording: each source's labels and the fused labels, to print and score."""

    def __init__(self, media: dict):
        self.span = float(media["seconds_per_scene"])
        self.truth = [s["label"].removeprefix("a ").removeprefix("an ") for s in media["scenes"]]
        self.labels: dict[tuple[int, str], list[str]] = {}
        self.scores: dict[tuple[int, str], list[float]] = {}

    def scene_of(self, timestamp: float) -> int | None:
        k = int((timestamp + 1e-6) // self.span)
        return k if 0 <= k < len(self.truth) else None

    def __call__(self, result) -> None:
        u = result.update
        t = u.frame.device_timestamp if u.frame is not None else None
        k = self.scene_of(t) if t is not None else None
        if k is None:
            return
        self.labels.setdefault((k, u.source), []).append(u.raw_label)
        self.scores.setdefault((k, u.source), []).append(float(u.scores.get(u.raw_label, 0.0)))
        if result.fused_label is not None and len(result.fused_sources) > 1:
            self.labels.setdefault((k, "fused"), []).append(result.fused_label)
            self.scores.setdefault((k, "fused"), []).append(float(result.fused_scores.get(result.fused_label, 0)))

    def summary(self, sources: Sequence[str]) -> tuple[list[str], dict[str, float]]:
        """Lines (one per scene: truth, then each source's most frequent label with its mean score) and each
        source's accuracy over its classified frames."""
        cols = [*sources, "fused"]
        lines, hits = [], {c: [0, 0] for c in cols}
        for k, truth in enumerate(self.truth):
            cells = []
            for c in cols:
                labs = self.labels.get((k, c), [])
                if not labs:
                    cells.append(f"{c}: -")
                    continue
                top, _ = Counter(labs).most_common(1)[0]
                score = np.mean([s for lab, s in zip(labs, self.scores[(k, c)]) if lab == top])
                hits[c][0] += sum(lab == truth for lab in labs)
                hits[c][1] += len(labs)
                cells.append(f"{c}: {top} {score:.2f}{'' if top == truth else ' x'}")
            lines.append(
                f"scene {k + 1} ({k * self.span:.0f}-{(k + 1) * self.span:.0f} s) is a {truth:<5}| " + " | ".join(cells)
            )
        return lines, {c: h / n for c, (h, n) in hits.items() if n}


def run_lb_mini_demo(
    *,
    out: str | Path = "out",
    video: str | Path | None = "default",
    scenes: int = 8,
    seed: int = 2,
    realtime: bool = True,
    student: bool = False,
    window: bool = False,
    say: Callable[[str], None] = print,
    gate: ChangeGate | None = None,
    web: WebView | None = None,
    web_linger: float | None = None,
) -> dict:
    """``make demo``: lb-mini's INT8 bundles classify recorded held-out scenes streamed through the live
    pipeline (RGB MP4, RealSense recording, 16-bit thermal frames, WAV, recorded under ``out``); prints per
    scene each sensor's and the fused label with scores, then FPS and accuracy; writes the mosaic of every sensor
    (RGB, depth, thermal, the audio's spectrogram, labels, scores, the fused label) as the video ``video``
    (default ``out/lb-mini-demo.mp4``, H.264; a .webm is VP9, a folder gets PNGs; None: no video). ``gate``: the
    pipeline's change gate for every source (None: off). ``web``: a started :class:`~lbedge.web.WebView` serving
    the run to a browser, up ``web_linger`` seconds after the recordings end (None: until Ctrl-C)."""
    out = Path(out)
    ensure_text_bundle(say=say)
    media = demo_media(out / "lb-mini-media", scenes=scenes, seed=seed)
    say(f"{scenes} held-out scenes (attribute combinations lb-mini never saw) recorded in {media['root']}")
    dirs = bundle_dirs(student=student)
    encoders = {m: load_bundle(d) for m, d in dirs.items()}
    for m, enc in encoders.items():
        say(f"  {m:<8} {dirs[m]} ({enc.precision['vision']} vision, {enc.precision['text']} text, {enc.vision.name})")
    sources = demo_sources(media, realtime=realtime)
    tally = SceneTally(media)
    pipe = Pipeline(sources, encoders, list(DEMO_LABELS), templates=list(DEMO_TEMPLATES), gate=gate)
    video_path = out / "lb-mini-demo.mp4" if video == "default" else (Path(video) if video else None)
    for src in sources.values():  # open now: a recording's frame rate (the video's) is known once it is open
        src.open()
    stats = run_demo(
        pipe,
        output=video_path,
        jsonl=None,
        window=window,
        say=say,
        on_result=tally,
        web=web,
        web_linger=web_linger,
    )
    lines, accuracy = tally.summary(list(sources))
    for line in lines:
        say(line)
    for name, st in stats["sources"].items():
        say(
            f"  {name:<8} {st['processed']:>4} classified at {st['fps']:>6} FPS, latency {st['latency_ms']} ms "
            f"(preprocess {st['preprocess_ms']} ms, model {st['infer_ms']} ms), "
            f"correct {100 * accuracy.get(name, 0):.0f}%"
            + (f", {st['lost']} lost" if st.get("lost") else "")
            + (f", {st['reused']} reused (change gate)" if st.get("reused") else "")
        )
    if "fused" in accuracy:
        say(f"  fused    correct {100 * accuracy['fused']:.0f}% of fused results")
    if video_path is not None and video_path.suffix.lower() not in VIDEO_SUFFIXES:
        say(f"pictures of every sensor, one per result: {video_path}/")
    elif video_path is not None and stats.get("video_frames"):
        say(
            f"video of every sensor: {video_path} ({stats['video_codec']}, {stats['video_frames']} frames at "
            f"{stats['video_fps']:g} FPS, one per {stats['video_source']} frame)"
        )
    return {**stats, "accuracy": accuracy, "scenes": lines, "video": str(video_path) if video_path else None}


__all__ = ["DEMO_LABELS", "DEMO_TEMPLATES", "SceneTally", "demo_media", "demo_sources", "run_lb_mini_demo"]
