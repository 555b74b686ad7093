"""The contract between sensors and the runtime: ``Frame`` and the ``Source`` protocol.

``lbedge.sensors`` implements sources (live cameras, microphones and their replay twins); the runtime
(the pipeline) accepts any object with this interface and never imports ``lbedge.sensors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable

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
    units: str = ""                          # "rgb8", "mm", "degC", "centikelvin", "pcm_float"...
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def age(self) -> float:
        """Seconds since capture."""
        return time.monotonic() - self.timestamp


@runtime_checkable
class Source(Protocol):
    """A sensor stream: ``open()``, ``read()`` (a Frame, or None at the end of a recording), ``close()``.

    Sources are context managers and iterators. ``live`` sources deliver in real time (a pipeline keeps
    only their newest frame); replay sources can also run as fast as possible without drops.
    """

    name: str
    modality: str
    live: bool

    def open(self) -> None: ...

    def read(self, timeout: float | None = None) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Source": ...

    def __exit__(self, *exc: Any) -> None: ...

    def __iter__(self) -> Iterator[Frame]: ...
