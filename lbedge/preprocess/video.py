"""Video preprocessing: ``num_frames`` frames sampled uniformly, each through the image transform.

Frame indices are ``linspace(0, n - 1, num_frames)`` truncated to int, as the official decord
path does; each frame goes to [0, 1], bilinear short-side scale (pytorchvideo ``ShortSideScale``,
no antialias), centre crop and CLIP normalisation. The official processor also flips the clip
horizontally at random at inference; lbedge never does (inference is deterministic).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..config import PreprocessConfig
from ..errors import InputError
from .image import resize_crop_normalize, to_rgb


def sample_indices(n: int, num_frames: int) -> np.ndarray:
    """Uniformly spaced frame indices, as the official processor picks them."""
    return np.linspace(0, n - 1, num_frames, dtype=int)


def read_video_frames(path: str | os.PathLike, num_frames: int) -> list[np.ndarray]:
    """Decode the ``num_frames`` uniformly sampled RGB frames of a video file (sequential decode)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video file not found: {p}")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open video file {p}: not a video OpenCV can decode")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            wanted = sample_indices(count, num_frames)
            frames = _grab_indices(cap, wanted)
            if frames is not None:
                return frames
            cap.release()
            cap = cv2.VideoCapture(str(p))
        # unknown or overstated frame count: decode everything, then sample what really exists
        everything = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            everything.append(frame)
        if not everything:
            raise InputError(f"video file {p} has no decodable frames")
        return [everything[i][..., ::-1] for i in sample_indices(len(everything), num_frames)]
    finally:
        cap.release()


def _grab_indices(cap: "cv2.VideoCapture", wanted: np.ndarray) -> list[np.ndarray] | None:
    """Frames at ``wanted`` (sorted, may repeat) by grabbing sequentially; None if the stream ends early."""
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
            if not ok:
                return None
        out.append(last[..., ::-1])
    return out


def is_frame_list(x: Any) -> bool:
    """True for one clip given as a list of frames (HxW or HxWxC arrays / PIL images)."""
    return (isinstance(x, (list, tuple)) and len(x) > 0
            and all((isinstance(f, np.ndarray) and f.ndim in (2, 3)) or hasattr(f, "convert") for f in x))


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
        raise InputError(f"unsupported video input {type(x).__name__}: pass a video file, a [T, H, W, C] "
                         "array or a list of frames")
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
