"""Intel RealSense depth cameras (:class:`RealSense`), their recordings (:class:`RealSenseRecording`, ``.bag``
and ``.db3``) and a writer of such recordings from depth arrays (:func:`write_recording`).

Depth is delivered as ``HxW`` uint16 millimetres whatever the device's depth unit (D400: 1 mm, D405/L515 and
others: finer); 0 means "no depth" and stays 0. ``frame.meta`` holds ``depth_scale`` (the device's metres per
raw unit), ``intrinsics`` of the delivered depth image (``fx, fy, ppx, ppy, width, height``), ``frame_number``,
``frames_lost`` (the frames the source could not deliver so far, see below) and, with ``color=True``, ``color``:
the matching ``HxWx3`` uint8 RGB image. ``align_to_color=True`` reprojects depth into the colour camera's view
(and resolution) with librealsense's ``rs.align``. ``filters`` applies
librealsense's post-processing in the order Intel recommends: decimation, then spatial and temporal filtering
in the disparity domain, then hole filling (all before alignment).

Frames that never reach the reader are counted in the source's ``frames_lost``: gaps in a camera's frame
numbers, and for a recording every recorded depth frame it did not deliver (exactly for ``.db3`` files, whose
frames are counted when the recording opens; by frame-number gaps for ``.bag`` files and looping playback).

Needs ``pip install "lbedge[realsense]"`` (``pyrealsense2``; on Linux also ``apt install libusb-1.0-0``; on a
Jetson build librealsense with its Python bindings). ``pyrealsense2`` is imported only when a source opens
or a recording is written.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

import numpy as np

from lbedge.deps import require
from lbedge.errors import InputError, MissingDependency, SensorError

from .base import BaseSource

log = logging.getLogger(__name__)

FILTERS = ("decimation", "spatial", "temporal", "hole_filling")
"""Post-processing filter names, in the order they are applied whatever order they are given in."""

_POLL_S = 0.1  # slice of a recording's bounded waits, so that its end is noticed quickly
_END_GRACE_S = 0.5  # how long playback must read "stopped", with no frame, to count as the end
_DEFAULT_HFOV_DEG = 69.0  # field of view of synthetic recordings (a RealSense colour camera's)


def _rs() -> ModuleType:
    """``import pyrealsense2``, or :class:`MissingDependency` naming what to install."""
    try:
        return require("pyrealsense2")
    except OSError as exc:  # installed, but a shared library (libusb) is missing
        raise MissingDependency(
            f"pyrealsense2 is installed but cannot load a library it needs ({exc}): on "
            "Debian/Ubuntu apt install libusb-1.0-0"
        ) from exc


def _recording_suffix(rs: ModuleType) -> str | None:
    """The file type this pyrealsense2 records: ".db3" from 2.58 on, ".bag" before, None when unknown."""
    parts = str(getattr(rs, "__version__", "")).split(".")[:2]
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return None
    return ".db3" if (int(parts[0]), int(parts[1])) >= (2, 58) else ".bag"


def recording_suffix() -> str:
    """The file type the installed pyrealsense2 records (``write_recording``): ``.db3`` from 2.58 on, ``.bag``
    before (``.db3`` when the version cannot be read); :class:`MissingDependency` without pyrealsense2."""
    return _recording_suffix(_rs()) or ".db3"


def _check_filters(filters: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate filter names and put them in canonical order; unknown names are a SensorError."""
    names = [filters] if isinstance(filters, str) else list(filters or ())
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise SensorError(
            f"unknown RealSense filter(s) {', '.join(map(repr, unknown))}: choose among {', '.join(FILTERS)}"
        )
    return tuple(n for n in FILTERS if n in names)


def _processing_blocks(rs: ModuleType, filters: Sequence[str]) -> list[Any]:
    """librealsense processing blocks for ``filters`` (canonical order), spatial/temporal in disparity space."""
    blocks: list[Any] = []
    if "decimation" in filters:
        blocks.append(rs.decimation_filter())
    smooth = [name for name in ("spatial", "temporal") if name in filters]
    if smooth:
        blocks.append(rs.disparity_transform(True))
        blocks.extend(rs.spatial_filter() if name == "spatial" else rs.temporal_filter() for name in smooth)
        blocks.append(rs.disparity_transform(False))
    if "hole_filling" in filters:
        blocks.append(rs.hole_filling_filter())
    return blocks


