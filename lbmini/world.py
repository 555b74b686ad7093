"""A deterministic synthetic multi-sensor world: the training data of lbedge's own small model and its demo
recordings.

Every scene holds one or two objects of one of five categories standing on a floor in front of a wall, seen
at once by an RGB camera, a depth camera, a radiometric thermal camera (FLIR Lepton encoding) and heard by a
microphone. Each category has a signature in every modality, so that one text label is recognisable from
any sensor:

========  =====================================  ==========================================================
category  shape (RGB, depth, thermal)            sound
========  =====================================  ==========================================================
ball      disc; a sphere in depth                a bouncing rhythm of short clicks (intervals shrinking)
box       square with a lit lid; flat front      a low steady hum (120-180 Hz) with harmonics
cone      triangle, apex up; a cone in depth     rising chirps
ring      annulus; a torus, background in hole   a high bell tone (1.5-2.5 kHz), decaying, repeated
bar       wide flat rectangle; flat front        falling chirps
========  =====================================  ==========================================================

Attributes of a :class:`Scene`: category, colour, size (physical: small ~0.27 m, large ~0.44 m), position
(left/center/right third of the image), count (1 or 2), motion over the clip (still, moving left, moving
right), temperature (cold 5-12 C, warm 30-38 C, hot 60-90 C), distance (near 0.7-1.3 m, far 1.6-2.3 m) and
loudness (quiet, loud). Continuous parameters (exact distance, physical size, shape proportions, pitch, rhythm,
wall and floor colours, textures, noise) are drawn per scene, so no modality is a single template.

The geometry is one pinhole camera (focal length :data:`FOCAL` image widths, height :data:`CAMERA_HEIGHT_M`
above the floor, looking horizontally) shared by the three image sensors: an object of ``s`` metres at ``z``
metres spans ``FOCAL * W * s / z`` pixels and stands on the floor at row ``cy + FOCAL * W * h / z``, so far
objects are both smaller and higher in the image, and object pixels are the same in RGB, depth and thermal.
Images are square (lbedge's preprocessing centre-crops to a square and would cut the left/right thirds of a
wider frame); thermal frames have the RGB size (the Lepton's encoding, not its 160x120 resolution). Moving
objects travel ~a fifth of the width over the clip and are motion-blurred, so "moving" shows in a still image
(its direction only in a clip).

Randomness: scene ``i`` of ``sample_scenes(n, split, seed)`` comes from its own generator
(``SeedSequence(seed, spawn_key=(split, i))``) and renders from generators seeded by ``Scene.seed``, so a scene
is identical whatever else is generated, whatever ``n``, and whatever image size or frame count is rendered
(layout and audio do not depend on them).

Splits: ``train`` and ``val`` scenes never contain the held-out (category, colour) pairs
:data:`HELDOUT_COLOURS` and (category, temperature) pairs :data:`HELDOUT_TEMPERATURES`; every ``heldout`` scene
contains at least one of them. Captions come in two disjoint phrasings (:data:`PHRASINGS` ``"train"`` and
``"heldout"``); the first text of every caption list is the canonical label ``"a ball"`` in both.

Writers: :func:`write_dataset` (per sensor a folder of files with ``train.jsonl``/``val.jsonl`` manifests that
:func:`lbedge.train.data.read_samples` reads) and :func:`write_recordings` (scenes back to back as an MP4, a
RealSense recording, a Lepton PNG sequence and a WAV, with ``truth.json``).

Only numpy, OpenCV and the standard library are used (pyrealsense2 for the optional RealSense recording).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

# --- the world's vocabulary -------------------------------------------------------------------------------------
CATEGORIES: tuple[str, ...] = ("ball", "box", "cone", "ring", "bar")
#: mean RGB of each colour (jittered per scene, then shaded)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 80, 215),
    "yellow": (230, 205, 40),
    "white": (236, 236, 236),
    "purple": (135, 50, 175),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "center", "right")
COUNTS: tuple[int, ...] = (1, 2)
MOTIONS: tuple[str, ...] = ("still", "left", "right")
TEMPERATURES: tuple[str, ...] = ("cold", "warm", "hot")
DISTANCES: tuple[str, ...] = ("near", "far")
LOUDNESS: tuple[str, ...] = ("quiet", "loud")

#: attribute name -> its values, in the order scenes are sampled
ATTRIBUTES: dict[str, tuple[Any, ...]] = {
    "category": CATEGORIES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "position": POSITIONS,
    "count": COUNTS,
    "motion": MOTIONS,
    "temperature": TEMPERATURES,
    "distance": DISTANCES,
    "loudness": LOUDNESS,
}

#: the sensor modalities captions are written for (lbedge's names); the key "scene" of :data:`PERCEIVABLE` is all
#: of them together (``modality=None``)
MODALITIES: tuple[str, ...] = ("image", "video", "depth", "thermal", "audio")
#: what each modality can perceive, in caption order ("sound" is the category's sound)
PERCEIVABLE: dict[str, tuple[str, ...]] = {
    "image": ("category", "count", "size", "colour", "position", "motion"),  # motion: "moving" (blur), no direction
    "video": ("category", "count", "size", "colour", "position", "motion"),
    "depth": ("category", "count", "size", "position", "distance"),
    "thermal": ("category", "count", "size", "position", "temperature"),
    "audio": ("category", "loudness", "sound"),
    "scene": (
        "category",
        "count",
        "size",
        "colour",
        "position",
        "distance",
        "temperature",
        "motion",
        "loudness",
        "sound",
    ),
}

#: (category, colour) pairs that never occur in train/val scenes (every colour but blue held out once)
HELDOUT_COLOURS: frozenset[tuple[str, str]] = frozenset(
    {("ball", "purple"), ("box", "yellow"), ("cone", "white"), ("ring", "green"), ("bar", "red")}
)
#: (category, temperature) pairs that never occur in train/val scenes
HELDOUT_TEMPERATURES: frozenset[tuple[str, str]] = frozenset(
    {("ball", "hot"), ("box", "cold"), ("cone", "warm"), ("ring", "cold"), ("bar", "hot")}
)

SPLITS: dict[str, int] = {"train": 0, "val": 1, "heldout": 2}

# --- physical constants of the world ------------------------------------------------------------------------------
FOCAL = 1.0  # focal length in image widths (horizontal field of view ~53 degrees)
CAMERA_HEIGHT_M = 0.3  # camera above the floor, looking horizontally
WALL_M = (4.7, 5.3)  # wall distance
SIZE_M = {"small": (0.24, 0.3), "large": (0.4, 0.48)}
DISTANCE_M = {"near": (0.7, 1.3), "far": (1.6, 2.3)}
TEMPERATURE_C = {"cold": (5.0, 12.0), "warm": (30.0, 38.0), "hot": (60.0, 90.0)}
AMBIENT_C = (18.0, 24.0)
#: largest dimension of each category relative to the scene's physical size (bars are wide)
CATEGORY_SCALE = {"ball": 1.0, "box": 0.9, "cone": 1.1, "ring": 1.05, "bar": 1.35}
SAMPLE_RATE = 16000
#: pixel spacing of two objects of a pair, in object widths
PAIR_SPACING = 1.3


def label(category: str) -> str:
    """The canonical zero-shot label of a category: ``"a ball"``."""
    return f"a {category}"


#: the canonical labels, one per category (the first text of every caption list)
LABELS: tuple[str, ...] = tuple(label(c) for c in CATEGORIES)


# --- scenes -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """The attributes of one scene and the seed its rendering and captions are drawn from."""

    category: str
    colour: str = "red"
    size: str = "small"
    position: str = "center"
    count: int = 1
    motion: str = "still"
    temperature: str = "warm"
    distance: str = "near"
    loudness: str = "loud"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"Scene.{name} must be one of {values}, got {getattr(self, name)!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Scene.seed must be a non-negative int, got {self.seed!r}")

    @property
    def label(self) -> str:
        """The canonical label, ``"a ball"``."""
        return label(self.category)

    @property
    def heldout_pairs(self) -> tuple[tuple[str, str], ...]:
        """The held-out attribute pairs this scene contains (empty for every train/val scene)."""
        pairs = [(self.category, self.colour), (self.category, self.temperature)]
        held = HELDOUT_COLOURS | HELDOUT_TEMPERATURES
        return tuple(p for p in pairs if p in held)

    def attributes(self) -> dict[str, Any]:
        """The attributes as a dict (without the seed)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def to_dict(self) -> dict[str, Any]:
        """Attributes and seed, JSON-ready; ``Scene(**d)`` rebuilds the scene."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Scene":
        """A copy with some attributes changed (same seed: same layout, noise and pitch)."""
        return dataclasses.replace(self, **changes)


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split], int(index))))


def sample_scene(index: int, split: str = "train", seed: int = 0) -> Scene:
    """Scene ``index`` of ``split`` for ``seed``: uniform attributes, resampled (same generator) until the scene
    respects the split (train/val: no held-out pair; heldout: at least one)."""
    rng = _scene_rng(seed, split, index)
    while True:
        attrs = {name: values[int(rng.integers(len(values)))] for name, values in ATTRIBUTES.items()}
        scene = Scene(**attrs, seed=int(rng.integers(0, 2**63 - 1)))
        if bool(scene.heldout_pairs) == (split == "heldout"):
            return scene


def sample_scenes(n: int, split: str = "train", seed: int = 0, *, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + n - 1`` of ``split`` (``"train"``, ``"val"``: train rules, another stream;
    ``"heldout"``: unseen combinations). Scene ``i`` does not depend on ``n`` or ``start``."""
    return [sample_scene(i, split, seed) for i in range(start, start + n)]


