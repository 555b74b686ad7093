"""Shared behaviour of lbedge sources: context manager, iterator, sequence numbers, real-time pacing."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import numpy as np

from lbedge.errors import SensorError
from lbedge.frames import Frame

log = logging.getLogger(__name__)


class SourceIterationMixin:
    """The context manager and iterator of a source, given its ``open``, ``read`` and ``close``."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        while (frame := self.read()) is not None:
            yield frame


class BaseSource(SourceIterationMixin):
    """Subclasses implement ``_open``, ``_read`` (data, device timestamp or None; None at the end) and ``_close``.

    ``realtime`` (replay sources): pace frames at the recording's rate instead of as fast as possible. Pacing only
    ever waits: a reader slower than the recording gets every frame, late, never a newer one instead.

    ``frames_lost`` counts the frames the source could not deliver over its lifetime (reopenings included): a
    recording's unreadable files or truncated end, the frame-number gaps of a device, the frames a real-time player
    skipped. A pipeline reports it per source as ``lost``; a subclass adds to it with :meth:`_lose`.
    """

    modality = "image"
    units = ""
    live = False

    def __init__(self, name: str = "", *, realtime: bool = False, fps: float | None = None):
        self.name = name or type(self).__name__
        self.realtime = realtime
        self.fps = fps
        self._seq = 0
        self._opened = False
        self._t0: float | None = None
        self.frames_lost = 0
        self._lost_keys: set[object] = set()

    # --- subclass hooks ------------------------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> tuple[np.ndarray, float | None] | tuple[np.ndarray, float | None, dict[str, Any]] | None:
        """(data, device timestamp or None) or (data, device timestamp, this frame's meta); None at the end."""
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _meta(self) -> dict[str, Any]:
        """Meta every frame of the source carries (a frame's own meta from ``_read`` is added to it)."""
        return {}

    def _lose(self, count: int, why: str, level: int = logging.WARNING) -> None:
        """Count ``count`` frames that will never be delivered, and log why."""
        if count > 0:
            self.frames_lost += count
            log.log(level, "%s: %d frame(s) lost: %s (%d in all)", self.name, count, why, self.frames_lost)

    def _lose_once(self, key: object, why: str, count: int = 1) -> None:
        """Count ``count`` lost frames for ``key`` (e.g. an unreadable file of a recording) the first time only: a
        recording that loops or is resumed passes over the same damaged place again."""
        if key not in self._lost_keys:
            self._lost_keys.add(key)
            self._lose(count, why)

    def _lose_rest(self, announced: float | None, read: int, what: str) -> None:
        """At the end of a pass over a recording that announces ``announced`` frames (unknown when None or not
        positive), of which ``read`` came out: count the others as lost (a truncated or damaged file)."""
        if announced and announced > 0 and read < int(announced):
            self._lose_once(
                ("end", read),
                f"{what} announces {int(announced)} frames but ended after {read} (truncated or damaged?)",
                int(announced) - read,
            )

    def _pace_offset(self) -> float | None:
        """Seconds after the start of playback at which the frame just read is due, for real-time pacing (None:
        not paced). By default the frame's position at ``fps``; a recording with its own time stamps overrides it."""
        return self._seq / self.fps if self.fps else None

    def _skip(self) -> bool:
        """Pass over the next frame without delivering it (False at the end). Override when skipping is cheaper
        than reading (e.g. grabbing a video frame without decoding it)."""
        return self._read() is not None

    # --- public API -----------------------------------------------------------------------------------------
    def open(self) -> None:
        if not self._opened:
            self._open()
            self._opened = True
            self._seq = 0
            self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        if not self._opened:
            raise SensorError(f"{self.name}: read() before open()")
        got = self._read()
        if got is None:
            return None
        data, device_ts = got[0], got[1]
        meta = {**self._meta(), **got[2]} if len(got) > 2 else self._meta()
        offset = self._pace_offset() if self.realtime else None
        if offset is not None and self._t0 is not None:
            delay = self._t0 + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        frame = Frame(
            data=data,
            modality=self.modality,
            timestamp=time.monotonic(),
            sequence=self._seq,
            device_timestamp=device_ts,
            units=self.units,
            source=self.name,
            meta=meta,
        )
        self._seq += 1
        return frame

    def seek(self, position: int) -> int:
        """Move an open recording to frame ``position`` (counted from its start as ``read()`` delivers them), so
        that the next ``read()`` delivers that frame with that sequence number; returns the position reached,
        which is smaller when the recording ends first. Recordings only: a live sensor cannot seek.

        A pipeline uses it to resume a recording that failed and was reopened, so no frame comes twice."""
        if self.live:
            raise SensorError(f"{self.name}: a live source cannot seek")
        if not self._opened:
            raise SensorError(f"{self.name}: seek() before open()")
        if position < self._seq:
            raise SensorError(f"{self.name}: cannot seek back from frame {self._seq} to {position}: reopen it")
        while self._seq < position and self._skip():
            self._seq += 1
        if self._t0 is not None and self.fps:
            self._t0 = time.monotonic() - self._seq / self.fps  # real-time pacing goes on from here
        return self._seq

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r})"