def _exact_scale(scale: float) -> float:
    """The device's depth unit without float32 noise (0.0010000000474974513 -> 0.001)."""
    return float(f"{scale:.6g}")


def _to_mm(raw: np.ndarray, depth_scale: float) -> np.ndarray:
    """Raw depth units (``depth_scale`` metres each) -> a new uint16 millimetre array; 0 stays 0."""
    if math.isclose(depth_scale, 0.001, rel_tol=1e-6):
        return np.array(raw, dtype=np.uint16, copy=True)
    mm = np.rint(raw.astype(np.float64) * (depth_scale * 1000.0))
    return np.clip(mm, 0, 65535).astype(np.uint16)


def _intrinsics(frame: Any) -> dict[str, float | int]:
    i = frame.profile.as_video_stream_profile().get_intrinsics()
    return {
        "fx": float(i.fx),
        "fy": float(i.fy),
        "ppx": float(i.ppx),
        "ppy": float(i.ppy),
        "width": int(i.width),
        "height": int(i.height),
    }


def _color_rgb(rs: ModuleType, frame: Any) -> np.ndarray:
    """A colour frame as a new ``HxWx3`` uint8 RGB array (recordings may hold BGR, RGBA/BGRA or YUYV)."""
    fmt = frame.profile.format()
    data = np.asanyarray(frame.get_data())
    if fmt == rs.format.rgb8:
        return np.array(data, dtype=np.uint8, copy=True)
    if fmt in (rs.format.bgr8, rs.format.bgra8):
        return np.ascontiguousarray(data[..., 2::-1])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(data[..., :3])
    if fmt == rs.format.yuyv:
        import cv2

        video = frame.as_video_frame()
        packed = data.reshape(video.get_height(), video.get_width(), 2)
        return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_YUYV)
    raise SensorError(f"unsupported RealSense colour format {fmt}: record colour as rgb8, bgr8 or yuyv")


def _convert_frames(
    rs: ModuleType,
    frames: Any,
    depth_scale: float,
    *,
    blocks: Sequence[Any] = (),
    align: Any = None,
    color: bool = False,
) -> tuple[np.ndarray, float, dict[str, Any]] | None:
    """Turn one librealsense frameset into (uint16 mm depth, device timestamp in s, meta).

    ``blocks`` (post-processing) run on the frameset first, then ``align`` (an ``rs.align``). Returns None
    for a frameset that lacks a frame the caller needs (depth; colour when aligning or ``color``), which the
    syncer produces around start-up.
    """
    if (align is not None or color) and not frames.get_color_frame():
        return None
    if not frames.get_depth_frame():
        return None
    for block in blocks:
        frames = block.process(frames).as_frameset()
    if align is not None:
        frames = align.process(frames)
    depth = frames.get_depth_frame()
    mm = _to_mm(np.asanyarray(depth.get_data()), depth_scale)
    meta: dict[str, Any] = {
        "depth_scale": depth_scale,
        "intrinsics": _intrinsics(depth),
        "frame_number": int(depth.get_frame_number()),
    }
    if color:
        meta["color"] = _color_rgb(rs, frames.get_color_frame())
    return mm, depth.get_timestamp() / 1000.0, meta


