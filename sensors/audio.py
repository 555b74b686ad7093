"""Audio replay: a WAV/FLAC file cut into sliding windows (``window`` and ``hop`` in seconds)."""

from __future__ import annotations

import os
from pathlib import Path

from lbedge.errors import InputError, SensorError
from lbedge.preprocess.audio import AudioFileReader

from .base import BaseSource

MIN_WINDOW_S = 0.025  # one fbank frame: shorter windows hold nothing the audio tower can use
MIN_HOP_S = 0.01  # one fbank frame shift


def check_window(window: float, hop: float) -> None:
    """Audio windows and hops in seconds, checked when a source is built (a hop of 1e-5 s would deliver the same
    window for ever)."""
    import math

    if not (
        isinstance(window, (int, float))
        and isinstance(hop, (int, float))
        and math.isfinite(window)
        and math.isfinite(hop)
    ):
        raise SensorError(f"window and hop must be numbers of seconds, got window={window!r}, hop={hop!r}")
    if window < MIN_WINDOW_S:
        raise SensorError(f"audio window {window} s is shorter than {MIN_WINDOW_S} s (one fbank frame)")
    if hop < MIN_HOP_S:
        raise SensorError(f"audio hop {hop} s is shorter than {MIN_HOP_S} s")


class AudioFileSource(BaseSource):
    """Windows ``[channels, samples]`` float32 of an audio file; ``meta["sample_rate"]`` gives the rate.

    The file is streamed window by window (a recording of hours needs one window of memory); a file shorter
    than one window gives one short window; the last window is the last full one."""

    modality = "audio"
    units = "pcm_float"

    def __init__(
        self, path: str | os.PathLike, *, window: float = 2.0, hop: float = 1.0, realtime: bool = False, name: str = ""
    ):
        check_window(window, hop)
        super().__init__(name or f"audio:{Path(path).name}", realtime=realtime, fps=1.0 / hop)
        self.path, self.window, self.hop = Path(path), window, hop
        self.rate = 0
        self._reader: AudioFileReader | None = None
        self._pos = 0

    def _open(self) -> None:
        try:
            self._reader = AudioFileReader(self.path)
        except InputError as exc:
            raise SensorError(f"{self.name}: {exc}") from exc
        self.rate, self._pos = self._reader.sample_rate, 0

    def _read(self):
        assert self._reader is not None
        size, step = int(self.window * self.rate), max(1, int(self.hop * self.rate))
        try:
            chunk = self._reader.read(self._pos, size)
        except InputError as exc:
            raise SensorError(f"{self.name}: {exc}") from exc
        if chunk.shape[1] == 0 or (self._pos > 0 and chunk.shape[1] < size):
            return None
        start = self._pos
        self._pos += step
        return chunk, start / self.rate

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _meta(self) -> dict:
        return {"sample_rate": self.rate}
