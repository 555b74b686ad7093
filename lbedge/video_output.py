"""The demo's video file, in a codec web browsers play: H.264 (MP4, MKV, AVI) or VP9 (WebM), encoded by PyAV
(the ``video`` extra, whose wheels bundle FFmpeg with libx264 and libvpx). Without PyAV it falls back to
OpenCV's writer (VP9 for WebM where the OpenCV build has it, MPEG-4 Part 2 "mp4v" otherwise) and says so."""

from __future__ import annotations

import importlib
import logging
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import cv2
import numpy as np

from .errors import LBEdgeError, MissingDependency

log = logging.getLogger("lbedge.video")

#: the file suffixes a video output takes (anything else is a folder of PNGs)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
#: the rate used when the source states none (frames per second)
DEFAULT_FPS = 10.0
#: PyAV encoders tried in order, per container suffix; the first this FFmpeg build has wins
ENCODERS = {
    ".webm": ("libvpx-vp9", "libvpx"),
    "": ("libx264", "libopenh264"),
}
#: encoder options: good quality for sharp text, fast enough for a Jetson's CPU at sensor rates
ENCODER_OPTIONS = {
    "libx264": {"crf": "23", "preset": "veryfast"},
    "libopenh264": {"b": "4M"},
    "libvpx-vp9": {"crf": "32", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
    "libvpx": {"crf": "10", "b:v": "4M", "deadline": "realtime", "cpu-used": "8"},
}
#: the codec each encoder writes, as FFmpeg's decoders name it
CODEC_OF = {"libx264": "h264", "libopenh264": "h264", "libvpx-vp9": "vp9", "libvpx": "vp8"}
#: codecs (as FFmpeg names them) that current web browsers play, and the containers they play them in
BROWSER_PLAYABLE = {("h264", ".mp4"), ("vp9", ".webm"), ("vp8", ".webm")}
EXTRA_HINT = 'pip install "lbedge[video]"'


def pyav() -> ModuleType | None:
    """PyAV (``import av``), or None when it is not installed."""
    try:
        return importlib.import_module("av")
    except ImportError:
        return None


class VideoOutput:
    """A video file written frame by frame (BGR uint8) at ``fps``, checked when opened and when closed, so that a
    video that could not be written is an :class:`~lbedge.errors.LBEdgeError`, never a silent success.

    ``backend``: ``"auto"`` (PyAV when installed, else OpenCV with a warning), ``"pyav"`` (an error without it) or
    ``"opencv"``. ``warn`` receives the warning of a fallback (default: the ``lbedge.video`` logger). Once open,
    ``codec`` names the codec (``"h264"``, ``"vp9"``, ``"mp4v"``...), ``encoder`` what encodes it and
    ``browser_playable`` whether web browsers play the file. Frames of another size are resized to the first
    frame's ``size``; an odd width or height is rounded up to even (H.264 and VP9 need it)."""

    def __init__(
        self,
        path: Path,
        size: tuple[int, int],
        fps: float | None,
        *,
        backend: str = "auto",
        warn: Callable[[str], None] | None = None,
    ):
        if backend not in ("auto", "pyav", "opencv"):
            raise ValueError(f"unknown video backend {backend!r}: auto, pyav or opencv")
        self.path = Path(path)
        self.size = (int(size[0]) + int(size[0]) % 2, int(size[1]) + int(size[1]) % 2)
        self.fps = float(fps) if isinstance(fps, (int, float)) and 0 < fps <= 240 else DEFAULT_FPS
        self.frames = 0
        self.suffix = self.path.suffix.lower()
        self._warn = warn or log.warning
        try:  # fail now, not at the first encoded frame, on a folder or file that cannot be written
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            raise LBEdgeError(f"cannot write the video {self.path} ({exc}): choose another --output") from exc
        self._av: Any = None
        self._cv: Any = None
        self.closed = False
        try:
            av = pyav() if backend != "opencv" else None
            if backend == "pyav" and av is None:
                raise MissingDependency(f"PyAV is needed for H.264/VP9 video but is not installed: {EXTRA_HINT}")
            why = "PyAV is not installed" if av is None else self._open_pyav(av)
            if why:
                if backend == "pyav":
                    raise LBEdgeError(f"cannot write the video {self.path}: {why}")
                self._open_opencv(why if backend == "auto" else None)
        except BaseException:
            self.path.unlink(missing_ok=True)  # no empty file left behind
            raise
        self.browser_playable = (self.codec, self.suffix) in BROWSER_PLAYABLE

    def _open_pyav(self, av: ModuleType) -> str | None:
        """Open the file with the first encoder of :data:`ENCODERS` this FFmpeg has; the reason when none opens."""
        names = ENCODERS.get(self.suffix, ENCODERS[""])
        available = [n for n in names if n in av.codecs_available]
        if not available:
            return f"this PyAV build has none of the encoders {', '.join(names)}"
        container_options = {"movflags": "+faststart"} if self.suffix == ".mp4" else {}
        problems = []
        for name in available:
            try:
                container = av.open(str(self.path), mode="w", container_options=container_options)
            except Exception as exc:  # PyAV raises OSError subclasses and FFmpegError
                raise LBEdgeError(f"cannot write the video {self.path} ({exc}): choose another --output") from exc
            try:
                rate = Fraction(self.fps).limit_denominator(1001)
                stream = container.add_stream(name, rate=rate, options=dict(ENCODER_OPTIONS.get(name, {})))
                stream.width, stream.height = self.size
                stream.pix_fmt = "yuv420p"
                stream.codec_context.open()  # fails now, not on the first frame, when the encoder cannot work
            except Exception as exc:
                problems.append(f"{name}: {exc}")
                container.close()
                self.path.unlink(missing_ok=True)
                continue
            self._av, self._container, self._stream = av, container, stream
            self.encoder, self.codec = name, CODEC_OF.get(name, name)
            return None
        return "no encoder opened (" + "; ".join(problems) + ")"

    def _open_opencv(self, why: str | None) -> None:
        fourcc = "VP90" if self.suffix == ".webm" else "mp4v"
        self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self._cv.isOpened():
            raise LBEdgeError(
                f"cannot write the video {self.path} (folder not writable, or no {fourcc} encoder in this OpenCV "
                f"build): {EXTRA_HINT} for H.264 and VP9, or choose another --output"
            )
        self.encoder = f"opencv:{fourcc}"
        self.codec = "vp9" if fourcc == "VP90" else "mp4v"
        if why and self.codec == "mp4v":
            self._warn(
                f"{why}: {self.path} is written as MPEG-4 Part 2 (mp4v), which web browsers do not play; "
                f"{EXTRA_HINT} for H.264"
            )

    def write(self, img: np.ndarray) -> None:
        """Append one BGR uint8 frame."""
        if self.closed:
            raise LBEdgeError(f"the video {self.path} is closed: open a new VideoOutput")
        if tuple(img.shape[1::-1]) != self.size:  # a source whose resolution changed: keep the video's
            img = cv2.resize(img, self.size)
        if self._cv is not None:
            self._cv.write(img)
        else:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            frame.pts = self.frames
            try:
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            except Exception as exc:
                raise LBEdgeError(f"could not write the video {self.path} ({exc}): disk full?") from exc
        self.frames += 1

    def close(self) -> None:
        """Finish the file (flush the encoder, write the index) and check it exists; an error if it does not.
        Closing again does nothing more than the check."""
        self.closed = True
        if self._cv is not None:
            self._cv.release()
        elif self._av is not None:
            self._av = None
            try:
                try:
                    for packet in self._stream.encode(None):
                        self._container.mux(packet)
                finally:
                    self._container.close()
            except Exception as exc:
                raise LBEdgeError(f"could not finish the video {self.path} ({exc}): disk full, or removed?") from exc
        if self.frames and (not self.path.is_file() or self.path.stat().st_size == 0):
            raise LBEdgeError(
                f"the video {self.path} was not written ({self.frames} frames lost): disk full, or removed?"
            )