class RealSense(BaseSource):
    """A live Intel RealSense depth camera (D400/D500 series, L515...), depth in uint16 millimetres.

    ``serial``: the camera to open (None: the first one found). ``width``, ``height``, ``fps``: the depth (and
    colour) stream mode. ``color=True`` also streams rgb8 colour into ``frame.meta["color"]``;
    ``align_to_color=True`` reprojects depth into the colour camera (it streams colour even when ``color`` is
    False). ``filters``: names among :data:`FILTERS`. ``timeout_ms``: how long a read waits for a frame before
    the camera counts as gone (a :class:`SensorError`, upon which a pipeline reopens it).
    """

    modality = "depth"
    units = "mm"
    live = True

    def __init__(
        self,
        serial: str | None = None,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30,
        align_to_color: bool = False,
        color: bool = False,
        filters: Sequence[str] | str | None = (),
        timeout_ms: int = 1000,
        name: str = "",
    ):
        super().__init__(name or f"realsense:{serial or 'first'}", fps=fps)
        if timeout_ms <= 0:
            raise SensorError(f"timeout_ms must be positive, got {timeout_ms}")
        self.serial = serial
        self.width, self.height = int(width), int(height)
        self.align_to_color, self.color = bool(align_to_color), bool(color)
        self.filters = _check_filters(filters)
        self.timeout_ms = int(timeout_ms)
        self.depth_scale = 0.001
        self._last_number: int | None = None
        self._gap_logged = False
        self._rs: ModuleType | None = None
        self._pipe: Any = None
        self._blocks: list[Any] = []
        self._align: Any = None
        self._found = "unknown"

    @property
    def _needs_color(self) -> bool:
        return self.color or self.align_to_color

    @property
    def _counts_gaps(self) -> bool:
        """Whether a jump in frame numbers means frames were lost (a camera's numbers are consecutive)."""
        return True

    def _count_gap(self, number: int) -> None:
        """Count the frames between the last delivered frame number and ``number`` as lost: frames a slow reader
        missed, or that librealsense's syncer let through without their colour frame."""
        last, self._last_number = self._last_number, number
        if last is None or number <= last + 1 or not self._counts_gaps:
            return
        level = logging.DEBUG if self._gap_logged else logging.WARNING  # the first gap of a run, then quietly
        self._gap_logged = True
        self._lose(number - last - 1, f"frame numbers jump from {last} to {number}", level)

    # --- what differs between a camera and a recording ------------------------------------------------------
    def _configure(self, rs: ModuleType, config: Any) -> None:
        """Select the device and enable the streams on ``config``."""
        found = [
            (d.get_info(rs.camera_info.name), d.get_info(rs.camera_info.serial_number))
            for d in rs.context().query_devices()
        ]
        listing = ", ".join(f"{name} (serial {sn})" for name, sn in found) or "none"
        wanted = f"serial {self.serial!r}" if self.serial else "any serial"
        if not found:
            raise SensorError(
                f"{self.name}: no RealSense camera found ({wanted}); devices found: none. Plug the "
                "camera into a USB 3 port and check its udev rules (librealsense's "
                "99-realsense-libusb.rules) or run as a user allowed to access it"
            )
        if self.serial and self.serial not in [sn for _, sn in found]:
            raise SensorError(f"{self.name}: no RealSense camera with serial {self.serial!r}; devices found: {listing}")
        if self.serial:
            config.enable_device(self.serial)
        config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, int(round(self.fps or 30)))
        if self._needs_color:
            config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, int(round(self.fps or 30)))
        self._found = listing

    def _start(self, rs: ModuleType, pipe: Any, config: Any) -> Any:
        """Start ``pipe`` with ``config``; returns the pipeline profile."""
        try:
            return pipe.start(config)
        except RuntimeError as exc:
            which = f"serial {self.serial!r}" if self.serial else "first camera"
            mode = f"depth {self.width}x{self.height} at {self.fps} fps"
            mode += " + rgb8 colour" if self._needs_color else ""
            raise SensorError(
                f"{self.name}: cannot start the camera ({which}, {mode}): {exc}; devices found: "
                f"{self._found}. Choose a mode the camera supports (realsense-viewer lists them) "
                "or free the camera from other programs"
            ) from exc

    def _next_frames(self, rs: ModuleType) -> Any | None:
        """The next frameset; the camera going silent for ``timeout_ms`` is a SensorError."""
        try:
            ok, frames = self._pipe.try_wait_for_frames(self.timeout_ms)
        except RuntimeError as exc:
            raise SensorError(f"{self.name}: the camera failed: {exc} (unplugged?)") from exc
        if not ok:
            raise SensorError(
                f"{self.name}: the camera stopped delivering frames (unplugged?): nothing for {self.timeout_ms} ms"
            )
        return frames

    # --- BaseSource hooks -------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._last_number, self._gap_logged = None, False
        rs = self._rs = _rs()
        pipe, config = rs.pipeline(), rs.config()
        self._configure(rs, config)
        profile = self._start(rs, pipe, config)
        self._pipe = pipe
        try:
            self.depth_scale = _exact_scale(profile.get_device().first_depth_sensor().get_depth_scale())
        except RuntimeError as exc:
            self._close()
            raise SensorError(f"{self.name}: the device has no depth sensor ({exc})") from exc
        self._blocks = _processing_blocks(rs, self.filters)
        self._align = rs.align(rs.stream.color) if self.align_to_color else None

    def _read(self) -> tuple[np.ndarray, float | None, dict[str, Any]] | None:
        assert self._rs is not None and self._pipe is not None
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            frames = self._next_frames(self._rs)
            if frames is None:
                return None
            got = _convert_frames(
                self._rs, frames, self.depth_scale, blocks=self._blocks, align=self._align, color=self.color
            )
            if got is not None:
                mm, device_ts, meta = got
                self._count_gap(meta["frame_number"])
                meta["frames_lost"] = self.frames_lost
                return mm, device_ts, meta
            # a partial frameset (the syncer emits some around start-up): wait for a complete one, within bounds
            if self.live and time.monotonic() > deadline:
                raise SensorError(
                    f"{self.name}: the camera delivers depth without colour (or the reverse) for "
                    f"{self.timeout_ms} ms; reconnect it or open it without color/align_to_color"
                )

    def _close(self) -> None:
        pipe, self._pipe = self._pipe, None
        self._blocks, self._align = [], None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError as exc:  # already stopped, or the device is gone
                log.debug("%s: pipeline stop: %s", self.name, exc)
        # drop every librealsense handle now: one left for interpreter shutdown can be freed after librealsense's
        # own state and abort the process at exit ("free(): invalid pointer")
        if hasattr(self, "_playback"):
            self._playback = None
        del pipe


