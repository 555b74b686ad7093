"""Sources from short command-line specs, as ``lbedge demo`` and the examples take them.

=========  ==========================================================================================
kind       spec
=========  ==========================================================================================
rgb        camera index, ``/dev/videoN``, GStreamer pipeline (``... ! appsink``), URL, video file, image folder
depth      ``realsense`` or ``realsense:SERIAL`` (live), a ``.bag``/``.db3`` recording, a folder of 16-bit frames
thermal    camera index or ``/dev/videoN`` (live UVC), a folder of 16-bit frames, a 16-bit FFV1 video
audio      ``mic``, ``mic:NAME`` or ``mic:INDEX`` (live), a WAV/FLAC file
=========  ==========================================================================================

Recordings deliver every recorded frame, as fast as they are read or, with ``realtime``, paced at their recorded
rate; a frame a recording cannot deliver (a damaged file, a truncated video) is counted in its source's
``frames_lost``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbedge.errors import SensorError
from lbedge.frames import Source

KINDS = ("rgb", "depth", "thermal", "audio")


@dataclass
class SourceOptions:
    """Options that apply to the sources a spec may name."""

    realtime: bool = False  # pace recordings at their own rate (every frame is still delivered)
    # False: RealSense recordings paced by librealsense's real-time playback, which drops the frames a slow reader
    # misses (counted in frames_lost); only with realtime
    lossless: bool = True
    loop: bool = False  # start recordings over at their end (videos, RealSense recordings)
    thermal_profile: str = "lepton"
    agc: str = "percentile"
    depth_unit: str = "mm"  # unit of 16-bit depth frame folders
    audio_window: float = 2.0  # seconds
    audio_hop: float = 1.0


def source_from_spec(kind: str, spec: str, options: SourceOptions | None = None) -> Source:
    """The source a spec names (see the module docstring); a spec that names nothing usable is a SensorError."""
    o = options or SourceOptions()
    p = Path(spec)
    if kind == "rgb":
        from .rgb import ImageFolderSource, OpenCVCamera, VideoFileSource

        if p.is_dir():
            return ImageFolderSource(p, realtime=o.realtime, loop=o.loop)
        if p.is_file():
            return VideoFileSource(p, realtime=o.realtime, loop=o.loop)
        return OpenCVCamera(spec)
    if kind == "depth":
        if spec == "realsense" or spec.startswith("realsense:"):
            from .realsense import RealSense

            return RealSense(serial=spec.partition(":")[2] or None)
        if p.suffix.lower() in (".bag", ".db3"):
            from .realsense import RealSenseRecording

            return RealSenseRecording(p, realtime=o.realtime, loop=o.loop, lossless=o.lossless)
        if p.is_dir():
            from .sequences import DepthSequenceSource

            return DepthSequenceSource(p, unit=o.depth_unit, realtime=o.realtime)
        raise SensorError(
            f"depth source {spec!r}: give realsense[:SERIAL], a .bag/.db3 recording or a folder of "
            "16-bit PNG/TIFF frames"
        )
    if kind == "thermal":
        if spec.isdigit() or spec.startswith("/dev/video"):
            from .thermal_camera import ThermalCamera

            return ThermalCamera(spec, profile=o.thermal_profile, agc_method=o.agc)
        if p.exists():
            from .sequences import ThermalSequenceSource

            return ThermalSequenceSource(p, profile=o.thermal_profile, agc_method=o.agc, realtime=o.realtime)
        raise SensorError(
            f"thermal source {spec!r}: give a camera index or /dev/videoN, a folder of 16-bit frames "
            "or a 16-bit FFV1 video"
        )
    if kind == "audio":
        if spec == "mic" or spec.startswith("mic:"):
            from .microphone import Microphone

            dev = spec.partition(":")[2]
            dev = "" if dev == "default" else dev
            return Microphone(
                device=int(dev) if dev.isdigit() else (dev or None), window=o.audio_window, hop=o.audio_hop
            )
        if p.is_file():
            from .audio import AudioFileSource

            return AudioFileSource(p, window=o.audio_window, hop=o.audio_hop, realtime=o.realtime)
        raise SensorError(f"audio source {spec!r}: give mic, mic:NAME, mic:INDEX or a WAV/FLAC file")
    raise SensorError(f"unknown source kind {kind!r}: {', '.join(KINDS)}")
