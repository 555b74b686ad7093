"""Change-gated inference: skip the model while a source's input stays the same, re-emit its last result.

A :class:`ChangeGate` is an optional per-source setting of :class:`~lbedge.pipeline.Pipeline` (``gate=``; off by
default). For each frame the pipeline's worker compares a small thumbnail of the *preprocessed* model input (each
channel, or a video frame's channel, area-downscaled to at most ``size`` x ``size``) with the thumbnail of the
last frame the model classified for that source. When the mean absolute difference is at most ``threshold``, the
last classified frame is recent enough (``max_age_s`` on a recording's own stamps or the pipeline's fusion clock,
``max_age_frames`` reused frames in a row) and the label set is still the one it was classified with, the model is
skipped and the previous result is re-emitted, marked ``reused`` with its ``age_s``, under the new frame's sequence
and timestamp. Anything else (a change above the threshold, a thumbnail of another shape, non-finite values, a
label switch, the maximum age, a clock that went back, a failed previous classification) classifies the frame at
once.

The measure is in the units of the preprocessed input: images, depth and thermal frames are normalised by CLIP's
per-channel mean and std (one unit is about a quarter of the 0..1 pixel range), audio is a normalised log-mel
spectrogram. Torch-free; the state lives in the pipeline's worker thread only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import UsageError

__all__ = ["ChangeGate", "GateDecision", "GateState", "change", "parse_gate", "resolve_gates", "thumbnail"]


@dataclass(frozen=True)
class ChangeGate:
    """When a source's frame may reuse the previous result instead of running the model.

    ``threshold``: the largest mean absolute difference (preprocessed-input units, see the module) between this
    frame's thumbnail and the last classified frame's that still counts as "unchanged"; 0 reuses only identical
    inputs. ``max_age_s``: seconds after which a frame is classified whatever it looks like, on a recording's own
    stamps (the frames' ``device_timestamp``: it is gated alike paced or read as fast as possible), else on the
    pipeline's fusion clock (host capture times, or the sensors' stamps with ``sync_clock="device"``).
    ``max_age_frames``: at most this many frames in a row reuse one result. At least one of the two bounds must be
    set, so that a change below the threshold (a slow drift) is never missed for longer. ``size``: the thumbnail's
    largest side in pixels.
    """

    threshold: float = 0.02
    max_age_s: float | None = 1.0
    max_age_frames: int | None = None
    size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise UsageError(f"gate threshold must be a number, got {self.threshold!r}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise UsageError(f"gate threshold must be a finite number >= 0, got {self.threshold}")
        if self.max_age_s is None and self.max_age_frames is None:
            raise UsageError("a change gate needs max_age_s and/or max_age_frames (else a slow change is never seen)")
        if self.max_age_s is not None and (
            isinstance(self.max_age_s, bool)
            or not isinstance(self.max_age_s, (int, float))
            or not (math.isfinite(self.max_age_s) and self.max_age_s > 0)
        ):
            raise UsageError(f"gate max_age_s must be positive finite seconds or None, got {self.max_age_s!r}")
        if self.max_age_frames is not None and (
            isinstance(self.max_age_frames, bool) or not isinstance(self.max_age_frames, int) or self.max_age_frames < 1
        ):
            raise UsageError(f"gate max_age_frames must be an integer >= 1 or None, got {self.max_age_frames!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= 256:
            raise UsageError(f"gate size must be an integer in 1..256, got {self.size!r}")


def parse_gate(text: str) -> ChangeGate:
    """``THRESHOLD[:MAX_AGE_S]`` (the CLI's ``--gate``) as a :class:`ChangeGate`; :class:`UsageError` when wrong."""
    parts = str(text).strip().split(":")
    if len(parts) > 2 or not parts[0]:
        raise UsageError(f"expected THRESHOLD[:MAX_AGE_S], e.g. 0.02:1.0, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"expected THRESHOLD[:MAX_AGE_S] as numbers, e.g. 0.02:1.0, got {text!r}") from None
    return ChangeGate(values[0], values[1]) if len(values) == 2 else ChangeGate(values[0])


def resolve_gates(
    gate: ChangeGate | Mapping[str, ChangeGate | None] | None, names: list[str] | tuple[str, ...]
) -> dict[str, ChangeGate]:
    """The gate of each source name: one gate for all, a mapping per source (None or absent: no gate), or None."""
    if gate is None:
        return {}
    if isinstance(gate, ChangeGate):
        return {n: gate for n in names}
    if not isinstance(gate, Mapping):
        raise UsageError(f"gate must be a ChangeGate, a mapping source name -> ChangeGate, or None; got {gate!r}")
    unknown = sorted(set(gate) - set(names))
    if unknown:
        raise UsageError(f"gate names unknown source(s) {', '.join(map(str, unknown))}; sources: {', '.join(names)}")
    out = {}
    for name, g in gate.items():
        if g is None:
            continue
        if not isinstance(g, ChangeGate):
            raise UsageError(f"the gate of source {name} must be a ChangeGate or None, got {g!r}")
        out[name] = g
    return out


def thumbnail(x: np.ndarray, size: int = 16) -> np.ndarray:
    """A small float32 picture of a preprocessed input, one plane per channel: every axis but the last two is
    flattened into planes (batch, channels, a video's frames; an audio spectrogram's channels), each plane
    area-downscaled to at most ``size`` x ``size`` (``[planes, h, w]``). Channels are kept apart, so a change of
    colour at equal brightness is seen. A 1-D input is one row, a scalar one pixel. Non-finite values are kept (the
    comparison treats them as a change)."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim < 2:
        a = a.reshape(1, -1) if a.ndim == 1 else a.reshape(1, 1)
    a = a.reshape(-1, *a.shape[-2:])
    if a.size == 0:
        return np.zeros((0, 0, 0), np.float32)
    for axis in (1, 2):
        n = a.shape[axis]
        if n > size:
            edges = np.linspace(0, n, size + 1).astype(np.int64)[:-1]
            counts = np.diff(np.append(edges, n)).astype(np.float32)
            a = np.add.reduceat(a, edges, axis=axis) / (counts[:, None] if axis == 1 else counts)
    return np.ascontiguousarray(a, dtype=np.float32)


def change(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The mean absolute difference of two thumbnails; ``inf`` when either is missing, empty, of another shape, or
    holds non-finite values (anything that cannot be compared counts as a change)."""
    if a is None or b is None or a.shape != b.shape or a.size == 0:
        return math.inf
    d = float(np.mean(np.abs(a - b)))
    return d if math.isfinite(d) else math.inf


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one frame: ``reuse`` the result of reference ``ref_id`` or classify (the frame
    then became reference ``ref_id``); the measured ``change``, the ``age_s`` and ``age_frames`` a reused result
    has, ``why`` a frame is classified, and the frame's ``thumb``."""

    reuse: bool
    change: float
    age_s: float
    age_frames: int
    why: str  # "unchanged", or: "first", "changed", "max_age" (or a clock that went back), "labels", "invalid"
    ref_id: int
    thumb: np.ndarray
    at: float
    labels_version: int


class GateState:
    """One source's gate: the thumbnail, time and label set of its reference (the last frame sent to the model).

    :meth:`check` decides for a frame; a frame that is to be classified becomes the reference at once, so that later
    frames of the same batch compare with it. :meth:`confirm` makes a classified frame the reference again (after
    other decisions), :meth:`invalidate` forgets the reference (its classification failed: the next frame is
    classified).
    """

    def __init__(self, gate: ChangeGate):
        self.gate = gate
        self.ref: np.ndarray | None = None
        self.ref_time = 0.0
        self.ref_version: int | None = None
        self.ref_id = 0  # which frame is the reference (0: none yet; every new reference gets a fresh id)
        self.reused_in_row = 0
        self._ids = itertools.count(1)

    def check(self, x: np.ndarray, at: float, labels_version: int = 0) -> GateDecision:
        """Decide for the preprocessed input ``x`` captured at ``at`` (seconds) under ``labels_version``."""
        thumb = thumbnail(x, self.gate.size)
        age_s = float(at) - self.ref_time if self.ref is not None else 0.0
        frames = self.reused_in_row + 1
        d = change(thumb, self.ref)
        if self.ref is None:
            why = "first"
        elif self.ref_version != labels_version:
            why = "labels"
        elif d == math.inf:  # non-finite values or another shape: not comparable
            why = "invalid"
        elif d > self.gate.threshold:
            why = "changed"
        elif (
            not (math.isfinite(age_s) and age_s >= 0)
            or (self.gate.max_age_s is not None and age_s > self.gate.max_age_s)
            or (self.gate.max_age_frames is not None and frames > self.gate.max_age_frames)
        ):
            why = "max_age"
        else:
            self.reused_in_row = frames
            return GateDecision(True, d, age_s, frames, "unchanged", self.ref_id, thumb, float(at), labels_version)
        self.ref, self.ref_time, self.ref_version = thumb, float(at), labels_version
        self.ref_id = next(self._ids)
        self.reused_in_row = 0
        return GateDecision(False, d, 0.0, 0, why, self.ref_id, thumb, float(at), labels_version)

    def confirm(self, decision: GateDecision) -> None:
        """Make the classified frame of ``decision`` the reference (it already is unless frames were re-decided)."""
        if self.ref_id != decision.ref_id or self.ref is None:
            self.ref, self.ref_time, self.ref_version = decision.thumb, decision.at, decision.labels_version
            self.ref_id = decision.ref_id
        self.reused_in_row = 0

    def reused(self, decision: GateDecision) -> None:
        """Record that ``decision``'s frame re-emitted its reference's result (counts toward ``max_age_frames``)."""
        self.reused_in_row = decision.age_frames

    def invalidate(self) -> None:
        """Forget the reference: the next frame is classified."""
        self.ref, self.ref_version, self.reused_in_row = None, None, 0
        self.ref_id = next(self._ids)