class RealSenseRecording(RealSense):
    """Replay of a RealSense recording (``.bag`` from realsense-viewer/rs-record, or ``.db3``) as a camera would
    deliver it, depth in uint16 millimetres.

    Every recorded frame is delivered: librealsense plays the file in its non-real-time mode, which waits for the
    reader. ``realtime=False`` (default) delivers as fast as the consumer reads; ``realtime=True`` paces the frames
    at the recorded fps (a slow reader gets every frame, late), also for a recording written offline
    (``write_recording(paced=False)``, whose stored host times do not advance).

    ``realtime=True, lossless=False`` asks for librealsense's own real-time playback instead, which follows the
    host clock of the recording session and, like a live camera, drops the frames a slow reader misses: every one
    of them is counted in ``frames_lost`` (and ``frame.meta["frames_lost"]``), never hidden.

    ``loop``: start over at the end instead of ending. ``color``, ``align_to_color`` and ``filters`` as for
    :class:`RealSense` (the recording must hold a colour stream for the first two). The stream mode and ``fps``
    come from the file. At the end ``read()`` returns None. Every wait is bounded: a recording that stops
    delivering before its end (truncated) is ended after ``timeout_ms`` with a warning.
    """

    live = False

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        realtime: bool = False,
        loop: bool = False,
        align_to_color: bool = False,
        color: bool = False,
        filters: Sequence[str] | str | None = (),
        timeout_ms: int = 5000,
        name: str = "",
        lossless: bool = True,
    ):
        super().__init__(
            None,
            fps=None,
            align_to_color=align_to_color,
            color=color,
            filters=filters,
            timeout_ms=timeout_ms,
            name=name or f"realsense:{Path(path).name}",
        )
        self.path, self.realtime, self.loop = Path(path), bool(realtime), bool(loop)
        self.lossless = bool(lossless)
        self.recorded_frames: int | None = None  # depth frames in the file (.db3), counted when it opens
        self._playback: Any = None
        self._delivered = 0
        self._lost_at_open = 0
        self._end_counted = False

    @property
    def _counts_gaps(self) -> bool:
        """Gaps in frame numbers are losses only where no exact count exists (``.bag``, looping) or in
        librealsense's lossy real-time mode; otherwise they were in the recording itself (a camera's own drops)."""
        return self.loop or self.recorded_frames is None or (self.realtime and not self.lossless)

    def _configure(self, rs: ModuleType, config: Any) -> None:
        if not self.path.is_file():
            raise SensorError(f"{self.name}: recording not found: {self.path}")
        self.recorded_frames = recorded_depth_frames(self.path)
        self._lost_at_open, self._end_counted = self.frames_lost, False
        config.enable_device_from_file(str(self.path), repeat_playback=self.loop)
        config.enable_stream(rs.stream.depth)
        if self._needs_color:
            config.enable_stream(rs.stream.color)

    def _start(self, rs: ModuleType, pipe: Any, config: Any) -> Any:
        try:
            playback = config.resolve(pipe).get_device().as_playback()
            # before start: set afterwards, the first frames are already played in real time and lost
            playback.set_real_time(self.realtime and not self.lossless)
            # streams start one after the other: played at once, the first frames of a stream that starts late
            # are lost (and the syncer then drops the other stream's too); paused until all have started
            playback.pause()
            profile = pipe.start(config)
            playback.resume()
        except RuntimeError as exc:
            wanted = "depth and colour streams" if self._needs_color else "a depth stream"
            held = self._streams_in_file(rs)
            held = f"; it holds: {held}" if held else "; the file may be corrupt or truncated"
            raise SensorError(
                f"{self.name}: cannot play {self.path} (a RealSense .bag/.db3 recording with "
                f"{wanted} is needed{held}): {exc}"
            ) from exc
        self._playback, self._delivered = profile.get_device().as_playback(), 0
        # the recorded rate; with realtime=True, BaseSource's pacing at this rate only ever holds back frames
        # that librealsense hands over early (a recording written faster than real time)
        self.fps = float(profile.get_stream(rs.stream.depth).fps()) or None
        return profile

    def _read(self) -> tuple[np.ndarray, float | None, dict[str, Any]] | None:
        got = super()._read()
        if got is None:
            self._count_end()
        return got

    def _count_end(self) -> None:
        """At the end of a pass over a ``.db3`` file: every recorded depth frame not delivered is lost (at the
        start, in between or at the end), whatever the frame numbers said."""
        if self._end_counted or self.loop or self.recorded_frames is None:
            return
        self._end_counted = True
        lost = self.recorded_frames - self._seq  # _seq: frames delivered (or passed over by seek) in this pass
        counted = self.frames_lost - self._lost_at_open
        if lost > counted:
            self._lose(lost - counted, f"{self.path} holds {self.recorded_frames} depth frames, {self._seq} came out")
        elif lost < counted:  # frame-number gaps of the recording itself, not of this replay
            self.frames_lost = self._lost_at_open + max(0, lost)

    def _streams_in_file(self, rs: ModuleType) -> str:
        """The streams the recording holds ("depth z16 64x48@30, color rgb8 ..."), or "" when it cannot be read."""
        try:
            config = rs.config()
            config.enable_device_from_file(str(self.path), repeat_playback=False)
            profiles = config.resolve(rs.pipeline()).get_streams()
        except RuntimeError:
            return ""
        names = []
        for prof in profiles:
            text = f"{prof.stream_name().lower()} {str(prof.format()).split('.')[-1]}"
            if prof.is_video_stream_profile():
                video = prof.as_video_stream_profile()
                text += f" {video.width()}x{video.height()}"
            names.append(f"{text}@{prof.fps()}")
        return ", ".join(names)

    def _finished(self, rs: ModuleType) -> bool:
        try:
            return self._playback.current_status() == rs.playback_status.stopped
        except RuntimeError:
            return True

    def _next_frames(self, rs: ModuleType) -> Any | None:
        """The next frameset, or None at the end of the recording; every wait is bounded."""
        start, limit = time.monotonic(), self.timeout_ms / 1000.0
        stopped_since: float | None = None
        while True:
            before = time.monotonic()
            try:
                ok, frames = self._pipe.try_wait_for_frames(int(_POLL_S * 1000))
            except RuntimeError as exc:
                raise SensorError(f"{self.name}: playback of {self.path} failed: {exc}") from exc
            if ok:
                self._delivered += 1
                return frames
            if time.monotonic() - before < _POLL_S / 2:
                time.sleep(_POLL_S / 10)  # never spin, whatever librealsense does
            waited = time.monotonic() - start
            # "stopped" is only trusted once frames came (or after the timeout): it may read so before the start,
            # and, on a loaded machine, for a moment between frames: it must last _END_GRACE_S with no frame
            if self._finished(rs) and (self._delivered or waited >= limit):
                frames = self._pipe.poll_for_frames()  # a frameset that arrived meanwhile
                if frames:
                    self._delivered += 1
                    return frames
                stopped_since = stopped_since if stopped_since is not None else time.monotonic()
                if time.monotonic() - stopped_since >= _END_GRACE_S:
                    return None
                continue
            stopped_since = None
            if waited >= limit and not self.realtime:
                log.warning(
                    "%s: no frame for %.1f s although playback of %s has not finished; treating it as "
                    "the end (truncated recording?)",
                    self.name,
                    waited,
                    self.path,
                )
                return None
            if waited >= max(limit, 60.0):  # real time: allow recorded pauses, but never hang
                log.warning(
                    "%s: no frame for %.0f s in real-time playback of %s; treating it as the end",
                    self.name,
                    waited,
                    self.path,
                )
                return None

    def _close(self) -> None:
        self._playback = None
        super()._close()


