"""Replay of 16-bit frame sequences: depth maps (PNG/TIFF in a stated unit, delivered in millimetres) and
radiometric thermal frames (PNG/TIFF sequences or 16-bit FFV1 video, delivered as 8-bit AGC images with the
temperature map in ``meta``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lbedge.errors import InputError, SensorError
from lbedge.preprocess.image import decode_image

from .base import BaseSource
from .thermal import PROFILES, check_agc, thermal_frame

UNIT_TO_MM = {"mm": 1.0, "m": 1000.0, "cm": 10.0, "100um": 0.1}


def _read_16bit(path: Path) -> np.ndarray:
    """A 16-bit single-channel frame of a recording; an InputError saying why a file is not one."""
    img = decode_image(path, cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise InputError(f"not a 16-bit single-channel image: {img.dtype} {img.shape}")
    return img


def _frames_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff"))


class DepthSequenceSource(BaseSource):
    """16-bit depth images in ``unit`` (mm, cm, m, 100um) -> uint16 millimetres; 0 stays 0 (invalid). A file that
    is not a readable 16-bit image is passed over and counted in ``frames_lost``."""

    modality = "depth"
    units = "mm"

    def __init__(
        self, folder: str | os.PathLike, *, unit: str = "mm", fps: float = 30.0, realtime: bool = False, name: str = ""
    ):
        if unit not in UNIT_TO_MM:
            raise SensorError(f"unknown depth unit {unit!r}: choose {', '.join(UNIT_TO_MM)}")
        super().__init__(name or f"depth:{Path(folder).name}", realtime=realtime, fps=fps)
        self.folder, self.scale = Path(folder), UNIT_TO_MM[unit]
        self.files: list[Path] = []
        self._i = 0

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise SensorError(f"{self.name}: folder not found: {self.folder}")
        self.files, self._i = _frames_in(self.folder), 0
        if not self.files:
            raise SensorError(f"{self.name}: no PNG/TIFF frames in {self.folder}")

    def _read(self):
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            try:
                img = _read_16bit(path)
            except InputError as exc:
                self._lose_once(path, f"cannot read {path}: {exc}")
                continue
            mm = img if self.scale == 1.0 else np.clip(np.rint(img * self.scale), 0, 65535).astype(np.uint16)
            return mm, (self._i - 1) / self.fps
        return None


class ThermalSequenceSource(BaseSource):
    """Radiometric 16-bit frames (PNG/TIFF folder or FFV1 video) of a camera ``profile`` -> 8-bit AGC RGB.

    ``meta["celsius"]`` holds the temperature map (float32 degC) when the profile is radiometric, and
    ``meta["raw"]`` the 16-bit frame. Unreadable files of a folder, and the frames a video announces but does not
    hold (truncated), are counted in ``frames_lost``.
    """

    modality = "thermal"
    units = "agc8"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        profile: str = "lepton",
        agc_method: str = "percentile",
        fps: float = 9.0,
        realtime: bool = False,
        name: str = "",
    ):
        if profile not in PROFILES:
            raise SensorError(f"unknown thermal profile {profile!r}: choose {', '.join(PROFILES)}")
        super().__init__(name or f"thermal:{Path(path).name}", realtime=realtime, fps=fps)
        self.path, self.profile, self.agc_method = Path(path), PROFILES[profile], check_agc(agc_method)
        self.files: list[Path] = []
        self.cap: cv2.VideoCapture | None = None
        self._i = 0
        self._announced, self._decoded = 0.0, 0  # a video's announced frame count, and frames decoded so far

    def _open(self) -> None:
        if self.path.is_dir():
            self.files, self._i = _frames_in(self.path), 0
            if not self.files:
                raise SensorError(f"{self.name}: no PNG/TIFF frames in {self.path}")
        elif self.path.is_file():
            self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
            if not self.cap.isOpened():
                raise SensorError(f"{self.name}: cannot open 16-bit video {self.path}")
            self._announced, self._decoded = self.cap.get(cv2.CAP_PROP_FRAME_COUNT), 0
        else:
            raise SensorError(f"{self.name}: not found: {self.path}")

    def _next_raw(self) -> np.ndarray | None:
        if self.cap is not None:
            ok, frame = self.cap.read()
            if not ok:
                self._lose_rest(self._announced, self._decoded, str(self.path))
                return None
            self._decoded += 1
            return frame if frame.ndim == 2 else frame[..., 0]
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            try:
                return _read_16bit(path)
            except InputError as exc:
                self._lose_once(path, f"cannot read {path}: {exc}")
        return None

    def _read(self):
        raw = self._next_raw()
        if raw is None:
            return None
        image, meta = thermal_frame(self.profile, raw, self.agc_method)
        # recording time: the frame's position in the file or folder at ``fps`` (a folder's skipped files count)
        ts = (
            (self.cap.get(cv2.CAP_PROP_POS_FRAMES) - 1) / self.fps if self.cap is not None else (self._i - 1) / self.fps
        )
        return image, ts, meta

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