# --- phrasing -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phrasing:
    """One set of phrasing templates for captions.

    ``labels[modality]``: short templates with ``{a}`` (``"a ball"``). ``sentences``: detailed caption frames
    with ``{core}`` (subject and position: ``"two small red balls on the left"``), ``{rest}`` (the other clauses)
    and ``{view}`` (``views[modality]``: what that sensor's data is called). ``audio_sentences``: with ``{a}``,
    ``{loud}``, ``{sound}``. ``sound_clause``: how an all-sensor caption mentions the sound. Tags are
    ``tag_format`` items joined by ``tag_joiner``.
    """

    name: str
    labels: Mapping[str, tuple[str, ...]]
    sentences: tuple[str, ...]
    audio_sentences: tuple[str, ...]
    sound_clause: str
    views: Mapping[str, str]
    counts: Mapping[int, str]
    joiner: str
    last_joiner: str
    positions: Mapping[str, str]
    distances: Mapping[str, str]
    temperatures: Mapping[str, str]
    motions: Mapping[str, str]  # still / left / right / moving (direction-free, for still images)
    sounds: Mapping[str, str]
    loudness: Mapping[str, str]
    tag_format: str
    tag_joiner: str

    def templates(self) -> frozenset[str]:
        """Every template and phrase of this phrasing (disjoint between train and held-out phrasings)."""
        out: set[str] = set(self.sentences) | set(self.audio_sentences) | {self.sound_clause}
        for group in self.labels.values():
            out |= set(group)
        for table in (
            self.positions,
            self.distances,
            self.temperatures,
            self.motions,
            self.sounds,
            self.views,
            self.loudness,
        ):
            out |= set(table.values())
        out |= {self.tag_format}
        return frozenset(out)


TRAIN_PHRASING = Phrasing(
    name="train",
    labels={
        "image": ("a photo of {a}", "a picture of {a}", "an image of {a}"),
        "video": ("a video of {a}", "a clip of {a}"),
        "depth": ("a depth map of {a}", "a depth image of {a}"),
        "thermal": ("a thermal image of {a}", "an infrared image of {a}"),
        "audio": ("the sound of {a}", "a recording of {a}"),
        "scene": ("a scene with {a}",),
    },
    sentences=("{core}, {rest}", "{view} of {core}, {rest}"),
    audio_sentences=("{a} making a {loud} {sound}", "a {loud} {sound} from {a}"),
    sound_clause="making a {loud} {sound}",
    views={
        "image": "a photo",
        "video": "a video",
        "depth": "a depth map",
        "thermal": "a thermal image",
        "audio": "a recording",
        "scene": "a scene",
    },
    counts={1: "a", 2: "two"},
    joiner=", ",
    last_joiner=", ",
    positions={"left": "on the left", "center": "in the center", "right": "on the right"},
    distances={"near": "close to the camera", "far": "far from the camera"},
    temperatures={"cold": "cold", "warm": "warm", "hot": "hot"},
    motions={"still": "standing still", "left": "moving left", "right": "moving right", "moving": "moving"},
    sounds={
        "ball": "bouncing sound",
        "box": "low humming sound",
        "cone": "rising whistle",
        "ring": "high ringing bell",
        "bar": "falling whistle",
    },
    loudness={"quiet": "quiet", "loud": "loud"},
    tag_format="{value}",
    tag_joiner=", ",
)

HELDOUT_PHRASING = Phrasing(
    name="heldout",
    labels={
        "image": ("there is {a} here", "this picture shows {a}"),
        "video": ("this clip shows {a}",),
        "depth": ("a range image showing {a}",),
        "thermal": ("a heat map showing {a}",),
        "audio": ("this is what {a} sounds like",),
        "scene": ("somewhere there is {a}",),
    },
    sentences=("there is {core}, {rest}", "this {view} shows {core}, {rest}"),
    audio_sentences=("you can hear {a}: a {loud} {sound}", "{a} producing a {loud} {sound}"),
    sound_clause="producing a {loud} {sound}",
    views={
        "image": "picture",
        "video": "clip",
        "depth": "range image",
        "thermal": "heat map",
        "audio": "audio clip",
        "scene": "place",
    },
    counts={1: "one", 2: "a pair of"},
    joiner=", ",
    last_joiner=" and ",
    positions={"left": "at the left side", "center": "in the middle", "right": "at the right side"},
    distances={"near": "near the sensor", "far": "in the distance"},
    temperatures={"cold": "at a low temperature", "warm": "at body temperature", "hot": "at a high temperature"},
    motions={"still": "not moving", "left": "heading left", "right": "heading right", "moving": "in motion"},
    sounds={
        "ball": "rhythmic knocking",
        "box": "deep steady drone",
        "cone": "tone sweeping upward",
        "ring": "clear chime",
        "bar": "tone sweeping downward",
    },
    loudness={"quiet": "faint", "loud": "strong"},
    tag_format="{name}: {value}",
    tag_joiner="; ",
)

