"""lbedge.sensors: sources that deliver :class:`lbedge.frames.Frame` objects.

Live: :class:`OpenCVCamera` (V4L2 index or path, Jetson CSI GStreamer strings, RTSP/HTTP). Replay:
:class:`VideoFileSource`, :class:`ImageFolderSource`, :class:`DepthSequenceSource` (16-bit PNG/TIFF in a stated
unit, delivered in millimetres), :class:`ThermalSequenceSource` (radiometric 16-bit frames of a camera profile,
delivered as 8-bit AGC images with the temperature map), :class:`AudioFileSource` (sliding windows).
Thermal camera profiles and automatic gain control: :mod:`lbedge.sensors.thermal`.
Live and replayed depth: :class:`RealSense`, :class:`RealSenseRecording` (.bag/.db3) and
:func:`write_recording` (pyrealsense2, ``lbedge[realsense]``). Live thermal: :class:`ThermalCamera` (UVC, V4L2).
Microphones: :class:`Microphone` (sounddevice, ``lbedge[audio]``). ROS 2: :class:`RosbagSource` replays one topic
of a rosbag2 recording (MCAP or SQLite3, with rosbags: ``lbedge[ros]``, no ROS installation), :class:`TopicSource`
is a live topic fed by a node's subscription; both decode messages with :mod:`lbedge.sensors.ros_messages`.
Optional packages are imported when a source opens, never by ``import lbedge.sensors``. Sources from command-line
specs: :mod:`lbedge.sensors.spec`.
"""

from .audio import AudioFileSource
from .base import BaseSource
from .microphone import InputDevice, Microphone, list_input_devices
from .realsense import RealSense, RealSenseRecording, write_recording
from .rgb import ImageFolderSource, OpenCVCamera, VideoFileSource
from .ros_messages import AudioFormat, DecodeOptions
from .ros_topic import TopicSource
from .rosbag import RosbagSource
from .sequences import DepthSequenceSource, ThermalSequenceSource
from .thermal import PROFILES, ThermalProfile, agc, thermal_frame
from .thermal_camera import ThermalCamera

__all__ = [
    "AudioFileSource",
    "AudioFormat",
    "DecodeOptions",
    "BaseSource",
    "DepthSequenceSource",
    "ImageFolderSource",
    "InputDevice",
    "Microphone",
    "OpenCVCamera",
    "PROFILES",
    "RealSense",
    "RealSenseRecording",
    "RosbagSource",
    "TopicSource",
    "list_input_devices",
    "write_recording",
    "ThermalCamera",
    "ThermalProfile",
    "ThermalSequenceSource",
    "VideoFileSource",
    "agc",
    "thermal_frame",
]
