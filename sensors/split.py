"""One device, several pipeline sources: e.g. a RealSense's depth and colour streams classified side by side
(RGB-D) from one camera connection. Every view of a device frame keeps the frame's timestamps, so the
pipeline's late fusion pairs them exactly."""

from __future__ import annotations

import collections
import threading
from typing import Callable, Mapping

from lbedge.errors import SensorError
from lbedge.frames import Frame, Source

from .base import SourceIterationMixin

View = Callable[[Frame], "Frame | None"]


class SplitSource:
    """Share ``source`` between several views; :meth:`sources` gives one pipeline source per view.

    ``views`` maps a name to ``(modality, fn)``, where ``fn(frame)`` returns the view's Frame or None (nothing
    for that view in this frame). Whichever view reads first pulls the next device frame and hands every
    other view its part: a live device keeps only the newest part per view, a recording up to ``backlog``
    parts (older ones are dropped and counted in ``dropped``). The device opens with its first view and
    closes with its last; when it fails, every view's next read reopens it, and a recording resumes after the
    last device frame it delivered (its views' ``seek`` is then a no-op: no frame comes twice).
    """

    def __init__(self, source: Source, views: Mapping[str, tuple[str, View]], *, backlog: int = 256):
        if not views:
            raise SensorError("SplitSource needs at least one view")
        self.source = source
        self._views = dict(views)
        self._parts: dict[str, collections.deque[Frame]] = {
            n: collections.deque(maxlen=1 if source.live else backlog) for n in self._views
        }
        self._lock = threading.Lock()
        self._users = 0
        self._device_open = False
        self._ended = False
        self._pulled = 0  # device frames read so far (a reopened recording resumes after them)
        self._failed = False
        self.dropped = {n: 0 for n in self._views}
        self._children = {n: _View(self, n, modality) for n, (modality, _) in self._views.items()}

    def sources(self) -> dict[str, Source]:
        return dict(self._children)

    # --- called by the views -----------------------------------------------------------------------------
    def _open(self) -> None:
        with self._lock:
            self._users += 1
            self._ensure_open()

    def _ensure_open(self) -> None:
        if not self._device_open:
            self.source.open()
            self._device_open, self._ended = True, False
            if self._failed and not self.source.live and self._pulled:
                self._resume()
            self._failed = False

    def _resume(self) -> None:
        """After a failure, move the reopened recording past the device frames already handed out."""
        seek = getattr(self.source, "seek", None)
        if callable(seek):
            got = int(seek(self._pulled))
        else:
            got = 0
            while got < self._pulled and self.source.read() is not None:
                got += 1
        if got < self._pulled:
            raise SensorError(
                f"{self.source.name}: the recording holds only {got} frames now, {self._pulled} were already delivered"
            )

    def _close(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._device_open:
                self._device_open = False
                self.source.close()
                self._failed = True  # closed with frames still to come: reopening resumes

    def _read(self, name: str) -> Frame | None:
        with self._lock:
            while not self._parts[name]:
                if self._ended:
                    return None
                self._ensure_open()
                try:
                    frame = self.source.read()
                except Exception:
                    self._device_open, self._failed = False, True  # every view's next read reopens the device
                    try:
                        self.source.close()
                    except Exception:
                        pass
                    raise
                if frame is None:
                    self._ended = True
                    return None
                self._pulled += 1
                for view, (_, fn) in self._views.items():
                    part = fn(frame)
                    if part is not None:
                        q = self._parts[view]
                        if len(q) == q.maxlen:
                            self.dropped[view] += 1
                        q.append(part)
            return self._parts[name].popleft()


class _View(SourceIterationMixin):
    """One view of a :class:`SplitSource`, with the Source interface."""

    def __init__(self, parent: SplitSource, name: str, modality: str):
        self.parent, self.modality = parent, modality
        self.name = f"{parent.source.name}:{name}"
        self._view = name
        self.live = parent.source.live
        self._opened = False

    def open(self) -> None:
        if not self._opened:
            self.parent._open()
            self._opened = True

    def read(self) -> Frame | None:
        if not self._opened:
            raise SensorError(f"{self.name}: read() before open()")
        return self.parent._read(self._view)

    def seek(self, position: int) -> int:
        """A view resumes through its device (see :class:`SplitSource`): nothing to skip here."""
        return position

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self.parent._close()


def rgbd_sources(camera: Source) -> dict[str, Source]:
    """``{"depth": ..., "rgb": ...}`` from a RealSense (live or recording) opened with ``color=True``."""
    if not getattr(camera, "color", False):
        raise SensorError(f"{camera.name}: open the RealSense with color=True to classify its colour stream")

    def depth(frame: Frame) -> Frame:
        meta = {k: v for k, v in frame.meta.items() if k != "color"}
        return Frame(
            frame.data,
            "depth",
            frame.timestamp,
            frame.sequence,
            frame.device_timestamp,
            frame.units,
            frame.source,
            meta,
        )

    def rgb(frame: Frame) -> Frame | None:
        color = frame.meta.get("color")
        if color is None:
            return None
        return Frame(
            color,
            "image",
            frame.timestamp,
            frame.sequence,
            frame.device_timestamp,
            "rgb8",
            frame.source,
            {"intrinsics": frame.meta.get("intrinsics")},
        )

    return SplitSource(camera, {"depth": ("depth", depth), "rgb": ("image", rgb)}).sources()