def recorded_depth_frames(path: str | os.PathLike) -> int | None:
    """How many depth frames a ROS 2 ``.db3`` RealSense recording holds (read from its SQLite tables, without
    playing it); None for a ``.bag`` file or a recording whose depth stream cannot be told apart."""
    path = Path(path)
    if path.suffix.lower() != ".db3":
        return None
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT COUNT(*) FROM messages JOIN topics ON messages.topic_id = topics.id "
                "WHERE topics.name LIKE '/device_%/sensor_%/Depth_%/image/data%' GROUP BY topics.name"
            ).fetchall()
    except sqlite3.Error as exc:
        log.debug("cannot count the frames of %s: %s", path, exc)
        return None
    return int(rows[0][0]) if len(rows) == 1 else None


# --- writing recordings ---------------------------------------------------------------------------------------
def _video_stream(
    rs: ModuleType,
    kind: Any,
    uid: int,
    shape: tuple[int, int],
    fps: int,
    bpp: int,
    fmt: Any,
    intr: tuple[float, float, float, float],
) -> Any:
    h, w = shape
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = w, h
    intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = intr
    intrinsics.model, intrinsics.coeffs = rs.distortion.none, [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = kind, 0, uid
    stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = w, h, fps, bpp, fmt
    stream.intrinsics = intrinsics
    return stream


def _software_frame(rs: ModuleType, pixels: np.ndarray, profile: Any, index: int, fps: float) -> Any:
    h, w = pixels.shape[:2]
    frame = rs.software_video_frame()
    frame.pixels = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)  # copied by librealsense
    frame.bpp = pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    frame.stride = w * frame.bpp
    frame.timestamp = index * 1000.0 / fps  # ms
    frame.domain = rs.timestamp_domain.hardware_clock
    frame.frame_number = index
    frame.profile = profile
    return frame


