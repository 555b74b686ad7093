"""Deterministic, torch-free preprocessing of every LanguageBind modality.

``Preprocessor(cfg)(inputs)`` turns one input or a list of inputs into the float32 batch the
vision tower takes: ``[B, 3, 224, 224]`` (image, thermal, depth), ``[B, 3, 112, 1036]`` (audio)
or ``[B, 3, 8, 224, 224]`` (video).

Every input is bounded by :mod:`lbedge.limits` (pixels of an image or frame, seconds of audio, frames of
a video), checked from file headers before anything large is decoded; :func:`decode_image` is the one
entry point for encoded images.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import opencv as _opencv  # noqa: F401 - every transform uses OpenCV: say at once where it comes from
from ..config import PreprocessConfig
from ..errors import InputError
from .audio import AudioClip, audio_transform, fbank, read_audio_file, resample
from .image import decode_image, depth_transform, image_transform
from .resize import resize
from .video import is_frame_list, video_transform

if TYPE_CHECKING:  # pragma: no cover
    from ..frames import Frame

#: file name extensions each modality reads (calibration folders, training data)
FILE_EXTENSIONS: dict[str, frozenset[str]] = {
    "image": frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}),
    "thermal": frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}),
    "depth": frozenset({".png", ".tif", ".tiff"}),
    "audio": frozenset({".wav", ".flac", ".ogg", ".mp3"}),
    "video": frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"}),
}

__all__ = [
    "FILE_EXTENSIONS",
    "Preprocessor",
    "AudioClip",
    "audio_transform",
    "decode_image",
    "depth_transform",
    "fbank",
    "image_transform",
    "read_audio_file",
    "resample",
    "resize",
    "video_transform",
]


class Preprocessor:
    """The inference transform of one modality, configured by a checkpoint's ``PreprocessConfig``."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.cfg.input_shape

    def split_batch(self, inputs: Any) -> tuple[list[Any], bool]:
        """The single samples in ``inputs`` and whether ``inputs`` was a batch (list or batched array)."""
        m = self.cfg.modality
        if isinstance(inputs, (str, os.PathLike, bytes, AudioClip, dict)):
            return [inputs], False
        if isinstance(inputs, tuple) and m == "audio" and len(inputs) == 2 and np.isscalar(inputs[1]):
            return [inputs], False
        if isinstance(inputs, np.ndarray):
            if m == "audio":
                return [inputs], False  # an array is one clip ([samples] or [channels, samples])
            batched_ndim = {"image": 4, "thermal": 4, "depth": 3, "video": 5}[m]
            if m == "depth" and inputs.ndim == 3 and inputs.shape[2] <= 4:
                return [inputs], False  # HxWxC: one map (multi-channel is rejected with a clear error)
            return (list(inputs), True) if inputs.ndim == batched_ndim else ([inputs], False)
        if m == "video" and is_frame_list(inputs):
            return [inputs], False
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 0:
                raise InputError("empty input list: nothing to preprocess")
            return list(inputs), True
        return [inputs], False

    def one(self, x: Any, **kw: Any) -> np.ndarray:
        """Preprocess a single sample."""
        m, cfg = self.cfg.modality, self.cfg
        if m in ("image", "thermal"):
            return image_transform(x, cfg, bgr=kw.get("bgr", False))
        if m == "depth":
            return depth_transform(x, cfg)
        if m == "audio":
            return audio_transform(x, cfg, sample_rate=kw.get("sample_rate"), chunk_seed=kw.get("chunk_seed"))
        if m == "video":
            return video_transform(x, cfg, bgr=kw.get("bgr", False))
        raise InputError(f"unknown modality {m!r}")

    def frame(self, frame: "Frame") -> np.ndarray:
        """The model input ``[1, *input_shape]`` of one sensor frame. What a frame needs besides its data is the
        modality's business: an audio frame states its rate in ``meta["sample_rate"]``."""
        if frame.modality != self.cfg.modality:
            raise InputError(f"a {frame.modality!r} frame given to the {self.cfg.modality} preprocessing")
        if self.cfg.modality == "audio":
            rate = frame.meta.get("sample_rate")
            if rate is None:
                raise InputError("an audio frame without meta['sample_rate']: the source must state its rate")
            return self((frame.data, rate))
        return self(frame.data)

    def __call__(self, inputs: Any, **kw: Any) -> np.ndarray:
        """Preprocess one input or a batch of inputs into a float32 array ``[B, *input_shape]``.

        Keyword options: ``bgr=True`` for OpenCV-ordered colour arrays; ``sample_rate=`` for bare
        audio arrays; ``chunk_seed=`` to reproduce the official random audio chunk choice.
        """
        return np.stack([self.one(x, **kw) for x in self.split_batch(inputs)[0]]).astype(np.float32, copy=False)
