"""The bounds lbedge puts on the work one input may cause, in one place.

Every limit has a default that fits an edge device, an environment variable that overrides it at import, and
:func:`set_limits` to change it at run time (like Pillow's ``Image.MAX_IMAGE_PIXELS``). An input beyond a limit
is refused with an :class:`~lbedge.errors.InputError` (or a :class:`~lbedge.errors.CheckpointError` for models)
that names the limit and how to raise it, before anything large is allocated.

==========================  ==================================  ===========================================
limit                       environment variable                what it bounds
==========================  ==================================  ===========================================
``max_image_pixels``        ``LBEDGE_MAX_IMAGE_PIXELS``         width x height of a decoded image or frame
``max_audio_seconds``       ``LBEDGE_MAX_AUDIO_SECONDS``        duration of one audio clip or file
``max_video_frames``        ``LBEDGE_MAX_VIDEO_FRAMES``         frames decoded from one video file
``max_labels``              ``LBEDGE_MAX_LABELS``               labels of one classifier
``max_label_chars``         ``LBEDGE_MAX_LABEL_CHARS``          characters of one label
``max_json_bytes``          ``LBEDGE_MAX_JSON_BYTES``           a JSON or tokenizer file of a bundle or checkpoint
``max_model_params``        ``LBEDGE_MAX_MODEL_PARAMS``         parameters a config.json may declare
==========================  ==================================  ===========================================
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one input may cost (see the module docstring for the environment variables)."""

    max_image_pixels: int = 64 * 1024 * 1024  # 64 MPixel: 8192 x 8192; a decoded RGB copy is 192 MiB
    max_audio_seconds: float = 600.0  # 10 minutes (38 MiB of float32 mono at 16 kHz)
    max_video_frames: int = 100_000  # about an hour at 30 FPS (decoded one at a time)
    max_labels: int = 100_000
    max_label_chars: int = 1000
    max_json_bytes: int = 16 * 1024 * 1024  # manifests and configs are a few KiB
    max_model_params: int = 20_000_000_000  # 20 G parameters: far beyond any LanguageBind tower

    def check(self) -> "Limits":
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"limit {f.name} must be a positive number, got {value!r}")
        return self


_ENV = {f.name: "LBEDGE_" + f.name.upper() for f in dataclasses.fields(Limits)}


def _from_env() -> Limits:
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(Limits):
        raw = os.environ.get(_ENV[f.name])
        if raw is None or not raw.strip():
            continue
        try:
            kw[f.name] = float(raw) if f.type in ("float", float) else int(float(raw))
        except ValueError:
            raise ValueError(f"{_ENV[f.name]}={raw!r} is not a number") from None
    return Limits(**kw).check()


_lock = threading.Lock()
_current = _from_env()


def limits() -> Limits:
    """The limits in force."""
    return _current


def set_limits(**changes: Any) -> Limits:
    """Change some limits (``set_limits(max_image_pixels=200_000_000)``); returns the previous limits, which
    ``set_limits(**dataclasses.asdict(previous))`` restores."""
    global _current
    with _lock:
        previous = _current
        unknown = sorted(set(changes) - set(_ENV))
        if unknown:
            raise TypeError(f"unknown limit(s) {', '.join(unknown)}: choose among {', '.join(_ENV)}")
        _current = dataclasses.replace(previous, **changes).check()
        return previous


def env_var(name: str) -> str:
    """The environment variable that sets limit ``name`` (for error messages)."""
    return _ENV[name]


def hint(name: str) -> str:
    """How to raise limit ``name``: for the end of an error message."""
    value = getattr(_current, name)
    shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return f"raise it with lbedge.limits.set_limits({name}=...) or the environment variable {_ENV[name]} (now {shown})"
