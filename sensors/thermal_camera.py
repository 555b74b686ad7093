"""Live radiometric thermal cameras over UVC/V4L2 (FLIR Lepton on PureThermal, InfiRay P2 / Topdon TC001,
FLIR Boson), read as raw 16-bit frames and delivered like :class:`ThermalSequenceSource`: an 8-bit AGC image
for the model, with the temperature map and the raw frame in ``meta``."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from lbedge.errors import InputError, SensorError

from .base import BaseSource
from .rgb import capture_backend
from .thermal import PROFILES, check_agc, thermal_frame

log = logging.getLogger(__name__)


class ThermalCamera(BaseSource):
    """A UVC thermal camera. ``device``: V4L2 index or ``/dev/videoN``; ``profile``: lepton, infiray-p2, boson.

    The camera is asked for its raw format (Y16 or YUYV) with OpenCV's RGB conversion off, so frames keep
    their radiometric values. ``agc_method``: minmax, percentile or histeq (see :func:`agc`).
    """

    modality = "thermal"
    units = "agc8"
    live = True

    def __init__(
        self,
        device: int | str = 0,
        *,
        profile: str = "lepton",
        agc_method: str = "percentile",
        fps: float | None = None,
        name: str = "",
    ):
        if profile not in PROFILES:
            raise SensorError(f"unknown thermal profile {profile!r}: choose {', '.join(PROFILES)}")
        super().__init__(name or f"thermal:{device}", fps=fps)
        self.device, self.profile, self.agc_method = device, PROFILES[profile], check_agc(agc_method)
        self.cap: cv2.VideoCapture | None = None

    def _open(self) -> None:
        target, api = capture_backend(self.device)
        if api != cv2.CAP_V4L2:
            raise SensorError(
                f"{self.name}: thermal cameras are opened through V4L2: give an index or /dev/videoN, "
                f"not {self.device!r}"
            )
        cap = cv2.VideoCapture(target, api)
        if not cap.isOpened():
            raise SensorError(
                f"{self.name}: cannot open {self.device!r} (no such camera or busy); `v4l2-ctl "
                "--list-devices` lists the cameras"
            )
        width, height = self.profile.capture_size
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.profile.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # after the format: keep the raw 16-bit values
        self.cap = cap

    def _read(self) -> tuple[np.ndarray, float | None]:
        assert self.cap is not None
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise SensorError(f"{self.name}: the camera stopped delivering frames (unplugged?)")
        try:
            raw = self.profile.from_capture(frame)
            image, meta = thermal_frame(self.profile, raw, self.agc_method)
        except InputError as exc:  # wrong mode or size: the camera is not in the profile's format
            raise SensorError(f"{self.name}: {exc}") from exc
        ts = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        return image, (ts / 1000.0 if ts > 0 else None), meta

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