#: caption phrasings by name; ``val`` captions use the train phrasing
PHRASINGS: dict[str, Phrasing] = {"train": TRAIN_PHRASING, "heldout": HELDOUT_PHRASING}
_PLURAL = {"ball": "balls", "box": "boxes", "cone": "cones", "ring": "rings", "bar": "bars"}
_MODALITY_CODE = {m: i for i, m in enumerate(MODALITIES + ("scene",))}


def templates(split: str = "train") -> frozenset[str]:
    """All phrasing templates of ``split`` (``"train"``/``"val"`` or ``"heldout"``)."""
    return _phrasing(split).templates()


def _phrasing(split: str) -> Phrasing:
    if split == "val":
        split = "train"
    if split not in PHRASINGS:
        raise ValueError(f"phrasing split must be one of train, val, heldout; got {split!r}")
    return PHRASINGS[split]


def _join(clauses: Sequence[str], ph: Phrasing) -> str:
    if len(clauses) <= 1:
        return "".join(clauses)
    return ph.joiner.join(clauses[:-1]) + ph.last_joiner + clauses[-1]


def _subject(scene: Scene, ph: Phrasing, seen: Sequence[str]) -> str:
    words = [ph.counts[scene.count]]
    if "size" in seen:
        words.append(scene.size)
    if "colour" in seen:
        words.append(scene.colour)
    words.append(_PLURAL[scene.category] if scene.count == 2 else scene.category)
    return " ".join(words)


def _motion_key(scene: Scene, modality: str) -> str:
    """A still image shows motion blur but not its direction."""
    return "moving" if modality == "image" and scene.motion != "still" else scene.motion


def tags(scene: Scene, modality: str | None = None, split: str = "train") -> str:
    """Attribute tags of what ``modality`` perceives: ``"ball, two, small, red, left, still"`` (train phrasing)
    or ``"object: ball; count: 2; ..."`` (held-out phrasing)."""
    ph, v = _phrasing(split), _check_modality(modality)
    seen = PERCEIVABLE[v]
    values = {
        "category": scene.category,
        "count": {1: "one", 2: "two"}[scene.count],
        "size": scene.size,
        "colour": scene.colour,
        "position": scene.position,
        "distance": scene.distance,
        "temperature": scene.temperature,
        "motion": {"still": "still", "left": "moving left", "right": "moving right", "moving": "moving"}[
            _motion_key(scene, v)
        ],
        "loudness": scene.loudness,
        "sound": ph.sounds[scene.category],
    }
    if ph.name == "heldout":
        values["count"] = str(scene.count)
    names = {"category": "object"}
    return ph.tag_joiner.join(ph.tag_format.format(name=names.get(k, k), value=values[k]) for k in seen)


def _check_modality(modality: str | None) -> str:
    if modality is None:
        return "scene"
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES} or None (all sensors), got {modality!r}")
    return modality


def captions(scene: Scene, modality: str | None = None, split: str = "train") -> list[str]:
    """The texts of a scene as ``modality`` (``"image"``, ``"video"``, ``"depth"``, ``"thermal"``, ``"audio"``;
    None: all sensors together) perceives it, in the phrasing of ``split`` (``"val"`` uses the train phrasing).

    In order: the canonical label (``"a ball"``, identical in every split: use it as the zero-shot class), a
    modality label (``"a depth map of a ball"``), the subject (``"two small balls"``; not for audio), two
    detailed captions, and the attribute tags. Only attributes the modality perceives are mentioned
    (:data:`PERCEIVABLE`). Deterministic per (scene, modality, split).
    """
    v = _check_modality(modality)
    ph = _phrasing(split)
    rng = np.random.default_rng(
        np.random.SeedSequence(scene.seed, spawn_key=(3, _MODALITY_CODE[v], int(ph.name == "heldout")))
    )
    seen = PERCEIVABLE[v]
    a = label(scene.category)
    out = [a, ph.labels[v][int(rng.integers(len(ph.labels[v])))].format(a=a)]
    loud, sound = ph.loudness[scene.loudness], ph.sounds[scene.category]
    if v == "audio":
        out += [t.format(a=a, loud=loud, sound=sound) for t in ph.audio_sentences]
    else:
        subject = _subject(scene, ph, seen)
        out.append(subject)
        core = f"{subject} {ph.positions[scene.position]}" if "position" in seen else subject
        clauses = []
        if "distance" in seen:
            clauses.append(ph.distances[scene.distance])
        if "temperature" in seen:
            clauses.append(ph.temperatures[scene.temperature])
        if "motion" in seen:
            clauses.append(ph.motions[_motion_key(scene, v)])
        if "sound" in seen:
            clauses.append(ph.sound_clause.format(loud=loud, sound=sound))
        clauses = [clauses[i] for i in rng.permutation(len(clauses))]
        for frame in ph.sentences:
            text = frame.format(core=core, rest=_join(clauses, ph), view=ph.views[v])
            out.append(text.rstrip(", ").strip())
    out.append(tags(scene, modality, split))
    return list(dict.fromkeys(t for t in out if t))


# --- geometry -----------------------------------------------------------------------------------------------------
def camera_intrinsics(size: int) -> tuple[float, float, float, float]:
    """``(fx, fy, ppx, ppy)`` in pixels of the world's camera for ``size`` x ``size`` images."""
    f = FOCAL * size
    c = (size - 1) / 2.0
    return f, f, c, c


@dataclass
class _Layout:
    """Everything about a scene that does not depend on image size, frame count or per-frame noise."""

    wall_z: float
    wall_tilt: float
    ambient: float
    floor_dt: float
    wall_grad_t: float
    therm_tex_amp: float
    wall_rgb: np.ndarray
    floor_rgb: np.ndarray
    light: tuple[float, float]  # illumination gradient across x and y
    gain: float
    wall_tex: np.ndarray
    floor_tex: np.ndarray
    therm_tex: np.ndarray
    board_width: float
    board_contrast: float
    posters: list[tuple[float, float, float, float, np.ndarray, float]]
    obj_rgb: np.ndarray
    obj_temp: float
    proportion: float
    zs: list[float]  # per instance: footprint depth (m)
    ss: list[float]  # per instance: largest dimension (m)
    x_mid: float  # pair centre at mid-clip, image-width fraction (before fitting)
    travel: float  # image-width fraction travelled over the clip (signed)
    rgb_noise: float
    depth_noise: float
    thermal_noise: float
    band: float  # invalid-depth band at the left edge, image-width fraction


