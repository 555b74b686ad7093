"""What this machine offers lbedge (``lbedge info``): versions, inference runtimes and their providers, CUDA,
TensorRT and the Jetson release, what the OpenCV build can do (GStreamer for CSI cameras, a GUI for windows),
and the sensors that are visible (V4L2 cameras, RealSense cameras, audio inputs).

Every probe is bounded and fails soft: a missing module is reported as absent, a probe that errors reports its
error; nothing here imports torch.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any, Callable

from .deps import available

OPTIONAL = ("torch", "onnxruntime", "tensorrt", "cuda", "soundfile", "sounddevice", "pyrealsense2", "huggingface_hub")

#: L4T release -> JetPack (the Jetson software releases lbedge names in its support matrix)
JETPACK = {"35": "5.1", "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1 / 6.2", "38": "7.0"}


def _safe(probe: Callable[[], Any]) -> Any:
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - a report never fails because one probe did
        return {"error": f"{type(exc).__name__}: {exc}"}


def versions() -> dict[str, Any]:
    import cv2
    import numpy as np
    import tokenizers

    from . import __version__

    return {
        "lbedge": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "tokenizers": tokenizers.__version__,
    }


def opencv_features() -> dict[str, Any]:
    """GStreamer (Jetson CSI cameras, RTSP pipelines), the GUI backend (demo windows), FFMPEG and V4L2 support."""
    import cv2

    build = cv2.getBuildInformation()

    def field(name: str) -> str:
        m = re.search(rf"^\s*{name}:\s*(.+)$", build, re.MULTILINE)
        return m.group(1).strip() if m else "unknown"

    return {"gstreamer": field("GStreamer"), "gui": field("GUI"), "ffmpeg": field("FFMPEG"), "v4l2": field("v4l/v4l2")}


def onnxruntime_info() -> dict[str, Any]:
    if not available("onnxruntime"):
        return {"installed": False}
    import onnxruntime as ort

    return {"installed": True, "version": ort.__version__, "providers": ort.get_available_providers()}


def cuda_info() -> dict[str, Any]:
    """The driver's CUDA version and the GPUs, from cuda-python when installed, else from the driver's files."""
    out: dict[str, Any] = {}
    proc = Path("/proc/driver/nvidia/version")
    if proc.is_file():
        out["driver"] = proc.read_text(errors="replace").splitlines()[0].strip()
    if available("cuda"):
        from .backends.tensorrt_backend import _cudart

        cudart = _cudart()
        err, version = cudart.cudaDriverGetVersion()
        if int(err) == 0:
            out["driver_cuda"] = f"{version // 1000}.{(version % 1000) // 10}"
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0:
            names = []
            for i in range(count):
                err, props = cudart.cudaGetDeviceProperties(i)
                if int(err) == 0:
                    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
                    names.append(f"{name.strip(chr(0))} (sm_{props.major}{props.minor})")
            out["gpus"] = names
    return out or {"present": False}


def tensorrt_info() -> dict[str, Any]:
    if not available("tensorrt"):
        return {"installed": False}
    import tensorrt as trt

    return {"installed": True, "version": trt.__version__}


def jetson_info() -> dict[str, Any]:
    """L4T release (``/etc/nv_tegra_release``), the JetPack it belongs to, and the module's model name."""
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return {"jetson": False}
    text = release.read_text(errors="replace")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    l4t = f"{m.group(1)}.{m.group(2)}" if m else text.strip().splitlines()[0]
    jetpack = next(
        (jp for key, jp in sorted(JETPACK.items(), key=lambda kv: -len(kv[0])) if l4t.startswith(key)), "unknown"
    )
    model = Path("/proc/device-tree/model")
    return {
        "jetson": True,
        "l4t": l4t,
        "jetpack": jetpack,
        "model": model.read_bytes().rstrip(b"\x00").decode(errors="replace") if model.is_file() else "unknown",
    }


def v4l2_cameras() -> list[dict[str, str]]:
    """``/dev/videoN`` devices and their names (thermal and RGB UVC cameras, Jetson CSI through V4L2)."""
    out = []
    for dev in sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
        name_file = Path("/sys/class/video4linux") / dev.name / "name"
        name = name_file.read_text(errors="replace").strip() if name_file.is_file() else ""
        out.append({"device": str(dev), "name": name})
    return out


def realsense_cameras() -> Any:
    if not available("pyrealsense2"):
        return {"installed": False}
    import pyrealsense2 as rs

    return [
        {"name": d.get_info(rs.camera_info.name), "serial": d.get_info(rs.camera_info.serial_number)}
        for d in rs.context().query_devices()
    ]


def audio_inputs() -> Any:
    if not available("sounddevice"):
        return {"installed": False}
    import sounddevice as sd

    return [
        {
            "index": int(d["index"]),
            "name": str(d["name"]),
            "channels": int(d["max_input_channels"]),
            "default_rate": float(d["default_samplerate"]),
        }
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]


def cpu_info() -> dict[str, Any]:
    """The CPU and what its instruction set means for precisions: INT8 weight width (ONNX Runtime) and BF16."""
    from .cpu import bf16_support, cpu_model, int8_weight_bits

    bits, bf16 = int8_weight_bits(), bf16_support()
    return {
        "model": cpu_model(),
        "int8_weight_bits": bits.bits,
        "int8": bits.reason,
        "bf16_native": bf16.native,
        "bf16": bf16.reason,
    }


def report(*, devices: bool = True) -> dict[str, Any]:
    """Everything above, as one JSON-ready dictionary (``devices=False`` skips the sensor scans)."""
    out: dict[str, Any] = {
        **_safe(versions),
        "optional": {m: available(m) for m in OPTIONAL},
        "onnxruntime": _safe(onnxruntime_info),
        "cuda": _safe(cuda_info),
        "tensorrt": _safe(tensorrt_info),
        "jetson": _safe(jetson_info),
        "opencv_features": _safe(opencv_features),
        "cpu_count": os.cpu_count(),
        "cpu": _safe(cpu_info),
    }
    if devices:
        out["cameras_v4l2"] = _safe(v4l2_cameras)
        out["cameras_realsense"] = _safe(realsense_cameras)
        out["audio_inputs"] = _safe(audio_inputs)
    return out