def _depth_units(depth_mm: Any, index: int, shape: tuple[int, int] | None, factor: float) -> np.ndarray:
    """Millimetres -> device units (``factor`` units per mm), checked against the first frame's shape."""
    arr = np.asarray(depth_mm)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"depth frame {index}: expected an HxW array of millimetres, got {arr.dtype} {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(
            f"depth frame {index} is {arr.shape[1]}x{arr.shape[0]} but frame 0 was "
            f"{shape[1]}x{shape[0]}: all frames of a recording have one size"
        )
    if arr.dtype == np.uint16 and factor == 1.0:
        return arr
    units = np.rint(np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) * factor)
    if units.max(initial=0) > 65535:
        log.warning(
            "depth frame %d: depths beyond %g mm saturate at the largest value the depth unit allows; "
            "use a coarser depth_units",
            index,
            65535 / factor,
        )
    return np.clip(units, 0, 65535).astype(np.uint16)


def _color_frame(color: Any, index: int, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(color)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"colour frame {index}: expected an HxWx3 uint8 RGB array, got {arr.dtype} {arr.shape}")
    if shape is not None and arr.shape[:2] != shape:
        raise InputError(
            f"colour frame {index} is {arr.shape[1]}x{arr.shape[0]} but colour frame 0 was "
            f"{shape[1]}x{shape[0]}: all frames of a recording have one size"
        )
    return arr