def _layout(scene: Scene) -> _Layout:
    rng = np.random.default_rng(np.random.SeedSequence(scene.seed, spawn_key=(0,)))
    u = rng.uniform
    wall_v = u(95, 185)
    wall_rgb = np.clip(wall_v + u(-14, 14, 3), 0, 255)
    floor_rgb = np.clip(u(55, 140) * np.array([1.0, u(0.85, 1.0), u(0.65, 0.95)]) + u(-8, 8, 3), 0, 255)
    posters = []
    for _ in range(int(rng.integers(0, 3))):
        w, h = u(0.08, 0.22), u(0.08, 0.2)
        x0, y0 = u(0.02, 0.98 - w), u(0.03, 0.32 - h / 2)
        grey = u(60, 210)
        tint = u(-1, 1, 3) * 0.2 * grey * u(0, 1)  # muted: never as saturated as an object
        posters.append((x0, y0, x0 + w, y0 + h, np.clip(grey + tint, 0, 255), float(u(-1.5, 1.0))))
    base = np.array(COLOURS[scene.colour], np.float64)
    obj_rgb = np.clip(base + u(-12, 12, 3), 0, 255)
    lo, hi = TEMPERATURE_C[scene.temperature]
    obj_temp = u(lo, hi)
    proportion = u(0, 1)
    s_lo, s_hi = SIZE_M[scene.size]
    d_lo, d_hi = DISTANCE_M[scene.distance]
    s0, z0 = u(0, 1), u(0, 1)
    scale = CATEGORY_SCALE[scene.category]
    zs, ss = [], []
    for k in range(2):  # always draw two, so count does not shift the stream
        dz, ds = u(-0.04, 0.04), u(-0.01, 0.01)
        if k < scene.count:
            zs.append(float(np.clip(d_lo + z0 * (d_hi - d_lo) + dz, d_lo, d_hi)))
            ss.append(float((s_lo + s0 * (s_hi - s_lo) + ds) * scale))
    x_mid = {"left": 0.22, "center": 0.5, "right": 0.78}[scene.position] + u(-0.04, 0.04)
    travel = u(0.18, 0.26) * {"still": 0.0, "left": -1.0, "right": 1.0}[scene.motion]
    return _Layout(
        wall_z=u(*WALL_M),
        wall_tilt=u(-0.25, 0.25),
        ambient=u(*AMBIENT_C),
        floor_dt=u(0.5, 2.5),
        wall_grad_t=u(0.5, 2.0),
        therm_tex_amp=u(0.2, 0.8),
        wall_rgb=wall_rgb,
        floor_rgb=floor_rgb,
        light=(u(-0.15, 0.15), u(-0.15, 0.15)),
        gain=u(0.8, 1.12),
        wall_tex=rng.standard_normal((6, 6)),
        floor_tex=rng.standard_normal((12, 12)),
        therm_tex=rng.standard_normal((5, 5)),
        board_width=u(0.12, 0.3),
        board_contrast=u(0.0, 0.06),
        posters=posters,
        obj_rgb=obj_rgb,
        obj_temp=obj_temp,
        proportion=proportion,
        zs=zs,
        ss=ss,
        x_mid=x_mid,
        travel=travel,
        rgb_noise=u(2.0, 5.0),
        depth_noise=u(0.008, 0.012),
        thermal_noise=u(0.04, 0.08),
        band=u(0.015, 0.04),
    )


@dataclass
class _Background:
    rgb: np.ndarray  # HxWx3 float32, 0..255 before gain
    depth: np.ndarray  # HxW float32 metres
    temp: np.ndarray  # HxW float32 degC
    floor: np.ndarray  # HxW bool


