"""Replay sources and thermal conversions, with real files written by the tests (no hardware)."""

from __future__ import annotations

import time
import wave

import cv2
import numpy as np
import pytest

from lbedge import SensorError
from lbedge.frames import Frame, Source
from lbedge.sensors import (
    PROFILES,
    AudioFileSource,
    DepthSequenceSource,
    ImageFolderSource,
    OpenCVCamera,
    ThermalSequenceSource,
    VideoFileSource,
    agc,
)


def _frame(i: int, h: int = 60, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + 10 * i) % 256, (y * 4) % 256, np.full_like(x, 20 * i % 256)], 2).astype(np.uint8)


def test_image_folder_replay(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f_{i:03d}.png"), _frame(i)[..., ::-1])
    (tmp_path / "f_002b.png").write_bytes(b"broken")  # skipped, not delivered, counted as lost
    src = ImageFolderSource(tmp_path)
    assert isinstance(src, Source) and src.frames_lost == 0
    frames = list(src)
    assert [f.sequence for f in frames] == [0, 1, 2, 3] and src.frames_lost == 1
    src.close()
    assert len(list(src)) == 4 and src.frames_lost == 1  # replayed: the same damaged file, counted once
    assert all(isinstance(f, Frame) and f.modality == "image" and f.units == "rgb8" for f in frames)
    np.testing.assert_array_equal(frames[2].data, _frame(2))  # RGB order, exact (PNG)
    assert all(a.timestamp <= b.timestamp for a, b in zip(frames, frames[1:]))
    with pytest.raises(SensorError, match="not found"):
        ImageFolderSource(tmp_path / "missing").open()


def test_video_replay_fast_and_paced(tmp_path):
    path = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (80, 60))
    for i in range(10):
        wr.write(_frame(i)[..., ::-1])
    wr.release()
    fast = list(VideoFileSource(path))
    assert len(fast) == 10 and fast[0].data.shape == (60, 80, 3)
    assert np.abs(fast[3].data.astype(int) - _frame(3)).mean() < 8  # lossy codec, same content
    t0 = time.monotonic()
    paced = list(VideoFileSource(path, realtime=True))
    assert len(paced) == 10 and time.monotonic() - t0 >= 9 / 20 * 0.9  # paced at the file's 20 fps
    with VideoFileSource(path, loop=True) as src:
        assert len([src.read() for _ in range(25)]) == 25  # loops past the end
        assert src.frames_lost == 0


