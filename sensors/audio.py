"""Audio replay: a WAV/FLAC file cut into sliding windows (``window`` and ``hop`` in seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lbedge.errors import InputError, SensorError
from lbedge.preprocess.audio import read_audio_file

from .base import BaseSource


class AudioFileSource(BaseSource):
    """Windows ``[channels, samples]`` float32 of an audio file; ``meta["sample_rate"]`` gives the rate."""

    modality = "audio"
    units = "pcm_float"

    def __init__(self, path: str | os.PathLike, *, window: float = 2.0, hop: float = 1.0, realtime: bool = False,
                 name: str = ""):
        if window <= 0 or hop <= 0:
            raise SensorError("window and hop must be positive seconds")
        super().__init__(name or f"audio:{Path(path).name}", realtime=realtime, fps=1.0 / hop)
        self.path, self.window, self.hop = Path(path), window, hop
        self.samples = np.zeros((1, 0), np.float32)
        self.rate = 0
        self._pos = 0

    def _open(self) -> None:
        try:
            clip = read_audio_file(self.path)
        except InputError as exc:
            raise SensorError(f"{self.name}: {exc}") from exc
        self.samples, self.rate, self._pos = clip.samples, clip.sample_rate, 0

    def _read(self):
        size, step = int(self.window * self.rate), int(self.hop * self.rate)
        if self._pos >= self.samples.shape[1] or (self._pos > 0 and self._pos + size > self.samples.shape[1]):
            return None
        chunk = self.samples[:, self._pos:self._pos + size]
        start = self._pos
        self._pos += step
        return np.ascontiguousarray(chunk), start / self.rate

    def _meta(self) -> dict:
        return {"sample_rate": self.rate}