def _upsample(tex: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(tex.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _background(lay: _Layout, size: int) -> _Background:
    f, _, c, _ = camera_intrinsics(size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    wall_z = lay.wall_z / (1.0 - lay.wall_tilt * (xs - c) / f)
    dy = ys - c
    floor_z = np.where(dy > 0, f * CAMERA_HEIGHT_M / np.maximum(dy, 1e-3), np.inf).astype(np.float32)
    floor = floor_z < wall_z
    depth = np.where(floor, floor_z, wall_z).astype(np.float32)

    uu, vv = xs / (size - 1), ys / (size - 1)
    light = 1.0 + lay.light[0] * (uu - 0.5) + lay.light[1] * (vv - 0.5)
    wall = lay.wall_rgb.astype(np.float32) * (light * (1.0 + 0.07 * _upsample(lay.wall_tex, size)))[..., None]
    lateral = (xs - c) * np.where(floor, floor_z, 0.0) / f  # world X on the floor: board pattern
    boards = lay.board_contrast * np.sign(np.sin(2 * np.pi * lateral / lay.board_width))
    floor_shade = light * (1.0 + 0.08 * _upsample(lay.floor_tex, size) + boards)
    flo = lay.floor_rgb.astype(np.float32) * floor_shade[..., None]
    rgb = np.where(floor[..., None], flo, wall)

    temp = np.where(floor, lay.ambient - lay.floor_dt, lay.ambient + lay.wall_grad_t * (0.5 - vv))
    temp = temp + lay.therm_tex_amp * _upsample(lay.therm_tex, size)
    for x0, y0, x1, y1, colour, dt in lay.posters:
        sl = (
            slice(int(y0 * size), max(int(y0 * size) + 1, int(y1 * size))),
            slice(int(x0 * size), max(int(x0 * size) + 1, int(x1 * size))),
        )
        on_wall = ~floor[sl]
        rgb[sl] = np.where(on_wall[..., None], colour.astype(np.float32) * light[sl][..., None], rgb[sl])
        temp[sl] = np.where(on_wall, temp[sl] + dt, temp[sl])
    return _Background(rgb.astype(np.float32), depth, temp.astype(np.float32), floor)


@dataclass
class _Placed:
    cx: float  # pixel column of the object's axis
    base: float  # pixel row where it stands on the floor
    extent: float  # pixels of its largest dimension
    z: float
    s: float


def _place(scene: Scene, lay: _Layout, t: int, frames: int, size: int) -> list[_Placed]:
    f, _, c, _ = camera_intrinsics(size)
    extents = [f * s / z for s, z in zip(lay.ss, lay.zs)]
    widths = [e * _width_ratio(scene.category, lay.proportion) for e in extents]
    span = widths[0] + (PAIR_SPACING * widths[0] if scene.count == 2 else 0.0)
    # keep the whole trajectory in the frame where it fits, but the mid-clip centre always in its third
    xc, reach = lay.x_mid * size, span / 2 + 1 + abs(lay.travel) * size / 2
    if reach <= size - reach:
        xc = min(max(xc, reach), size - reach)
    third = POSITIONS.index(scene.position)
    xc = min(max(xc, (third / 3 + 0.02) * size), ((third + 1) / 3 - 0.02) * size)
    xc += lay.travel * size * ((t + 0.5) / frames - 0.5)
    offsets = [0.0] if scene.count == 1 else [-PAIR_SPACING * widths[0] / 2, PAIR_SPACING * widths[0] / 2]
    return [
        _Placed(xc + off - 0.5, c + f * CAMERA_HEIGHT_M / z, e, z, s)
        for off, e, z, s in zip(offsets, extents, lay.zs, lay.ss)
    ]


def _width_ratio(category: str, p: float) -> float:
    """Width / largest dimension of a category for the scene's proportion draw ``p`` in [0, 1]."""
    return {"ball": 1.0, "box": 1.0, "cone": 0.7 + 0.2 * p, "ring": 1.0, "bar": 1.0}[category]


_LIGHT = np.array([-0.45, -0.55, 0.70], np.float32) / np.linalg.norm([-0.45, -0.55, 0.70])


def _shape(
    category: str, p: float, xs: np.ndarray, ys: np.ndarray, e: float, s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alpha (anti-aliased coverage), shade, specular and depth protrusion (m, toward the camera) of one
    object on a pixel grid; ``xs`` from its axis, ``ys`` from where it stands (negative = up)."""
    zero = np.zeros(np.broadcast(xs, ys).shape, np.float32)
    if category == "ball":
        r = e / 2
        dx, dy = xs, ys + r
        rho = np.sqrt(dx * dx + dy * dy)
        sd = rho - r
        h = np.sqrt(np.clip(1 - (rho / r) ** 2, 0, 1))
        lam = np.clip((dx / r) * _LIGHT[0] + (dy / r) * _LIGHT[1] + h * _LIGHT[2], 0, 1)
        return np.clip(0.5 - sd, 0, 1), 0.3 + 0.75 * lam, 0.5 * lam**24, (s / 2) * h
    if category == "box":
        w, hg = e, e * (0.86 + 0.14 * p)
        dy = ys + hg / 2
        sd = np.maximum(np.abs(xs) - w / 2, np.abs(dy) - hg / 2)
        lid = dy < -hg / 2 + 0.17 * hg
        shade = np.where(lid, 1.05, 0.86 - 0.14 * (dy / hg + 0.5) - 0.08 * (xs / w))
        return np.clip(0.5 - sd, 0, 1), shade + zero, zero, zero + s / 2
    if category == "cone":
        hg, bw = e, e * (0.7 + 0.2 * p)
        dy = ys + hg / 2
        v = np.clip((dy + hg / 2) / hg, 0, 1)  # 0 at the apex, 1 at the base
        hw = np.maximum(v * bw / 2, 1e-3)
        side = (np.abs(xs) - v * bw / 2) * hg / math.hypot(hg, bw / 2)
        sd = np.maximum(side, np.maximum(dy - hg / 2, -(dy + hg / 2)))
        nx = np.clip(xs / hw, -1, 1)
        h = v * np.sqrt(np.clip(1 - nx * nx, 0, 1))
        shade = 0.4 + 0.55 * (1 - nx) / 2 + 0.1 * (1 - v)
        return np.clip(0.5 - sd, 0, 1), shade, zero, (s * (0.7 + 0.2 * p) / 2) * h
    if category == "ring":
        ro = e / 2
        ri = ro * (0.45 + 0.17 * p)
        rc, tube = (ro + ri) / 2, (ro - ri) / 2
        dx, dy = xs, ys + ro
        rho = np.sqrt(dx * dx + dy * dy)
        k = np.clip((rho - rc) / tube, -1, 1)
        sd = np.abs(rho - rc) - tube
        h = np.sqrt(np.clip(1 - k * k, 0, 1))
        inv = 1.0 / np.maximum(rho, 1e-3)
        lam = np.clip(k * dx * inv * _LIGHT[0] + k * dy * inv * _LIGHT[1] + h * _LIGHT[2], 0, 1)
        return np.clip(0.5 - sd, 0, 1), 0.3 + 0.75 * lam, 0.35 * lam**24, (s * (ro - ri) / (2 * e)) * h
    if category == "bar":
        w, hg = e, e * (0.26 + 0.12 * p)
        dy = ys + hg / 2
        sd = np.maximum(np.abs(xs) - w / 2, np.abs(dy) - hg / 2)
        shade = 1.0 - 0.3 * (dy / hg + 0.5) - 0.05 * (xs / w)
        return np.clip(0.5 - sd, 0, 1), shade + zero, zero, zero + s * (0.26 + 0.12 * p) / 2
    raise ValueError(f"unknown category {category!r}")


# --- rendering ----------------------------------------------------------------------------------------------------
_BANK_SIZE = 1 << 21
#: motion blur: the exposure of every frame is 1/_EXPOSURES_PER_CLIP of the clip whatever the frame count (a
#: still of an 8-frame training clip and a frame of a 16-frame demo recording blur alike: 5-7 px at 128 px), so
#: that "moving" is visible in a single image
_EXPOSURES_PER_CLIP = 5
#: standard-normal quantiles of the invalid-depth probabilities (noise fields are drawn from one normal bank)
_Q_RANDOM_HOLE, _Q_EDGE_HOLE, _Q_BAND_HOLE = (NormalDist().inv_cdf(p) for p in (0.002, 0.3, 0.6))


@lru_cache(maxsize=1)
def _normal_bank() -> np.ndarray:
    """2M standard normals (float32), drawn once from a fixed seed: per-frame sensor noise is a slice of it at
    a random offset, which is much cheaper than drawing fresh normals and as deterministic."""
    return np.random.default_rng(20240611).standard_normal(_BANK_SIZE, dtype=np.float32)


@lru_cache(maxsize=1)
def _pink_bank() -> np.ndarray:
    """131 s of unit-RMS pink-ish room noise at 16 kHz (1/f power above 50 Hz), drawn once."""
    n = 1 << 21
    spec = np.fft.rfft(np.random.default_rng(20240612).standard_normal(n))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 50.0))
    x = np.fft.irfft(spec, n)
    return (x / np.sqrt(np.mean(x * x))).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal noise of ``shape``: a read-only slice of the bank at an offset drawn from ``rng``."""
    count = int(np.prod(shape))
    if count > _BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, _BANK_SIZE - count))
    return _normal_bank()[start : start + count].reshape(shape)


@dataclass
class Rendered:
    """One scene as every sensor records it. Frames share one camera: the same pixels show the objects."""

    scene: Scene
    rgb: np.ndarray  # [T, H, W, 3] uint8 RGB
    depth_mm: np.ndarray  # [T, H, W] uint16 millimetres along the optical axis, 0 = invalid
    thermal_ck: np.ndarray  # [T, H, W] uint16 centikelvin (FLIR Lepton TLinear: degC = v / 100 - 273.15)
    audio: np.ndarray  # [samples] float32 mono in [-1, 1]
    sample_rate: int
    mask: np.ndarray  # [T, H, W] bool: object pixels (coverage > 0.5, before motion blur)
    intrinsics: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    @property
    def frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def middle(self) -> int:
        """The frame the position attribute refers to (and the one written as a still sample)."""
        return self.frames // 2

    def thermal_celsius(self, t: int | None = None) -> np.ndarray:
        """Temperature map(s) in degC of the radiometric frames."""
        raw = self.thermal_ck if t is None else self.thermal_ck[t]
        return raw.astype(np.float32) / 100.0 - 273.15

    def thermal_image(self, t: int | None = None, method: str = "percentile") -> np.ndarray:
        """8-bit AGC RGB image of frame ``t`` (default: the middle), as ThermalSequenceSource delivers it."""
        return thermal_image(self.thermal_ck[self.middle if t is None else t], method)


def thermal_image(raw_ck: np.ndarray, method: str = "percentile") -> np.ndarray:
    """A Lepton radiometric frame (uint16 centikelvin) -> the 8-bit AGC RGB image the live thermal source
    delivers (``lbedge.sensors.thermal.thermal_frame`` with the ``lepton`` profile)."""
    from lbedge.sensors.thermal import PROFILES, thermal_frame

    return thermal_frame(PROFILES["lepton"], raw_ck, method)[0]


def render(
    scene: Scene,
    *,
    size: int = 128,
    frames: int = 8,
    audio_seconds: float = 2.0,
    sample_rate: int = SAMPLE_RATE,
    objects: bool = True,
) -> Rendered:
    """Render ``scene``: ``frames`` RGB, depth and thermal frames of ``size`` x ``size`` and ``audio_seconds``
    of mono audio. ``objects=False`` renders the same scene empty (same background, noise and ambient sound),
    which makes every object effect measurable pixel by pixel. Deterministic."""
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    lay = _layout(scene)
    bg = _background(lay, size)
    rng = np.random.default_rng(np.random.SeedSequence(scene.seed, spawn_key=(1,)))
    n = size
    rgb = np.empty((frames, n, n, 3), np.uint8)
    depth = np.empty((frames, n, n), np.uint16)
    thermal = np.empty((frames, n, n), np.uint16)
    masks = np.zeros((frames, n, n), bool)
    column_fpn = (rng.standard_normal(n) * 0.03).astype(np.float32)  # Lepton-like column pattern
    band_cols = max(1, int(round(lay.band * n)))
    blur_len = int(round(abs(lay.travel) * n / _EXPOSURES_PER_CLIP))
    sigma_t = 0.6 * n / 128
    obj_rgb = lay.obj_rgb.astype(np.float32)
    for t in range(frames):
        rgb_noise = _noise(rng, (n, n, 3))
        depth_noise = _noise(rng, (n, n))
        therm_noise = _noise(rng, (n, n))
        holes = _noise(rng, (n, n))  # thresholded at normal quantiles
        base_rgb = bg.rgb.copy()
        d = bg.depth.copy()
        temp = bg.temp.copy()
        layer = np.zeros((n, n, 3), np.float32)
        alpha = np.zeros((n, n), np.float32)
        edge = np.zeros((n, n), bool)
        placed = _place(scene, lay, t, frames, n) if objects else []
        for ob in placed:  # contact shadow (RGB) and heat exchange (thermal)
            w = ob.extent * _width_ratio(scene.category, lay.proportion)
            ax, ay = 0.5 * w + 1.0, max(1.0, 0.12 * w)
            y0, y1 = max(0, int(ob.base - 3 * ay)), min(n, int(ob.base + 3 * ay) + 2)
            x0, x1 = max(0, int(ob.cx - 2 * ax)), min(n, int(ob.cx + 2 * ax) + 2)
            if y0 >= y1 or x0 >= x1:
                continue
            gy = (np.arange(y0, y1, dtype=np.float32)[:, None] - ob.base) / ay
            gx = (np.arange(x0, x1, dtype=np.float32)[None, :] - ob.cx) / ax
            g = np.exp(-(gx * gx + gy * gy)) * bg.floor[y0:y1, x0:x1]
            base_rgb[y0:y1, x0:x1] *= (1.0 - 0.35 * g)[..., None]
            temp[y0:y1, x0:x1] += 0.1 * g * (lay.obj_temp - temp[y0:y1, x0:x1])
        for ob in placed:
            y0, y1 = max(0, int(ob.base - ob.extent) - 2), min(n, int(ob.base) + 3)
            x0, x1 = max(0, int(ob.cx - ob.extent / 2) - 2), min(n, int(ob.cx + ob.extent / 2) + 3)
            if y0 >= y1 or x0 >= x1:
                continue
            xs = np.arange(x0, x1, dtype=np.float32)[None, :] - ob.cx
            ys = np.arange(y0, y1, dtype=np.float32)[:, None] - ob.base
            a, shade, spec, bulge = _shape(scene.category, lay.proportion, xs, ys, ob.extent, ob.s)
            a = a.astype(np.float32)
            col = obj_rgb * shade[..., None] + (255.0 - obj_rgb) * spec[..., None]
            sl = (slice(y0, y1), slice(x0, x1))
            layer[sl] = layer[sl] * (1 - a[..., None]) + col * a[..., None]
            alpha[sl] = alpha[sl] + a * (1 - alpha[sl])
            hard = a > 0.5
            d[sl] = np.where(hard, np.minimum(d[sl], ob.z - bulge), d[sl])
            core = lay.ambient + (lay.obj_temp - lay.ambient) * (0.93 + 0.07 * bulge / max(ob.s / 2, 1e-6))
            temp[sl] = temp[sl] * (1 - a) + core * a
            masks[t][sl] |= hard
            edge[sl] |= (a > 0.05) & (a < 0.95)
        if placed and blur_len >= 2:  # motion blur over the exposure
            layer = cv2.blur(layer, (blur_len, 1))
            alpha = cv2.blur(alpha, (blur_len, 1))
        img = (base_rgb * (1 - alpha[..., None]) + layer) * lay.gain + lay.rgb_noise * rgb_noise
        rgb[t] = np.clip(img + 0.5, 0, 255).astype(np.uint8)

        d *= 1.0 + lay.depth_noise * depth_noise
        invalid = (holes < _Q_RANDOM_HOLE) | (edge & (holes < _Q_EDGE_HOLE))
        invalid[:, :band_cols] |= holes[:, :band_cols] < _Q_BAND_HOLE
        mm = np.clip(np.rint(d * 1000.0), 1, 65535)
        mm[invalid] = 0
        depth[t] = mm.astype(np.uint16)

        temp = cv2.GaussianBlur(temp, (0, 0), sigma_t)
        temp += lay.thermal_noise * therm_noise + column_fpn[None, :]
        thermal[t] = np.clip(np.rint((temp + 273.15) * 100.0), 0, 65535).astype(np.uint16)
    audio = render_audio(scene, audio_seconds, sample_rate, sound=objects)
    return Rendered(scene, rgb, depth, thermal, audio, sample_rate, masks, camera_intrinsics(size))


# --- sound --------------------------------------------------------------------------------------------------------
def _chirps(rng: np.random.Generator, t: np.ndarray, sr: int, rising: bool) -> np.ndarray:
    period = rng.uniform(0.45, 0.85)
    frac = rng.uniform(0.75, 0.92)
    f_lo, f_hi = rng.uniform(300, 600), rng.uniform(1800, 3000)
    offset = rng.uniform(0, period)
    tau = ((t + offset) % period) / (period * frac)  # 0..1 during a sweep, > 1 in the gap
    active = tau < 1.0
    tc = np.clip(tau, 0, 1)
    freq = f_lo * np.exp(math.log(f_hi / f_lo) * (tc if rising else 1.0 - tc))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    ramp = 0.008 / (period * frac)  # 8 ms fades
    env = active * np.clip(tc / ramp, 0, 1) * np.clip((1 - tc) / ramp, 0, 1)
    return env * (np.sin(phase) + 0.2 * np.sin(2 * phase) * (2 * freq < sr / 2 - 200))


def _sound(category: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    if category == "ball":  # bounces: intervals shrink, clicks fade, repeat
        i0, q = rng.uniform(0.22, 0.4), rng.uniform(0.7, 0.85)
        fc, tau = rng.uniform(700, 1800), rng.uniform(0.006, 0.015)
        tk = np.arange(int(6 * tau * sr)) / sr
        click = np.exp(-tk / tau) * np.sin(2 * np.pi * fc * tk)
        burst = min(len(click), int(0.002 * sr))
        click[:burst] += 0.5 * rng.standard_normal(burst)
        x = np.zeros(n)
        when, interval, amp = rng.uniform(0.0, 0.15), i0, 1.0
        while when < n / sr:
            k = int(when * sr)
            m = min(len(click), n - k)
            x[k : k + m] += amp * click[:m]
            when += interval
            interval *= q
            amp *= math.sqrt(q)
            if interval < 0.05:
                when += rng.uniform(0.15, 0.3)
                interval, amp = i0, 1.0
        return x
    if category == "box":  # mains-like hum with harmonics, slow wobble
        f0, roll = rng.uniform(120, 180), rng.uniform(0.7, 1.4)
        vib = 1 + 0.003 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        phase0 = 2 * np.pi * np.cumsum(f0 * vib) / sr
        x = sum(k**-roll * np.sin(k * phase0 + rng.uniform(0, 2 * np.pi)) for k in range(1, 9))
        return x * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 2 * np.pi)))
    if category == "cone":
        return _chirps(rng, t, sr, rising=True)
    if category == "bar":
        return _chirps(rng, t, sr, rising=False)
    if category == "ring":  # struck bell: decaying partials, repeated
        period, f1, tau = rng.uniform(0.5, 0.9), rng.uniform(1500, 2500), rng.uniform(0.12, 0.3)
        since = (t + rng.uniform(0, period)) % period
        env = np.exp(-since / tau) * np.clip(since / 0.002, 0, 1)
        partials = ((1.0, 1.0), (1.004, 0.5), (2.76, 0.3), (0.5, 0.12))
        return env * sum(a * np.sin(2 * np.pi * f1 * r * t + rng.uniform(0, 2 * np.pi)) for r, a in partials)
    raise ValueError(f"unknown category {category!r}")


