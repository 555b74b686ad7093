"""RGB sources through OpenCV: V4L2 cameras, Jetson CSI (GStreamer pipeline strings), RTSP/HTTP streams,
video files, and image folders. Frames are RGB ``HxWx3`` uint8."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lbedge.errors import InputError, SensorError
from lbedge.limits import hint, limits
from lbedge.preprocess.image import decode_image

from .base import BaseSource

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def capture_backend(device: int | str) -> tuple[int | str, int]:
    """The OpenCV capture target and backend for a device spec (index, /dev path, GStreamer string, URL, file)."""
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return int(device), cv2.CAP_V4L2
    if "!" in device:  # nvarguscamerasrc ! ... ! appsink
        return device, cv2.CAP_GSTREAMER
    if device.startswith("/dev/video"):
        return device, cv2.CAP_V4L2
    return device, cv2.CAP_FFMPEG if "://" in device else cv2.CAP_ANY


class OpenCVCamera(BaseSource):
    """A live RGB camera or stream. ``device``: index, ``/dev/videoN``, GStreamer pipeline, or URL."""

    modality = "image"
    units = "rgb8"
    live = True

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        name: str = "",
    ):
        super().__init__(name or f"camera:{device}", fps=fps)
        self.device = device
        self.width, self.height = width, height
        self.cap: cv2.VideoCapture | None = None

    def _open(self) -> None:
        target, api = capture_backend(self.device)
        cap = cv2.VideoCapture(target, api)
        if not cap.isOpened():
            raise SensorError(
                f"{self.name}: cannot open {self.device!r} (no such camera, busy, or the stream is "
                "unreachable); check the device index or URL"
            )
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
            (cv2.CAP_PROP_FPS, self.fps),
        ):
            if value:
                cap.set(prop, value)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > limits().max_image_pixels:
            cap.release()
            raise SensorError(
                f"{self.name}: frames of {w}x{h} pixels are beyond the limit of "
                f"{limits().max_image_pixels} pixels; {hint('max_image_pixels')}"
            )
        self.cap = cap

    def _read(self) -> tuple[np.ndarray, float | None] | None:
        assert self.cap is not None
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise SensorError(f"{self.name}: the camera stopped delivering frames (unplugged or stream lost)")
        ts = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        return np.ascontiguousarray(frame[..., ::-1]), (ts / 1000.0 if ts > 0 else None)

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class VideoFileSource(OpenCVCamera):
    """Replay of a video file: as fast as possible, or paced at its frame rate with ``realtime=True`` (every
    frame either way). ``loop=True`` starts over at the end. A file that ends before the frame count its header
    announces (truncated, damaged) counts the missing frames in ``frames_lost``."""

    live = False

    def __init__(self, path: str | os.PathLike, *, realtime: bool = False, loop: bool = False, name: str = ""):
        super().__init__(str(path), name=name or f"video:{Path(path).name}")
        self.realtime, self.loop = realtime, loop
        self._announced = 0.0
        self._decoded = 0  # frames decoded (or grabbed) in this pass over the file

    def _open(self) -> None:
        if not Path(str(self.device)).is_file():
            raise SensorError(f"{self.name}: video file not found: {self.device}")
        super()._open()
        assert self.cap is not None
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else 30.0
        self._announced, self._decoded = self.cap.get(cv2.CAP_PROP_FRAME_COUNT), 0

    def _read(self) -> tuple[np.ndarray, float | None] | None:
        assert self.cap is not None
        ok, frame = self.cap.read()
        if not ok:
            self._lose_rest(self._announced, self._decoded, str(self.device))
            if not self.loop:
                return None
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._decoded = 0
            ok, frame = self.cap.read()
            if not ok:
                return None
        self._decoded += 1
        ts = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return np.ascontiguousarray(frame[..., ::-1]), ts

    def _skip(self) -> bool:
        assert self.cap is not None
        if not self.cap.grab():  # no decoding: resuming a long video stays cheap
            return False
        self._decoded += 1
        return True


class ImageFolderSource(BaseSource):
    """Replay of a folder of images (sorted by name), RGB uint8, at ``fps`` when ``realtime``. A file that cannot
    be decoded is passed over and counted in ``frames_lost``."""

    modality = "image"
    units = "rgb8"

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        fps: float = 10.0,
        realtime: bool = False,
        loop: bool = False,
        name: str = "",
    ):
        super().__init__(name or f"images:{Path(folder).name}", realtime=realtime, fps=fps)
        self.folder, self.loop = Path(folder), loop
        self.files: list[Path] = []
        self._i = 0

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise SensorError(f"{self.name}: image folder not found: {self.folder}")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise SensorError(f"{self.name}: no images in {self.folder}")
        self._i = 0

    def _read(self) -> tuple[np.ndarray, float | None] | None:
        while True:
            if self._i >= len(self.files):
                if not self.loop:
                    return None
                self._i = 0
            path = self.files[self._i]
            self._i += 1
            try:
                img = decode_image(path, cv2.IMREAD_COLOR)
            except InputError as exc:
                # an unreadable file in a recording is counted and passed over, never delivered as garbage
                self._lose_once(path, f"cannot read {path}: {exc}")
                continue
            return np.ascontiguousarray(img[..., ::-1]), (self._i - 1) / (self.fps or 1.0)