def _default_intrinsics(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = shape
    f = (w / 2.0) / math.tan(math.radians(_DEFAULT_HFOV_DEG) / 2.0)
    return f, f, (w - 1) / 2.0, (h - 1) / 2.0


def write_recording(
    path: str | os.PathLike,
    depth_mm: Iterable[np.ndarray],
    *,
    color: Iterable[np.ndarray] | None = None,
    fps: float = 30,
    depth_units: float = 0.001,
    serial: str = "lbedge-synthetic",
    intrinsics: tuple[float, float, float, float] | None = None,
    paced: bool = True,
) -> Path:
    """Write depth frames (``HxW`` millimetres, uint16 or float; 0 = no depth) and optional ``HxWx3`` uint8 RGB
    colour frames (one per depth frame) as a RealSense recording that :class:`RealSenseRecording`,
    realsense-viewer and any librealsense program can play.

    Recorded through a librealsense software device: depth is stored as z16 in ``depth_units`` metres per
    unit (0.001: millimetres; 0.0001 stores 0.1 mm steps up to 6.5 m), colour as rgb8, frame ``i`` with
    hardware timestamp ``i / fps`` and frame number ``i``. ``intrinsics``: ``(fx, fy, ppx, ppy)`` of the depth
    frames in pixels (default: a centred 69-degree horizontal field of view); the colour camera shares the
    depth camera's pose and its intrinsics, scaled to its own size, so that aligning depth to colour is exact.

    ``paced`` (default): frames are written at ``fps`` in wall-clock time (writing takes ``frames / fps``
    seconds), because librealsense stamps each stored message with the host time of writing and real-time
    players (realsense-viewer, ``RealSenseRecording(realtime=True)``) follow those stamps. ``paced=False``
    writes as fast as possible: every frame is still stored and plays in non-real-time mode, but real-time
    players rush through it and drop most frames.

    pyrealsense2 >= 2.58 writes ROS2 ``.db3`` files only (older versions: ROS1 ``.bag`` only). Returns the path.
    """
    path = Path(path)
    rs = _rs()
    version, suffix = getattr(rs, "__version__", "?"), _recording_suffix(rs)
    if suffix == ".db3" and path.suffix.lower() == ".bag":
        raise InputError(
            f"cannot write {path}: pyrealsense2 {version} (>= 2.58) records ROS2 .db3 files only, "
            "not .bag; name the output *.db3 (RealSenseRecording and realsense-viewer play both)"
        )
    if path.suffix.lower() not in ((suffix,) if suffix else (".db3", ".bag")):
        raise InputError(
            f"cannot write {path}: a RealSense recording written by pyrealsense2 {version} must end "
            f"in {suffix or '.db3 (pyrealsense2 >= 2.58) or .bag (older)'}"
        )
    if not fps or fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    if not depth_units or depth_units <= 0:
        raise InputError(f"depth_units (metres per stored unit) must be positive, got {depth_units}")
    factor = 0.001 / depth_units
    factor = 1.0 if math.isclose(factor, 1.0, rel_tol=1e-9) else factor

    depth_iter = iter(depth_mm)
    color_iter = iter(color) if color is not None else None
    try:
        first = _depth_units(next(depth_iter), 0, None, factor)
    except StopIteration:
        raise InputError("write_recording: no depth frames given") from None
    first_color = None
    if color_iter is not None:
        try:
            first_color = _color_frame(next(color_iter), 0, None)
        except StopIteration:
            raise InputError("write_recording: color was given but holds no frames") from None
    dshape = first.shape
    cshape = first_color.shape[:2] if first_color is not None else None
    intr = tuple(float(v) for v in intrinsics) if intrinsics is not None else _default_intrinsics(dshape)
    if len(intr) != 4:
        raise InputError(f"intrinsics must be (fx, fy, ppx, ppy), got {intrinsics}")
    stream_fps = max(1, int(round(fps)))
    path.parent.mkdir(parents=True, exist_ok=True)

    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, str(serial))
    device.register_info(rs.camera_info.name, "lbedge synthetic RealSense")
    depth_sensor = device.add_sensor("Stereo Module")
    depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_units))  # makes it a depth sensor
    depth_profile = depth_sensor.add_video_stream(
        _video_stream(rs, rs.stream.depth, 0, dshape, stream_fps, 2, rs.format.z16, intr)
    ).as_video_stream_profile()
    sensors = [(depth_sensor, depth_profile)]
    if cshape is not None:
        sx, sy = cshape[1] / dshape[1], cshape[0] / dshape[0]
        cintr = (intr[0] * sx, intr[1] * sy, (intr[2] + 0.5) * sx - 0.5, (intr[3] + 0.5) * sy - 0.5)
        color_sensor = device.add_sensor("RGB Camera")
        color_profile = color_sensor.add_video_stream(
            _video_stream(rs, rs.stream.color, 1, cshape, stream_fps, 3, rs.format.rgb8, cintr)
        ).as_video_stream_profile()
        same_pose = rs.extrinsics()  # default-constructed: an all-zero rotation, which breaks rs.align
        same_pose.rotation, same_pose.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
        depth_profile.register_extrinsics_to(color_profile, same_pose)
        device.create_matcher(rs.matchers.dlr_c)
        sensors.append((color_sensor, color_profile))

    written = 0
    ok = False
    try:
        recorder = rs.recorder(str(path), device)
    except RuntimeError as exc:
        raise SensorError(f"cannot create the RealSense recording {path}: {exc}") from exc
    queue = rs.frame_queue(4)  # the sensors need a consumer; the recorder taps them upstream
    try:
        for sensor, profile in sensors:
            sensor.open(profile)
            sensor.start(queue)
        start = time.perf_counter()
        index, depth, rgb = 0, first, first_color
        while True:
            if paced:
                delay = start + index / fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            depth_sensor.on_video_frame(_software_frame(rs, depth, depth_profile, index, fps))
            if rgb is not None:
                sensors[1][0].on_video_frame(_software_frame(rs, rgb, sensors[1][1], index, fps))
            written = index = index + 1
            nxt = next(depth_iter, None)
            nxt_color = next(color_iter, None) if color_iter is not None else None
            if nxt is None:
                if nxt_color is not None:
                    raise InputError(f"write_recording: more colour frames than the {index} depth frames")
                break
            if color_iter is not None and nxt_color is None:
                raise InputError(
                    f"write_recording: {index} colour frames for more depth frames: give one colour "
                    "frame per depth frame"
                )
            depth = _depth_units(nxt, index, dshape, factor)
            rgb = _color_frame(nxt_color, index, cshape) if nxt_color is not None else None
        ok = True
    except RuntimeError as exc:
        raise SensorError(f"writing the RealSense recording {path} failed at frame {written}: {exc}") from exc
    finally:
        for sensor, _ in sensors:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass
        recorder.pause()
        del recorder  # destroying the recorder finalises the file
        if not ok:
            path.unlink(missing_ok=True)
    if not path.is_file() or path.stat().st_size == 0:
        raise SensorError(f"librealsense did not write the recording {path}")
    log.debug("wrote %d frames to %s", written, path)
    return path


__all__ = [
    "FILTERS",
    "RealSense",
    "RealSenseRecording",
    "recorded_depth_frames",
    "recording_suffix",
    "write_recording",
]