def render_audio(
    scene: Scene, seconds: float = 2.0, sample_rate: int = SAMPLE_RATE, *, sound: bool = True
) -> np.ndarray:
    """``seconds`` of the scene's sound (mono float32 in [-1, 1]) over low room noise; ``sound=False``: the room
    noise alone. The signature's parameters do not depend on ``seconds``."""
    rng = np.random.default_rng(np.random.SeedSequence(scene.seed, spawn_key=(2,)))
    n = max(0, int(round(seconds * sample_rate)))
    peak = rng.uniform(*{"quiet": (0.1, 0.2), "loud": (0.5, 0.8)}[scene.loudness])
    noise_rms = rng.uniform(0.002, 0.008)
    bank = _pink_bank()
    if n <= len(bank) // 2:
        start = int(
            np.random.default_rng(np.random.SeedSequence(scene.seed, spawn_key=(2, 1))).integers(0, len(bank) - n)
        )
        noise = bank[start : start + n].astype(np.float64) * noise_rms
    else:
        noise = np.tile(bank, n // len(bank) + 1)[:n].astype(np.float64) * noise_rms
    x = np.zeros(n)
    if sound and n:
        x = _sound(scene.category, rng, n, sample_rate)
        x *= peak / max(float(np.max(np.abs(x))), 1e-9)
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


# --- writing ------------------------------------------------------------------------------------------------------
def _write_png(path: Path, img: np.ndarray) -> None:
    if img.ndim == 3:
        img = np.ascontiguousarray(img[..., ::-1])  # RGB -> OpenCV's BGR
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"cannot write {path}")


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Mono float audio in [-1, 1] -> 16-bit PCM WAV."""
    path = Path(path)
    pcm = np.clip(np.rint(np.asarray(audio, np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MP4 (mp4v) to {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()


def _frame_indices(frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frames of a clip; one frame is the middle one."""
    if k <= 1:
        return [frames // 2]
    return sorted({min(frames - 1, int((j + 0.5) * frames / k)) for j in range(k)})


DATASET_MODALITIES: tuple[str, ...] = ("image", "depth", "thermal", "audio")


def write_dataset(
    root: str | Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    *,
    n_heldout: int = 0,
    size: int = 128,
    frames: int = 8,
    audio_seconds: float = 2.0,
    modalities: Sequence[str] = DATASET_MODALITIES,
    frames_per_scene: int = 1,
    agc_method: str = "percentile",
    fps: float = 8.0,
) -> dict[str, Any]:
    """Write training data: per modality a folder ``root/<modality>/<split>/`` of files and a manifest
    ``root/<modality>/<split>.jsonl`` (``{"file", "texts", "scene"}``, paths relative to it) for the splits
    ``train`` (``n_train`` scenes), ``val`` (``n_val``; train rules, other scenes) and ``heldout`` (``n_heldout``
    scenes with unseen attribute pairs, captioned in the held-out phrasing).

    Files: image: RGB PNG of the middle frame (``frames_per_scene`` > 1: that many frames, each a sample);
    depth: 16-bit PNG millimetres; thermal: 8-bit AGC PNG (``agc_method``) of the Lepton radiometric frame, as
    the live thermal source delivers; audio: 16-bit PCM WAV at 16 kHz; video (only if asked): MP4 of the clip.
    ``root/world.json`` records the parameters. Returns manifests, counts and timing.
    """
    root = Path(root)
    for v in modalities:
        if v not in MODALITIES:
            raise ValueError(f"unknown modality {v!r}: choose among {MODALITIES}")
    t0 = time.perf_counter()
    splits = {"train": n_train, "val": n_val, "heldout": n_heldout}
    manifests: dict[str, dict[str, str]] = {v: {} for v in modalities}
    counts: dict[str, int] = {}
    samples = 0
    for split, n in splits.items():
        if n <= 0:
            continue
        lines: dict[str, list[str]] = {v: [] for v in modalities}
        for v in modalities:
            (root / v / split).mkdir(parents=True, exist_ok=True)
        for i, scene in enumerate(sample_scenes(n, split, seed)):
            r = render(scene, size=size, frames=frames, audio_seconds=audio_seconds if "audio" in modalities else 0.0)
            info = {"index": i, **scene.to_dict()}
            stem = f"{i:06d}"
            for v in modalities:
                texts = captions(scene, v, split)
                files: list[tuple[str, dict[str, Any]]] = []
                if v in ("image", "depth", "thermal"):
                    for k in _frame_indices(frames, frames_per_scene):
                        name = f"{split}/{stem}.png" if frames_per_scene <= 1 else f"{split}/{stem}_f{k:02d}.png"
                        out = root / v / name
                        if v == "image":
                            _write_png(out, r.rgb[k])
                        elif v == "depth":
                            _write_png(out, r.depth_mm[k])
                        else:
                            _write_png(out, thermal_image(r.thermal_ck[k], agc_method)[..., 0])
                        files.append((name, {"frame": k}))
                elif v == "audio":
                    name = f"{split}/{stem}.wav"
                    write_wav(root / v / name, r.audio, r.sample_rate)
                    files.append((name, {}))
                else:
                    name = f"{split}/{stem}.mp4"
                    _write_mp4(root / v / name, r.rgb, fps)
                    files.append((name, {}))
                for name, extra in files:
                    lines[v].append(json.dumps({"file": name, "texts": texts, "scene": {**info, **extra}}))
                    samples += 1
        for v in modalities:
            path = root / v / f"{split}.jsonl"
            path.write_text("\n".join(lines[v]) + "\n", encoding="utf-8")
            manifests[v][split] = str(path)
        counts[split] = n
    seconds = time.perf_counter() - t0
    meta = {
        "seed": seed,
        "size": size,
        "frames": frames,
        "audio_seconds": audio_seconds,
        "modalities": list(modalities),
        "frames_per_scene": frames_per_scene,
        "agc_method": agc_method,
        "counts": counts,
        "labels": list(LABELS),
        "intrinsics": camera_intrinsics(size),
        "heldout_colours": sorted(map(list, HELDOUT_COLOURS)),
        "heldout_temperatures": sorted(map(list, HELDOUT_TEMPERATURES)),
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "world.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return {"root": str(root), "manifests": manifests, "counts": counts, "samples": samples, "seconds": seconds}


def write_recordings(
    out: str | Path,
    scenes: Sequence[Scene],
    *,
    fps: float = 8.0,
    seconds_per_scene: float = 2.0,
    size: int = 128,
    sample_rate: int = SAMPLE_RATE,
    realsense: bool = True,
) -> dict[str, Any]:
    """Write ``scenes`` back to back as sensor recordings for a demo, each scene ``seconds_per_scene`` long:

    - ``rgb.mp4``: the RGB clips (mp4v, ``fps``) -> :class:`lbedge.sensors.VideoFileSource`;
    - ``depth.db3`` (``.bag`` with pyrealsense2 < 2.58): depth in mm with the RGB as colour, written unpaced
      (plays in non-real-time mode) -> :class:`lbedge.sensors.RealSenseRecording`; skipped with a warning
      when pyrealsense2 is missing or ``realsense=False``;
    - ``depth/``: the same depth frames as 16-bit PNG millimetres -> :class:`lbedge.sensors.DepthSequenceSource`;
    - ``thermal/``: radiometric 16-bit PNG frames, Lepton centikelvin ->
      ``ThermalSequenceSource(..., profile="lepton")``;
    - ``audio.wav``: each scene's sound, 16-bit PCM -> :class:`lbedge.sensors.AudioFileSource`
      (``window=seconds_per_scene, hop=seconds_per_scene`` gives one window per scene);
    - ``truth.json``: per scene its frame range, time span (s), audio sample range, attributes, label, tags
      (train phrasing) and held-out pairs.

    Returns the paths and counts.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = max(1, int(round(seconds_per_scene * fps)))
    n_audio = int(round(seconds_per_scene * sample_rate))
    for folder in ("thermal", "depth"):  # frames of an earlier, longer run would replay too
        (out / folder).mkdir(exist_ok=True)
        for old in (out / folder).glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
            old.unlink()
    t0 = time.perf_counter()
    writer = cv2.VideoWriter(str(out / "rgb.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MP4 (mp4v) to {out / 'rgb.mp4'}")
    truth: list[dict[str, Any]] = []
    audio_parts: list[np.ndarray] = []
    colour_queue: deque[np.ndarray] = deque()

    def depth_frames() -> Iterator[np.ndarray]:
        index = 0
        for i, scene in enumerate(scenes):
            r = render(scene, size=size, frames=frames, audio_seconds=n_audio / sample_rate, sample_rate=sample_rate)
            audio_parts.append(r.audio[:n_audio])
            truth.append(
                {
                    "index": i,
                    "frames": [index, index + frames],
                    "time": [index / fps, (index + frames) / fps],
                    "audio_samples": [i * n_audio, (i + 1) * n_audio],
                    "label": scene.label,
                    "tags": tags(scene),
                    "attributes": scene.attributes(),
                    "seed": scene.seed,
                    "heldout_pairs": [list(p) for p in scene.heldout_pairs],
                }
            )
            for t in range(frames):
                writer.write(np.ascontiguousarray(r.rgb[t][..., ::-1]))
                _write_png(out / "thermal" / f"{index:06d}.png", r.thermal_ck[t])
                _write_png(out / "depth" / f"{index:06d}.png", r.depth_mm[t])
                colour_queue.append(r.rgb[t])
                index += 1
                yield r.depth_mm[t]

    def colour_frames() -> Iterator[np.ndarray]:
        while colour_queue:
            yield colour_queue.popleft()

    depth_path: Path | None = None
    try:
        rs_path = _realsense_path(out) if realsense and scenes else None
        if rs_path is not None:
            from lbedge.sensors.realsense import write_recording

            depth_path = write_recording(
                rs_path, depth_frames(), color=colour_frames(), fps=fps, intrinsics=camera_intrinsics(size), paced=False
            )
        else:
            for _ in depth_frames():
                colour_queue.clear()
    finally:
        writer.release()
    audio = np.concatenate(audio_parts) if audio_parts else np.zeros(0, np.float32)
    write_wav(out / "audio.wav", audio, sample_rate)
    total = frames * len(scenes)
    doc = {
        "fps": float(fps),
        "frames_per_scene": frames,
        "seconds_per_scene": frames / fps,
        "sample_rate": sample_rate,
        "size": size,
        "frames": total,
        "intrinsics": camera_intrinsics(size),
        "labels": list(LABELS),
        "files": {
            "rgb": "rgb.mp4",
            "depth": depth_path.name if depth_path else None,
            "depth_frames": "depth",
            "thermal": "thermal",
            "thermal_profile": "lepton",
            "audio": "audio.wav",
        },
        "scenes": truth,
    }
    (out / "truth.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return {
        "rgb": out / "rgb.mp4",
        "depth": depth_path,
        "depth_frames": out / "depth",
        "thermal": out / "thermal",
        "audio": out / "audio.wav",
        "truth": out / "truth.json",
        "frames": total,
        "frames_per_scene": frames,
        "seconds": time.perf_counter() - t0,
    }


def _realsense_path(out: Path) -> Path | None:
    """Where this pyrealsense2 can write a recording, or None (with a warning) without pyrealsense2."""
    try:
        from lbedge.sensors.realsense import recording_suffix

        suffix = recording_suffix()
    except Exception as exc:  # MissingDependency, or a library that fails to load
        log.warning("not writing a RealSense recording: %s", exc)
        return None
    return out / f"depth{suffix}"


__all__ = [
    "ATTRIBUTES",
    "CATEGORIES",
    "COLOURS",
    "COUNTS",
    "DATASET_MODALITIES",
    "DISTANCES",
    "HELDOUT_COLOURS",
    "HELDOUT_PHRASING",
    "HELDOUT_TEMPERATURES",
    "LABELS",
    "LOUDNESS",
    "MODALITIES",
    "MOTIONS",
    "PERCEIVABLE",
    "PHRASINGS",
    "POSITIONS",
    "Phrasing",
    "Rendered",
    "SIZES",
    "SPLITS",
    "Scene",
    "TEMPERATURES",
    "TRAIN_PHRASING",
    "camera_intrinsics",
    "captions",
    "label",
    "render",
    "render_audio",
    "sample_scene",
    "sample_scenes",
    "tags",
    "templates",
    "thermal_image",
    "write_dataset",
    "write_recordings",
    "write_wav",
]
