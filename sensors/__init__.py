"""lbedge.sensors: sources that deliver :class:`lbedge.frames.Frame` objects.

Live: :class:`OpenCVCamera` (V4L2 index or path, Jetson CSI GStreamer strings, RTSP/HTTP). Replay:
:class:`VideoFileSource`, :class:`ImageFolderSource`, :class:`DepthSequenceSource` (16-bit PNG/TIFF in a stated
unit, delivered in millimetres), :class:`ThermalSequenceSource` (radiometric 16-bit frames of a camera profile,
delivered as 8-bit AGC images with the temperature map), :class:`AudioFileSource` (sliding windows).
Thermal camera profiles and automatic gain control: :mod:`lbedge.sensors.thermal`.
RealSense, live thermal cameras, microphones and the live pipeline are still to come (sensors issue).
"""

from .audio import AudioFileSource
from .base import BaseSource
from .rgb import ImageFolderSource, OpenCVCamera, VideoFileSource
from .sequences import DepthSequenceSource, ThermalSequenceSource
from .thermal import PROFILES, ThermalProfile, agc, thermal_frame
from .thermal_camera import ThermalCamera

__all__ = ["AudioFileSource", "BaseSource", "DepthSequenceSource", "ImageFolderSource", "OpenCVCamera", "PROFILES",
           "ThermalCamera", "ThermalProfile", "ThermalSequenceSource", "VideoFileSource", "agc", "thermal_frame"]
