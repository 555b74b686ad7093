"""The examples/ scripts run their replay commands (no hardware) end to end with tiny checkpoints."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import OFFICIAL

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytest.importorskip("torch")  # the examples load the tiny checkpoints on the PyTorch backend


def run(script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=180)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_every_example_is_documented():
    readme = (EXAMPLES / "README.md").read_text()
    for script in EXAMPLES.glob("*.py"):
        assert script.name in readme, f"{script.name} missing from examples/README.md"


def test_webcam_example_replays_an_image_folder(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    out = run(
        "webcam_zeroshot.py",
        "--model",
        str(OFFICIAL / "image"),
        "--camera",
        str(tmp_path),
        "--headless",
        "--labels",
        "a cat,a dog",
        "--output",
        str(tmp_path / "a.mp4"),
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("camera #")]
    assert len(lines) == 4 and all(("a cat" in line) or ("a dog" in line) for line in lines)
    assert "4 results" in out and "0 frames dropped, 0 lost" in out and (tmp_path / "a.mp4").stat().st_size > 0


def test_thermal_example_reports_temperatures(tmp_path, make_checkpoint):
    for i in range(3):
        c = np.linspace(20, 30 + i, 120 * 160).reshape(120, 160)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.rint((c + 273.15) * 100).astype(np.uint16))
    out = run(
        "thermal_camera.py", "--model", str(make_checkpoint("thermal")), "--camera", str(tmp_path), "--headless"
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("thermal #")]
    assert len(lines) == 3 and lines[2].endswith("20.0..32.0 degC")


def test_microphone_example_replays_a_file(tmp_path, make_checkpoint):
    sr = 16000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr) * 32767).astype(np.int16)
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr), w.writeframes(pcm.tobytes())
    out = run(
        "microphone_events.py",
        "--model",
        str(make_checkpoint("audio")),
        "--file",
        str(tmp_path / "a.wav"),
        "--window",
        "1",
        "--hop",
        "1",
    ).stdout
    assert len([line for line in out.splitlines() if line.startswith("audio #")]) == 3 and "3 windows" in out
    assert run("microphone_events.py", "--file", "x.wav", ok=False).returncode == 2  # --model missing


def test_ros2_node_without_ros_says_what_to_source(tmp_path):
    try:
        import rclpy  # noqa: F401

        pytest.skip("rclpy is installed: this test covers machines without ROS 2")
    except ImportError:
        pass
    proc = run("ros2_labels_node.py", ok=False)
    assert proc.returncode == 1 and "source /opt/ros" in proc.stderr


def test_ros2_example_is_the_node():
    """The example runs lbedge's ROS 2 node (tested in tests/test_ros2_node.py, recordings in tests/test_rosbag.py)."""
    import runpy

    import lbedge.ros2.node

    namespace = runpy.run_path(str(EXAMPLES / "ros2_labels_node.py"), run_name="not_main")
    assert namespace["main"] is lbedge.ros2.node.main


def test_realsense_example_replays_an_rgbd_recording(tmp_path, make_checkpoint):
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (lbedge[realsense])")
    from lbedge.sensors.realsense import write_recording

    depth = [np.full((48, 64), 800 + 100 * i, np.uint16) for i in range(4)]
    colour = [np.full((48, 64, 3), 50 * i, np.uint8) for i in range(4)]
    rec = write_recording(tmp_path / "walk.db3", depth, color=colour, fps=30)
    out = run(
        "realsense_rgbd.py",
        "--depth-model",
        str(make_checkpoint("depth")),
        "--image-model",
        str(OFFICIAL / "image"),
        "--recording",
        str(rec),
        "--headless",
        "--labels",
        "a wall,a chair",
    ).stdout
    depth_lines = [line for line in out.splitlines() if line.startswith("depth #")]
    rgb_lines = [line for line in out.splitlines() if line.startswith("rgb #")]
    assert len(depth_lines) == len(rgb_lines) == 4  # every recorded frameset, depth and colour
    assert any("fused" in line and "+" in line for line in out.splitlines())
    assert "  depth: 4 processed, 0 dropped, 0 skipped, 0 lost" in out.splitlines()
