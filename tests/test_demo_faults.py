"""`lbedge demo` under faults a robot meets: signals, empty recordings, bad options, unwritable outputs. Every
case ends with a message and an exit status a script can trust (0 done, 1 failed, 2 usage, 130/143 signals)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import wave

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import OFFICIAL
from lbedge.cli import main
from lbedge.video_output import pyav
from test_pipeline import colour_frames

pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(120)
CKPT = str(OFFICIAL / "image")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def write_wav(path, samples, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.asarray(samples) * 32767).astype("<i2").tobytes())
    return path


def test_sigterm_finishes_the_video_and_exits_143(tmp_path):
    """SIGTERM left a 44-byte unplayable MP4 and the run exited 0."""
    frames = colour_frames(tmp_path / "f", ["red", "green", "blue"])
    video, jl = tmp_path / "out.mp4", tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lbedge.cli",
            "demo",
            "--checkpoint",
            CKPT,
            "--rgb",
            str(frames),
            "--loop",
            "--realtime",
            "--headless",
            "-l",
            "red,green,blue",
            "--jsonl",
            str(jl),
            "-o",
            str(video),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not jl.exists() or len(jl.read_text().splitlines()) < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in out and "Traceback" not in err
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    assert ok and first.shape[0] >= 48 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 5  # a playable video
    if pyav() is not None:  # the H.264 encoder was flushed and the MP4 index written on SIGTERM
        with pyav().open(str(video)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.video[0].frames == int(cap.get(cv2.CAP_PROP_FRAME_COUNT))


def test_empty_wav_is_a_failure_with_a_reason(tmp_path, make_checkpoint):
    """An empty WAV exited 0 with 0 results and no word."""
    wav = write_wav(tmp_path / "empty.wav", np.zeros(0))
    r = run(
        "demo",
        "--checkpoint",
        make_checkpoint("audio"),
        "--audio",
        wav,
        "-l",
        "dog,rain",
        "--headless",
        "--jsonl",
        tmp_path / "r.jsonl",
    )
    assert r.exit_code == 1, r.output
    assert "ended without delivering a frame" in r.output and "no results" in r.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["--agc", "foo"], "'foo' is not one of"),
        (["--hop-s", "0.00001"], "--hop-s"),
        (["--thermal-profile", "flir"], "'flir' is not one of"),
        (["--depth-unit", "inch"], "'inch' is not one of"),
        (["--max-results", "0"], "--max-results"),
    ],
)
def test_configuration_errors_are_usage_errors_at_once(tmp_path, args, match):
    """`--agc foo` was retried with backoff for ever."""
    frames = colour_frames(tmp_path / "f", ["red"])
    r = run("demo", "--checkpoint", CKPT, "--thermal", frames, "-l", "a,b", "--headless", *args)
    assert r.exit_code == 2 and match in r.output


def test_sources_reject_their_configuration_errors_when_built(tmp_path):
    from lbedge.errors import LBEdgeError
    from lbedge.sensors import AudioFileSource, ThermalSequenceSource

    with pytest.raises(LBEdgeError, match="unknown AGC method 'foo'"):
        ThermalSequenceSource(tmp_path, agc_method="foo")
    with pytest.raises(LBEdgeError, match="hop 1e-05 s is shorter"):
        AudioFileSource(tmp_path / "a.wav", hop=0.00001)
    with pytest.raises(LBEdgeError, match="window"):
        AudioFileSource(tmp_path / "a.wav", window=float("nan"))


def test_each_event_is_printed_once(tmp_path):
    """'source ended' was printed three times (log line, event line, summary)."""
    frames = colour_frames(tmp_path / "f", ["red", "green"])
    r = run("demo", "--checkpoint", CKPT, "--rgb", frames, "-l", "red,green", "--headless", "-o", tmp_path / "v.mp4")
    assert r.exit_code == 0, r.output
    assert r.output.count("source rgb ended") == 1
