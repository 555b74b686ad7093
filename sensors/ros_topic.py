"""A live ROS 2 topic as a source: a node's subscription hands each message to :meth:`TopicSource.push`, and the
pipeline's reader thread decodes the newest one. No ROS import here: the node (``lbedge.ros2.node``) owns rclpy."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from lbedge.errors import SensorError
from lbedge.frames import Frame

from .base import SourceIterationMixin
from .ros_messages import Decoded, DecodeOptions, MessageDecoder

log = logging.getLogger(__name__)


class TopicSource(SourceIterationMixin):
    """Messages of one topic, pushed by a subscription callback, as a live source.

    Images: only the newest message is kept, and decoded in the reader's thread (the ROS executor only stores it);
    a message replaced before it was read counts in ``replaced``. Audio: every chunk is windowed as it arrives (no
    sample is skipped) and the newest window is kept. A frame's ``timestamp`` is the host time the message arrived,
    its ``device_timestamp`` the message's header stamp (what fusion compares with ``sync_clock="device"``).

    ``read()`` waits for a message; after ``silence_s`` seconds without one it raises :class:`SensorError` naming
    the topic (the pipeline reports it and waits again), so a driver that died never hangs a reader. A source
    closed while (or before) a reader waits returns None: the node is shutting down.
    """

    live = True

    def __init__(
        self,
        name: str,
        topic: str,
        msgtype: str,
        modality: str,
        options: DecodeOptions | None = None,
        *,
        silence_s: float = 30.0,
    ):
        if not silence_s > 0:
            raise SensorError(f"{name}: silence_s must be positive seconds, got {silence_s}")
        self.name, self.topic = name, topic
        self.decoder = MessageDecoder(msgtype, modality, options, topic=topic)
        self.modality = self.decoder.modality
        self.units = self.decoder.units
        self.silence_s = float(silence_s)
        self.replaced = 0  # messages (or audio windows) replaced by newer ones before they were read
        self.received = 0
        self.undecodable = 0  # messages that could not be decoded (passed over, logged)
        self._cond = threading.Condition()
        self._latest: tuple[Any, int, float] | None = None  # (message, receive time ns, host monotonic)
        self._windows: collections.deque[tuple[Decoded, float]] = collections.deque(maxlen=1)
        self._opened = False
        self._seq = 0

    def push(self, msg: Any, receive_time_ns: int | None = None) -> None:
        """Hand over one message (from the subscription callback; quick: images are decoded later)."""
        now = time.monotonic()
        received = int(receive_time_ns if receive_time_ns is not None else time.time_ns())
        with self._cond:
            self.received += 1
            if self.modality == "audio":
                try:
                    windows = self.decoder.decode(msg, received)
                except Exception as exc:  # noqa: BLE001 - one bad chunk costs only itself
                    self.undecodable += 1
                    log.warning("%s: an audio message on %s cannot be decoded: %s", self.name, self.topic, exc)
                    return
                for w in windows:
                    if len(self._windows) == self._windows.maxlen:
                        self.replaced += 1
                    self._windows.append((w, now))
            else:
                if self._latest is not None:
                    self.replaced += 1
                self._latest = (msg, received, now)
            self._cond.notify_all()

    # --- the Source protocol -----------------------------------------------------------------------------------
    def open(self) -> None:
        with self._cond:
            self._opened = True

    def read(self) -> Frame | None:
        deadline = time.monotonic() + self.silence_s
        while True:
            with self._cond:
                while self._opened and self._latest is None and not self._windows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SensorError(
                            f"{self.name}: no message on {self.topic} for {self.silence_s:g} s: is its driver "
                            f"running? (ros2 topic hz {self.topic})"
                        )
                    self._cond.wait(min(left, 0.5))
                if not self._opened:
                    return None  # closed (the node shuts down): no more frames
                if self._windows:
                    decoded, arrived = self._windows.popleft()
                    return self._frame(decoded, arrived)
                msg, received, arrived = self._latest  # type: ignore[misc]
                self._latest = None
            try:
                return self._frame(self.decoder.decode(msg, received)[0], arrived)
            except Exception as exc:  # noqa: BLE001 - one bad message costs only itself
                self.undecodable += 1
                if self.undecodable <= 3 or self.undecodable % 100 == 0:
                    what = f"{self.name}: a message on {self.topic} cannot be decoded ({self.undecodable} so far)"
                    log.warning("%s: %s", what, exc)

    def close(self) -> None:
        with self._cond:
            self._opened = False
            self._cond.notify_all()

    def _frame(self, d: Decoded, arrived: float) -> Frame:
        frame = Frame(
            data=d.data,
            modality=self.modality,
            timestamp=arrived,
            sequence=self._seq,
            device_timestamp=d.stamp_ns / 1e9,
            units=d.units,
            source=self.name,
            meta=d.meta,
        )
        self._seq += 1
        return frame

    def __repr__(self) -> str:
        return f"TopicSource({self.name!r}, {self.topic!r}, modality={self.modality!r})"