def _truncate(path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_videos_count_the_frames_they_announce_but_lack(tmp_path):
    """A video cut short (a full disk, a copy interrupted) ends early: the frames its header announces but the
    file no longer holds are counted as lost, never passed off as the end of the recording."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (80, 60))
    for _ in range(20):
        wr.write(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))  # noise: every frame takes room
    wr.release()
    src = VideoFileSource(path)
    assert len(list(src)) == 20 and src.frames_lost == 0
    _truncate(path)
    src = VideoFileSource(path)
    frames = list(src)
    assert 0 < len(frames) < 20 and len(frames) + src.frames_lost == 20
    assert src.read() is None and src.frames_lost == 20 - len(frames)  # the end is counted once


def test_camera_that_cannot_open_is_a_sensor_error():
    with pytest.raises(SensorError, match="cannot open"):
        OpenCVCamera("/dev/video99").open()
    cam = OpenCVCamera(0)
    with pytest.raises(SensorError, match="before open"):
        cam.read()


def test_depth_sequence_units(tmp_path):
    cm = np.full((48, 64), 250, np.uint16)
    cm[:4] = 0  # invalid pixels stay 0
    cv2.imwrite(str(tmp_path / "d_000.png"), cm)
    cv2.imwrite(str(tmp_path / "d_001.png"), np.zeros((48, 64), np.uint8))  # 8-bit: skipped, counted as lost
    src = DepthSequenceSource(tmp_path, unit="cm")
    frames = list(src)
    assert len(frames) == 1 and frames[0].units == "mm" and frames[0].data.dtype == np.uint16
    assert src.frames_lost == 1
    assert frames[0].data[10, 10] == 2500 and frames[0].data[0, 0] == 0
    with pytest.raises(SensorError, match="unknown depth unit"):
        DepthSequenceSource(tmp_path, unit="furlong")


def _celsius_to_centikelvin(c: np.ndarray) -> np.ndarray:
    return np.rint((c + 273.15) * 100).astype(np.uint16)


def test_thermal_png_sequence_known_temperatures(tmp_path):
    temps = np.full((120, 160), 20.0)
    temps[40:80, 60:100] = 36.5  # a person-warm patch
    cv2.imwrite(str(tmp_path / "t_000.png"), _celsius_to_centikelvin(temps))
    (frame,) = list(ThermalSequenceSource(tmp_path, profile="lepton"))
    assert frame.device_timestamp == 0.0
    np.testing.assert_allclose(frame.meta["celsius"], temps, atol=0.01)
    assert frame.data.shape == (120, 160, 3) and frame.data.dtype == np.uint8
    assert frame.data[60, 80, 0] > frame.data[10, 10, 0]  # warm is bright


def test_thermal_ffv1_16bit_video(tmp_path):
    path = tmp_path / "t.mkv"
    wr = cv2.VideoWriter(
        str(path),
        cv2.CAP_FFMPEG,
        cv2.VideoWriter_fourcc(*"FFV1"),
        9,
        (160, 120),
        [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0],
    )
    if not wr.isOpened():
        pytest.skip("this OpenCV build cannot write 16-bit FFV1")
    frames_c = [np.full((120, 160), 15.0 + i) for i in range(3)]
    for c in frames_c:
        wr.write(_celsius_to_centikelvin(c))
    wr.release()
    src = ThermalSequenceSource(path, profile="lepton", fps=9)
    got = list(src)
    assert len(got) == 3 and src.frames_lost == 0
    np.testing.assert_allclose([f.device_timestamp for f in got], [0, 1 / 9, 2 / 9], atol=1e-6)  # recording time
    for f, c in zip(got, frames_c):
        np.testing.assert_allclose(f.meta["celsius"], c, atol=0.01)
    noise = tmp_path / "noise.mkv"  # cut short: what the header announces but the file lacks is lost
    wr = cv2.VideoWriter(
        str(noise),
        cv2.CAP_FFMPEG,
        cv2.VideoWriter_fourcc(*"FFV1"),
        9,
        (160, 120),
        [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0],
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        wr.write(rng.integers(27000, 31000, (120, 160), dtype=np.uint16))
    wr.release()
    _truncate(noise)
    src = ThermalSequenceSource(noise, profile="lepton", fps=9)
    got = list(src)
    assert 0 < len(got) < 20 and len(got) + src.frames_lost == 20


def test_infiray_profile_reads_the_bottom_half():
    p = PROFILES["infiray-p2"]
    temps = np.linspace(10, 40, 256 * 192).reshape(192, 256)
    raw16 = np.rint((temps + 273.15) * 64).astype("<u2")
    top = np.zeros((192, 256), "<u2")
    frame = np.concatenate([top, raw16]).view(np.uint8).reshape(384, 256, 2)  # YUYV as V4L2 delivers it
    np.testing.assert_allclose(p.to_celsius(frame), temps, atol=1 / 64)
    assert PROFILES["boson"].to_celsius(np.zeros((512, 640), np.uint16)) is None


@pytest.mark.parametrize("method", ["minmax", "percentile", "histeq"])
def test_agc_methods(method):
    t = np.linspace(0, 50, 100 * 100).reshape(100, 100).astype(np.float32)
    t[0, 0] = np.nan
    img = agc(t, method)
    assert img.shape == (100, 100, 3) and img.dtype == np.uint8 and img[0, 0, 0] == 0
    assert img[99, 99, 0] > img[50, 0, 0] > img[1, 0, 0]


def test_audio_file_windows(tmp_path):
    sr = 16000
    pcm = (0.2 * np.sin(2 * np.pi * 440 * np.arange(5 * sr) / sr) * 32767).astype(np.int16)
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr), w.writeframes(pcm.tobytes())
    frames = list(AudioFileSource(path, window=2.0, hop=1.0))
    assert len(frames) == 4 and frames[0].data.shape == (1, 2 * sr) and frames[0].meta["sample_rate"] == sr
    assert [f.device_timestamp for f in frames] == [0.0, 1.0, 2.0, 3.0]
    from lbedge import PreprocessConfig, Preprocessor

    x = Preprocessor(PreprocessConfig("audio"))((frames[0].data, frames[0].meta["sample_rate"]))
    assert x.shape == (1, 3, 112, 1036)
    with pytest.raises(SensorError, match="not found"):
        AudioFileSource(tmp_path / "none.wav").open()


class _FakeV4L2:
    """Stands in for cv2.VideoCapture on a UVC thermal camera: records the settings, returns given frames."""

    def __init__(self, frames):
        self.frames, self.props = list(frames), {}

    def __call__(self, target, api):
        self.target, self.api = target, api
        return self

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return 0.0

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
        self.released = True


def _lepton_raw(celsius: np.ndarray) -> np.ndarray:
    return np.rint((celsius + 273.15) * 100).astype("<u2")


@pytest.mark.parametrize("layout", ["hw", "flat", "bytes"])
def test_thermal_camera_lepton_layouts(monkeypatch, layout):
    import cv2

    from lbedge.sensors import ThermalCamera

    temps = np.linspace(15, 45, 120 * 160, dtype=np.float32).reshape(120, 160)
    raw = _lepton_raw(temps)
    frame = {"hw": raw, "flat": raw.reshape(1, -1), "bytes": raw.view(np.uint8).reshape(120, 160, 2)}[layout]
    fake = _FakeV4L2([frame])
    monkeypatch.setattr(cv2, "VideoCapture", fake)
    with ThermalCamera(2, profile="lepton", agc_method="minmax") as cam:
        got = cam.read()
        assert fake.api == cv2.CAP_V4L2 and fake.props[cv2.CAP_PROP_CONVERT_RGB] == 0
        assert fake.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"Y16 ")
        assert (fake.props[cv2.CAP_PROP_FRAME_WIDTH], fake.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (160, 120)
        np.testing.assert_allclose(got.meta["celsius"], temps, atol=0.006)
        assert got.data.shape == (120, 160, 3) and got.data.dtype == np.uint8
        assert got.data[-1, -1, 0] == 255 and got.data[0, 0, 0] == 0  # hottest bright, coldest dark
        with pytest.raises(SensorError, match="stopped delivering"):  # unplugged: the pipeline reopens it
            cam.read()
    assert fake.released


def test_thermal_camera_infiray_and_wrong_mode(monkeypatch):
    import cv2

    from lbedge.sensors import ThermalCamera

    temps = np.full((192, 256), 36.6)
    both = np.concatenate([np.zeros((192, 256), "<u2"), np.rint((temps + 273.15) * 64).astype("<u2")])
    fake = _FakeV4L2([both.view(np.uint8).reshape(384, 256, 2), np.zeros((480, 640, 3), np.uint8)])
    monkeypatch.setattr(cv2, "VideoCapture", fake)
    with ThermalCamera("/dev/video3", profile="infiray-p2") as cam:
        assert (fake.props[cv2.CAP_PROP_FRAME_WIDTH], fake.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (256, 384)
        np.testing.assert_allclose(cam.read().meta["celsius"], temps, atol=1 / 64)
        with pytest.raises(SensorError, match="expected"):  # the camera fell back to an RGB mode
            cam.read()


def test_thermal_camera_errors():
    from lbedge.sensors import ThermalCamera

    with pytest.raises(SensorError, match="unknown thermal profile"):
        ThermalCamera(0, profile="seek")
    with pytest.raises(SensorError, match="V4L2"):
        ThermalCamera("rtsp://x/y").open()
    with pytest.raises(SensorError, match="cannot open"):
        ThermalCamera("/dev/video97").open()


def test_sources_from_specs(tmp_path):
    from lbedge.sensors import OpenCVCamera, ThermalCamera
    from lbedge.sensors.spec import SourceOptions, source_from_spec

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint16))
    opts = SourceOptions(thermal_profile="boson", depth_unit="m")
    assert isinstance(source_from_spec("rgb", str(tmp_path)), ImageFolderSource)
    assert isinstance(source_from_spec("rgb", "0"), OpenCVCamera)
    assert isinstance(source_from_spec("rgb", "nvarguscamerasrc ! appsink"), OpenCVCamera)
    d = source_from_spec("depth", str(tmp_path), opts)
    assert isinstance(d, DepthSequenceSource) and d.scale == 1000.0
    t = source_from_spec("thermal", "/dev/video2", opts)
    assert isinstance(t, ThermalCamera) and t.profile.name.startswith("FLIR Boson")
    assert isinstance(source_from_spec("thermal", str(tmp_path)), ThermalSequenceSource)
    for kind, spec in (("depth", "x.png"), ("thermal", "nowhere"), ("audio", "none.wav"), ("lidar", "x")):
        with pytest.raises(SensorError):
            source_from_spec(kind, spec)


class _Device:
    """A recording whose frames carry two streams; fails once at frame 2, and starts over when reopened."""

    name, modality, live = "dev", "image", False

    def __init__(self, n=5):
        self.n, self.i, self.opens, self.failed = n, 0, 0, False

    def open(self):
        self.opens += 1
        self.i = 0

    def read(self, timeout=None):
        if self.i == 2 and not self.failed:
            self.failed = True
            raise SensorError("unplugged")
        if self.i >= self.n:
            return None
        self.i += 1
        from lbedge.frames import Frame

        return Frame(
            np.full((4, 4, 3), self.i, np.uint8),
            "image",
            float(self.i),
            self.i - 1,
            meta={"other": np.full((4, 4), -self.i)},
        )

    def close(self):
        pass


def test_split_source_views_one_device():
    from lbedge.frames import Frame
    from lbedge.sensors.split import SplitSource

    dev = _Device()
    split = SplitSource(
        dev,
        {
            "a": ("image", lambda f: f),
            "b": ("depth", lambda f: Frame(f.meta["other"], "depth", f.timestamp, f.sequence)),
        },
    )
    a, b = split.sources()["a"], split.sources()["b"]
    assert (a.name, b.modality, a.live) == ("dev:a", "depth", False)
    with a, b:
        assert dev.opens == 1  # one device connection for both views
        got_a = [a.read(), a.read()]
        with pytest.raises(SensorError):
            a.read()  # the device fails: the error reaches a view...
        rest_b = [b.read() for _ in range(2)]  # ...the parts read before it are not lost
        assert [f.sequence for f in got_a + rest_b] == [0, 1, 0, 1]
        more = [b.read() for _ in range(3)]  # ...the next read reopens the device, which
        assert dev.opens == 2 and [f.sequence for f in more] == [2, 3, 4]  # resumes after what it delivered
        assert b.read() is None and [f.sequence for f in (a.read(), a.read(), a.read())] == [2, 3, 4]
        assert a.read() is None


class _Recording:
    """A recording of ``n`` numbered frames that says it lost ``lost`` more."""

    name, modality, live = "rec", "image", False

    def __init__(self, n: int, lost: int = 0):
        self.n, self.i, self.frames_lost = n, 0, lost

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(np.zeros((2, 2, 3), np.uint8), "image", float(self.i), self.i - 1)

    def close(self):
        pass


def _two_views(device, **kw):
    from lbedge.sensors.split import SplitSource

    split = SplitSource(device, {"a": ("image", lambda f: f), "b": ("image", lambda f: f)}, **kw)
    return split, split.sources()["a"], split.sources()["b"]


@pytest.mark.timeout(60)
def test_split_recording_waits_for_its_slowest_view():
    """A view far behind the other holds the device back instead of losing frames (the RGB view of an RGB-D
    recording behind a faster depth model)."""
    import threading

    split, a, b = _two_views(_Recording(40), backlog=3)
    got_b: list[int] = []

    def read_slowly() -> None:
        while (frame := b.read()) is not None:
            got_b.append(frame.sequence)
            time.sleep(0.002)

    with a, b:
        reader = threading.Thread(target=read_slowly)
        reader.start()
        got_a = [f.sequence for f in iter(a.read, None)]
        reader.join(30)
    assert got_a == got_b == list(range(40))
    assert a.frames_lost == b.frames_lost == 0 and split.lost == {"a": 0, "b": 0}


@pytest.mark.timeout(60)
def test_split_recording_drops_only_what_a_silent_view_never_read():
    """A view that is open but reads nothing stops holding the others back after stall_s; what it missed is
    counted in its frames_lost (with the device's own losses), never dropped silently."""
    split, a, b = _two_views(_Recording(20, lost=2), backlog=4, stall_s=0.2)
    with a, b:
        got_a = list(iter(a.read, None))
        got_b = list(iter(b.read, None))
    assert [f.sequence for f in got_a] == list(range(20)) and a.frames_lost == 2
    assert [f.sequence for f in got_b] == list(range(16, 20)) and split.lost["b"] == 16 and b.frames_lost == 18
