"""Video preprocessing: ``num_frames`` frames sampled uniformly, each through the image transform.

Frame indices are ``linspace(0, n - 1, num_frames)`` truncated to int, as the official decord
path does; each frame goes to [0, 1], bilinear short-side scale (pytorchvideo ``ShortSideScale``,
no antialias), centre crop and CLIP normalisation. The official processor also flips the clip
horizontally at random at inference; lbedge never does (inference is deterministic).

A video file is decoded one frame at a time, keeping only the sampled frames, with at most
``limits().max_video_frames`` frames per pass and frames of at most ``limits().max_image_pixels``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..config import PreprocessConfig
from ..errors import InputError
from ..limits import hint, limits
from .image import check_pixels, resize_crop_normalize, to_rgb


def sample_indices(n: int, num_frames: int) -> np.ndarray:
    """Uniformly spaced frame indices, as the official processor picks them."""
    return np.linspace(0, n - 1, num_frames, dtype=int)


def read_video_frames(path: str | os.PathLike, num_frames: int) -> list[np.ndarray]:
    """Decode the ``num_frames`` uniformly sampled RGB frames of a video file (sequential decode).

    Memory holds the sampled frames only. The frame size is checked against ``limits().max_image_pixels``
    before decoding (from the container) and on every retrieved frame. A container that declares more
    than ``limits().max_video_frames`` frames is refused; when the declared count is missing or wrong, a
    first pass counts the frames (grab only, nothing kept, at most the limit) and a second one retrieves
    the wanted ones.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video file not found: {p}")
    what = f"video file {p}"
    cap = _open_video(p, what)
    try:
        count = _declared_frames(cap)
        _check_frame_count(count, what, declared=True)
        if count > 0:
            frames = _grab_indices(cap, sample_indices(count, num_frames), what)
            if frames is not None:
                return frames
        # unknown or overstated frame count: count what really decodes, then sample it
        cap.release()
        cap = _open_video(p, what)
        count = _count_frames(cap, what)
        cap.release()
        cap = _open_video(p, what)
        frames = _grab_indices(cap, sample_indices(count, num_frames), what)
        if frames is None:
            raise InputError(f"{what} changed while it was read: {count} frames counted, fewer decoded")
        return frames
    finally:
        cap.release()


def _open_video(p: Path, what: str) -> "cv2.VideoCapture":
    """An opened capture of ``p`` whose declared frame size is within the pixel limit."""
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"cannot open {what}: not a video OpenCV can decode")
    width, height = _prop(cap, cv2.CAP_PROP_FRAME_WIDTH), _prop(cap, cv2.CAP_PROP_FRAME_HEIGHT)
    try:
        check_pixels(height, width, f"the frames of {what}")
    except InputError:
        cap.release()
        raise
    return cap


def _prop(cap: "cv2.VideoCapture", prop: int) -> int:
    """An integer capture property; 0 when OpenCV reports it as unknown, negative or not a number."""
    value = cap.get(prop)
    return int(value) if math.isfinite(value) and value > 0 else 0


def _declared_frames(cap: "cv2.VideoCapture") -> int:
    """The frame count the container declares (0 if unknown)."""
    return _prop(cap, cv2.CAP_PROP_FRAME_COUNT)


def _check_frame_count(count: int, what: str, *, declared: bool) -> None:
    """Refuse a video of more than ``limits().max_video_frames`` frames (``declared``: ``count`` comes from
    the container; otherwise decoding reached it)."""
    limit = limits().max_video_frames
    if count > limit:
        found = f"declares {count}" if declared else f"has more than {limit}"
        raise InputError(
            f"{what} {found} frames, more than the limit of {limit} (max_video_frames): cut it "
            f"into shorter clips, or {hint('max_video_frames')}"
        )


def _count_frames(cap: "cv2.VideoCapture", what: str) -> int:
    """Frames that decode, grabbing (not converting or keeping) each; refuses more than the frame limit."""
    limit = limits().max_video_frames
    count = 0
    while cap.grab():
        count += 1
        if count > limit:
            _check_frame_count(count, what, declared=False)
    if count == 0:
        raise InputError(f"{what} has no decodable frames")
    return count


def _grab_indices(cap: "cv2.VideoCapture", wanted: np.ndarray, what: str) -> list[np.ndarray] | None:
    """RGB frames at ``wanted`` (sorted, may repeat) by grabbing sequentially; None if the stream ends early.

    Every retrieved frame is checked against the pixel limit (a container can misstate the size).
    """
    out: list[np.ndarray] = []
    pos, last = -1, None
    for idx in wanted:
        while pos < idx:
            if not cap.grab():
                return None
            pos += 1
            last = None
        if last is None:
            ok, last = cap.retrieve()
            if not ok or last is None:
                return None
            check_pixels(last.shape[0], last.shape[1], f"the frames of {what}")
        out.append(last[..., ::-1])
    return out


def is_frame_list(x: Any) -> bool:
    """True for one clip given as a list of frames (HxW or HxWxC arrays / PIL images)."""
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all((isinstance(f, np.ndarray) and f.ndim in (2, 3)) or hasattr(f, "convert") for f in x)
    )


def video_transform(x: Any, cfg: PreprocessConfig, *, bgr: bool = False) -> np.ndarray:
    """One clip (path, ``[T, H, W, C]`` array or list of frames) -> ``[3, T, size, size]`` float32."""
    if isinstance(x, (str, os.PathLike)):
        frames: Sequence[Any] = read_video_frames(x, cfg.num_frames)
        bgr = False
    elif isinstance(x, np.ndarray) and x.ndim == 4:
        frames = list(x)
    elif is_frame_list(x):
        frames = list(x)
    else:
        raise InputError(
            f"unsupported video input {type(x).__name__}: pass a video file, a [T, H, W, C] array or a list of frames"
        )
    if len(frames) == 0:
        raise InputError("video has no frames")
    if len(frames) != cfg.num_frames:
        frames = [frames[i] for i in sample_indices(len(frames), cfg.num_frames)]
    out = []
    for f in frames:
        img, scale = to_rgb(f, bgr=bgr)
        out.append(resize_crop_normalize(img, cfg, rounding="pytorchvideo", scale=scale))
    shapes = {o.shape for o in out}
    if len(shapes) != 1:
        raise InputError(f"video frames differ in size after preprocessing: {shapes}")
    return np.stack(out, axis=1)
