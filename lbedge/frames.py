"""The contract between sensors and the runtime: ``Frame`` and the ``Source`` protocol.

``lbedge.sensors`` implements sources (live cameras, microphones and their replay twins); the runtime
(the pipeline) accepts any object with this interface and never imports ``lbedge.sensors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Frame:
    """One reading of a sensor.

    ``data``: an RGB ``HxWx3`` uint8 image, a depth map, a thermal image, or audio samples
    ``[channels, samples]`` (``meta["sample_rate"]``). ``timestamp`` is ``time.monotonic()`` at capture on
    this host; ``device_timestamp`` is the sensor's own clock (seconds) when it has one.
    """

    data: np.ndarray
    modality: str
    timestamp: float
    sequence: int
    device_timestamp: float | None = None
    units: str = ""  # "rgb8", "mm", "degC", "centikelvin", "pcm_float"...
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def age(self) -> float:
        """Seconds since capture."""
        return time.monotonic() - self.timestamp


@runtime_checkable
class Source(Protocol):
    """A sensor stream: ``open()``, ``read()`` (a Frame, or None at the end of a recording), ``close()``.

    ``live`` sources deliver in real time (a pipeline keeps only their newest frame); replay sources can also run
    as fast as possible without drops. ``read()`` blocks until a frame is there; a live source bounds that wait
    itself and raises :class:`~lbedge.errors.SensorError` when its sensor goes silent (RealSense ``timeout_ms``,
    Microphone ``stall_timeout``...), so a reader never hangs on a device that is gone. ``open()`` on an open
    source does nothing. A source may also state the traits of :class:`SourceTraits`.
    """

    name: str
    modality: str
    live: bool

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceTraits:
    """What a consumer may rely on besides the :class:`Source` protocol; a source states each by an attribute of
    the same name, and one it lacks takes the default.

    ``realtime``: a replay paced at its recorded rate (not as fast as possible). ``fps``: the nominal frame rate,
    when known (a pipeline reports a stall only after a few frame periods). ``seek``: a method ``seek(position)``
    that moves an open recording to frame ``position`` and returns the position reached; a recording without it is
    resumed by reading and discarding frames.
    """

    realtime: bool = False
    fps: float | None = None
    can_seek: bool = False

    @classmethod
    def of(cls, source: object) -> "SourceTraits":
        fps = getattr(source, "fps", None)
        return cls(
            realtime=bool(getattr(source, "realtime", False)),
            fps=float(fps) if isinstance(fps, (int, float)) and fps > 0 else None,
            can_seek=callable(getattr(source, "seek", None)),
        )
