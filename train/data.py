"""Training data: (file, texts) samples from a folder or a CSV/JSONL manifest, with bad data reported.

Layouts:
- a folder of class subfolders: ``data/<label>/<files>``; each file's texts are ``[label]``;
- a folder of files with sidecar texts: ``x.jpg`` + ``x.txt`` (one text per line: title, tags, captions...);
- a folder of files alone (distillation needs no text);
- a manifest ``.csv`` (columns ``file`` and one or more of ``text``, ``texts`` (``|``-separated), ``caption``,
  ``tags``...) or ``.jsonl`` (``{"file": ..., "texts": [...]}`` or ``"text"``), paths relative to it.

Samples are preprocessed with the inference transform; training-time augmentation is applied afterwards,
on the preprocessed tensors (``augment``), and never touches ``lbedge.preprocess``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lbedge.errors import InputError, LBEdgeError
from lbedge.preprocess import FILE_EXTENSIONS, Preprocessor

log = logging.getLogger(__name__)


class BadDataError(LBEdgeError):
    """A training sample cannot be used and the run was asked to stop on bad data."""


@dataclass
class Sample:
    path: Path
    texts: list[str] = field(default_factory=list)


@dataclass
class BadSample:
    path: Path
    reason: str


def _texts_from_row(row: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in row.items():
        if key in ("file", "path") or value is None:
            continue
        if isinstance(value, list):
            out += [str(v) for v in value]
        elif key in ("texts", "tags") and isinstance(value, str):
            out += value.split("|")
        elif key in ("text", "caption", "title", "enhanced_caption", "label") or key.startswith("text"):
            out.append(str(value))
    return [t.strip() for t in out if t and str(t).strip()]


def read_samples(source: str | Path, modality: str, *, need_text: bool = True) -> tuple[list[Sample], list[BadSample]]:
    """All samples of ``source`` and the ones that are unusable, each with its reason."""
    src = Path(source)
    exts = FILE_EXTENSIONS[modality]
    samples: list[Sample] = []
    if src.is_file() and src.suffix.lower() in (".csv", ".jsonl"):
        rows: list[dict[str, Any]] = []
        try:
            if src.suffix.lower() == ".csv":
                with open(src, newline="", encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
            else:
                for line in src.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        rows.append(json.loads(line))
        except (OSError, ValueError, csv.Error) as exc:
            raise InputError(f"cannot read manifest {src}: {exc}") from exc
        for row in rows:
            f = row.get("file") or row.get("path")
            if not f:
                raise InputError(f"manifest {src} has a row without a 'file' column: {row}")
            samples.append(Sample((src.parent / f).resolve(), _texts_from_row(row)))
    elif src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() != ".txt")
        for p in files:
            side = p.with_suffix(".txt")
            if side.is_file():
                texts = [line.strip() for line in side.read_text(encoding="utf-8").splitlines() if line.strip()]
            elif p.parent != src:
                texts = [p.parent.name.replace("_", " ")]
            else:
                texts = []
            samples.append(Sample(p, texts))
    else:
        raise InputError(f"training data not found or not a folder/.csv/.jsonl: {src}")
    good, bad = [], []
    for s in samples:
        if s.path.suffix.lower() not in exts:
            bad.append(BadSample(s.path, f"not a {modality} file (extension {s.path.suffix or 'none'})"))
        elif not s.path.is_file():
            bad.append(BadSample(s.path, "file not found"))
        elif need_text and not s.texts:
            bad.append(BadSample(s.path, "no text for this sample"))
        else:
            good.append(s)
    return good, bad


class SampleStore:
    """Preprocessed samples, loaded once; unreadable files reported and skipped, or raised, per ``on_bad``."""

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocessor: Preprocessor,
        *,
        on_bad: str = "skip",
        bad: Sequence[BadSample] = (),
    ):
        self.bad: list[BadSample] = list(bad)
        if on_bad == "stop" and self.bad:
            b = self.bad[0]
            raise BadDataError(f"bad training sample {b.path}: {b.reason} (run with on_bad_data='skip' to skip it)")
        arrays, kept = [], []
        for s in samples:
            try:
                arrays.append(preprocessor.one(s.path))
                kept.append(s)
            except LBEdgeError as exc:
                if on_bad == "stop":
                    raise BadDataError(f"bad training sample {s.path}: {exc}") from exc
                self.bad.append(BadSample(s.path, str(exc)))
        for b in self.bad:
            log.warning("skipping bad sample %s: %s", b.path, b.reason)
        if not kept:
            raise InputError("no usable training samples" + (f" ({len(self.bad)} bad)" if self.bad else ""))
        self.samples = kept
        self.arrays = np.stack(arrays).astype(np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """Deterministic train/held-out index split."""
        n = len(self)
        order = np.random.default_rng(seed).permutation(n)
        k = int(round(n * fraction)) if n > 1 else 0
        return sorted(order[k:].tolist()), sorted(order[:k].tolist())


@dataclass(frozen=True)
class AugmentDraws:
    """The random choices :func:`augment` makes for a batch, drawn before any pixel is touched: pixels get a crop
    ``(top, left, height, width, flipped)`` per sample, audio one time shift and gain for the batch. Drawing them
    for the whole batch and applying only some rows' (:meth:`rows`) lets each process of a distributed run
    augment its share exactly as one process augments the whole batch."""

    crops: tuple[tuple[int, int, int, int, bool], ...] = ()
    shift: int = 0
    gain: Any = None  # audio: a one-element tensor

    def rows(self, part: slice) -> "AugmentDraws":
        """The draws of the samples at ``part`` of the batch."""
        return AugmentDraws(self.crops[part], self.shift, self.gain)


def draw_augment(shape: Sequence[int], modality: str, generator: "Any", *, flip: bool = True) -> AugmentDraws:
    """The random choices of :func:`augment` for a batch of ``shape`` (deterministic given ``generator``)."""
    import torch

    if modality == "audio":
        shift = int(torch.randint(0, shape[-1], (1,), generator=generator))
        gain = (torch.rand(1, generator=generator) - 0.5) * 0.2  # +-0.1 in normalised log-mel units
        return AugmentDraws(shift=shift, gain=gain)
    h, w = shape[-2:]
    crops = []
    for _ in range(shape[0]):
        scale = 0.7 + 0.3 * float(torch.rand(1, generator=generator))
        ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        flipped = float(torch.rand(1, generator=generator)) < 0.5 and flip
        crops.append((top, left, ch, cw, flipped))
    return AugmentDraws(tuple(crops))


def apply_augment(x: "Any", modality: str, draws: AugmentDraws) -> "Any":
    """:func:`augment` with its random choices made (``draws`` of as many samples as ``x`` holds)."""
    import torch
    import torch.nn.functional as F

    if modality == "audio":
        return torch.roll(x, shifts=draws.shift, dims=-1) + draws.gain
    out = []
    for sample, (top, left, ch, cw, flipped) in zip(x, draws.crops):
        h, w = sample.shape[-2:]
        crop = sample[..., top : top + ch, left : left + cw]
        flat = crop.reshape(-1, 1, ch, cw)
        res = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False).reshape(sample.shape)
        if flipped:
            res = res.flip(-1)
        out.append(res)
    return torch.stack(out)


def augment(x: "Any", modality: str, generator: "Any", *, flip: bool = True) -> "Any":
    """Training-time augmentation of a preprocessed batch (torch): random resized crop + flip for pixels
    (``flip=False`` when texts name left and right), random time shift and gain for audio. Deterministic given
    ``generator``."""
    return apply_augment(x, modality, draw_augment(x.shape, modality, generator, flip=flip))


#: words that name a colour (RGB) or a temperature (thermal): a text without them says nothing about the
#: attribute, so the input may be re-coloured / re-tempered for it (see :func:`attribute_free`)
COLOUR_WORDS: frozenset[str] = frozenset(
    "red green blue yellow white black purple violet orange pink brown grey gray cyan magenta golden silver "
    "colour color coloured colored".split()
)
TEMPERATURE_WORDS: frozenset[str] = frozenset(
    "hot cold warm cool heated chilled frozen icy temperature temperatures".split()
)
_PHOTOMETRIC_WORDS = {"image": COLOUR_WORDS, "video": COLOUR_WORDS, "thermal": TEMPERATURE_WORDS}


def attribute_free(text: str, modality: str) -> bool:
    """True when ``text`` names no attribute that :func:`photometric` changes for ``modality`` (no colour for
    RGB, no temperature for thermal); always False for modalities without photometric augmentation."""
    words = _PHOTOMETRIC_WORDS.get(modality)
    if words is None:
        return False
    return not any(w.strip(".,;:!?\"'()") in words for w in text.lower().split())


def _hue_rotation(angle: float) -> "Any":
    """3x3 rotation of RGB about the grey axis (1, 1, 1): a hue shift that keeps brightness."""
    import torch

    c, s = math.cos(angle), math.sin(angle)
    k = 1.0 / 3.0
    r = math.sqrt(k)
    return torch.tensor(
        [
            [c + k * (1 - c), k * (1 - c) - r * s, k * (1 - c) + r * s],
            [k * (1 - c) + r * s, c + k * (1 - c), k * (1 - c) - r * s],
            [k * (1 - c) - r * s, k * (1 - c) + r * s, c + k * (1 - c)],
        ],
        dtype=torch.float64,
    )


def draw_photometric(modality: str, generator: "Any", mask: Sequence[bool]) -> list[tuple[float, ...] | None]:
    """The random choices of :func:`photometric` per sample (None where ``mask`` is False, and for modalities
    it leaves alone): RGB a hue angle, saturation and brightness gain; thermal a polarity and a contrast."""
    import torch

    if modality not in _PHOTOMETRIC_WORDS or not any(mask):
        return [None] * len(mask)
    draws: list[tuple[float, ...] | None] = []
    for on in mask:
        if not on:
            draws.append(None)
        elif modality in ("image", "video"):
            angle = 2 * math.pi * float(torch.rand(1, generator=generator))
            sat = 1.2 * float(torch.rand(1, generator=generator))  # 0 (grey, white) .. 1.2
            gain = math.exp(math.log(0.6) + math.log(1.6 / 0.6) * float(torch.rand(1, generator=generator)))
            draws.append((angle, sat, gain))
        else:
            invert = float(torch.rand(1, generator=generator)) < 0.5
            draws.append((float(invert), 0.6 + 0.8 * float(torch.rand(1, generator=generator))))
    return draws


def apply_photometric(
    x: "Any",
    modality: str,
    draws: Sequence[tuple[float, ...] | None],
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> "Any":
    """:func:`photometric` with its random choices made (``draws`` of as many samples as ``x`` holds)."""
    import torch

    if modality not in _PHOTOMETRIC_WORDS or all(d is None for d in draws):
        return x
    m = torch.tensor(mean, dtype=x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    s = torch.tensor(std, dtype=x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    out = x.clone()
    for i, d in enumerate(draws):
        if d is None:
            continue
        if modality in ("image", "video"):
            angle, sat, gain = d
            p = (x[i : i + 1] * s + m)[0]  # 0..1 pixels, channels first
            rot = _hue_rotation(angle).to(x.dtype)
            grey = p.mean(0, keepdim=True)
            chroma = torch.einsum("ij,j...->i...", rot, p - grey)
            out[i] = (((grey + sat * chroma) * gain).clamp(0, 1) - m[0]) / s[0]
        else:
            invert, c = d
            p = x[i : i + 1] * s + m  # back to 0..1 pixels
            if invert:
                p = 1.0 - p
            p = (0.5 + (p - 0.5) * c).clamp(0, 1)
            out[i] = ((p - m) / s)[0]
    return out


def photometric(
    x: "Any", modality: str, generator: "Any", mask: Sequence[bool], *, mean: Sequence[float], std: Sequence[float]
) -> "Any":
    """Attribute-changing augmentation of a preprocessed batch (torch) where ``mask`` is True: RGB gets a
    random hue rotation, saturation and brightness (a red ball becomes a purple, yellow or white one), thermal a
    random polarity (hot <-> cold) and contrast. Used only where the paired text does not name the attribute
    (:func:`attribute_free`), or in distillation, where the teacher labels the changed input itself; it teaches a
    category apart from its colour or temperature, so unseen combinations are still recognised."""
    return apply_photometric(x, modality, draw_photometric(modality, generator, mask), mean=mean, std=std)
