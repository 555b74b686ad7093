"""One device, several pipeline sources: e.g. a RealSense's depth and colour streams classified side by side
(RGB-D) from one camera connection. Every view of a device frame keeps the frame's timestamps, so the
pipeline's late fusion pairs them exactly."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Mapping

from lbedge.errors import SensorError
from lbedge.frames import Frame, Source

from .base import SourceIterationMixin

log = logging.getLogger(__name__)

View = Callable[[Frame], "Frame | None"]


class SplitSource:
    """Share ``source`` between several views; :meth:`sources` gives one pipeline source per view.

    ``views`` maps a name to ``(modality, fn)``, where ``fn(frame)`` returns the view's Frame or None (nothing
    for that view in this frame). Whichever view reads first pulls the next device frame and hands every
    other view its part. A live device keeps only the newest part per view (the older ones are counted in
    ``dropped``). A recording loses nothing: each view holds up to ``backlog`` parts, and a view that falls that
    far behind holds the others back (the device is read no further) until it reads again. Only a view that is
    not open, or reads nothing for ``stall_s`` seconds while the others wait, has its oldest parts dropped, each
    counted in ``lost`` and in the view's ``frames_lost``. The device opens with its first view and closes with
    its last; when it fails, every view's next read reopens it, and a recording resumes after the last device
    frame it delivered (its views' ``seek`` is then a no-op: no frame comes twice).
    """

    def __init__(
        self,
        source: Source,
        views: Mapping[str, tuple[str, View]],
        *,
        backlog: int = 256,
        stall_s: float = 30.0,
    ):
        if not views:
            raise SensorError("SplitSource needs at least one view")
        if backlog < 1 or not stall_s > 0:
            raise SensorError(f"SplitSource needs backlog >= 1 and stall_s > 0, got {backlog} and {stall_s}")
        self.source = source
        self._views = dict(views)
        self._backlog = 1 if source.live else int(backlog)
        self.stall_s = float(stall_s)
        self._parts: dict[str, collections.deque[Frame]] = {n: collections.deque() for n in self._views}
        self._cond = threading.Condition()
        self._users = 0
        self._device_open = False
        self._ended = False
        self._pulled = 0  # device frames read so far (a reopened recording resumes after them)
        self._failed = False
        self._stalled: set[str] = set()  # views that kept the others waiting for stall_s: not waited for
        self.dropped = {n: 0 for n in self._views}  # live: parts replaced by newer ones
        self.lost = {n: 0 for n in self._views}  # recordings: parts dropped from a view that was not reading
        self._children = {n: _View(self, n, modality) for n, (modality, _) in self._views.items()}

    def sources(self) -> dict[str, Source]:
        return dict(self._children)

    def frames_lost(self, view: str) -> int:
        """Frames ``view`` will never deliver: the device's own losses and the parts dropped from the view."""
        device = getattr(self.source, "frames_lost", 0)
        return (device if isinstance(device, int) else 0) + self.lost[view]

    # --- called by the views -----------------------------------------------------------------------------
    def _open(self) -> None:
        with self._cond:
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
        with self._cond:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._device_open:
                self._device_open = False
                self.source.close()
                self._failed = True  # closed with frames still to come: reopening resumes
            self._cond.notify_all()  # a view that waited for this one goes on

    def _read(self, name: str) -> Frame | None:
        with self._cond:
            self._stalled.discard(name)
            while not self._parts[name]:
                if self._ended:
                    return None
                behind = self._behind(name)
                if behind is not None:
                    self._wait_for(behind)
                    continue
                self._pull()
            part = self._parts[name].popleft()
            self._cond.notify_all()
            return part

    def _behind(self, name: str) -> str | None:
        """An open view of a recording, other than ``name``, whose backlog is full: the device must wait for it."""
        if self.source.live:
            return None
        for view, parts in self._parts.items():
            if view != name and view not in self._stalled and self._children[view].is_open:
                if len(parts) >= self._backlog:
                    return view
        return None

    def _wait_for(self, view: str) -> None:
        """Wait (lock released) until ``view`` reads or closes; after ``stall_s`` stop waiting for it."""

        def moved() -> bool:
            return len(self._parts[view]) < self._backlog or not self._children[view].is_open

        if not self._cond.wait_for(moved, timeout=self.stall_s):
            self._stalled.add(view)
            log.warning(
                "%s: view %s read nothing for %.0f s with %d frames waiting: its oldest frames are dropped "
                "(counted in its frames_lost) until it reads again",
                self.source.name,
                view,
                self.stall_s,
                len(self._parts[view]),
            )

    def _pull(self) -> None:
        """Read the next device frame and hand every view its part (the device's end sets ``_ended``)."""
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
            return
        self._pulled += 1
        for view, (_, fn) in self._views.items():
            part = fn(frame)
            if part is None:
                continue
            parts = self._parts[view]
            if len(parts) >= self._backlog:  # live: the newest only; a recording: a view nobody waits for
                parts.popleft()
                if self.source.live:
                    self.dropped[view] += 1
                else:
                    self.lost[view] += 1
            parts.append(part)


class _View(SourceIterationMixin):
    """One view of a :class:`SplitSource`, with the Source interface."""

    def __init__(self, parent: SplitSource, name: str, modality: str):
        self.parent, self.modality = parent, modality
        self.name = f"{parent.source.name}:{name}"
        self._view = name
        self.live = parent.source.live
        self._opened = False

    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def frames_lost(self) -> int:
        """Frames of the device this view will never deliver (see :meth:`SplitSource.frames_lost`)."""
        return self.parent.frames_lost(self._view)

    @property
    def realtime(self) -> bool:
        """The device's pacing (a pipeline reads paced views without holding a frame back)."""
        return bool(getattr(self.parent.source, "realtime", False))

    @property
    def fps(self) -> float | None:
        return getattr(self.parent.source, "fps", None)

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
