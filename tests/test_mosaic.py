"""The demo's mosaic: sensor pictures (depth and thermal colour maps, the audio spectrogram), tiles and banner, and
the video it is written to (a browser codec at the video source's rate, checked when opened and closed)."""

from __future__ import annotations

import wave

import cv2
import numpy as np
import pytest

from lbedge.demo import run_demo, video_source
from lbedge.errors import LBEdgeError, MissingDependency
from lbedge.frames import Frame
from lbedge.mosaic import MIN_TILE_WIDTH, Mosaic
from lbedge.pictures import (
    depth_picture,
    frame_picture,
    log_mel,
    mel_band_of,
    spectrogram_picture,
    thermal_picture,
)
from lbedge.pipeline import Pipeline, Result, SourceResult
from lbedge.sensors import AudioFileSource, DepthSequenceSource, ImageFolderSource, ThermalSequenceSource
from lbedge.video_output import VideoOutput, pyav
from test_pipeline import LABELS, colour_frames, fake_encoder

pytestmark = pytest.mark.timeout(120)
HAVE_AV = pyav() is not None


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def hue(rgb: np.ndarray) -> int:
    """The hue of an RGB colour (OpenCV's 0..180: red 0, yellow 30, green 60, blue 120)."""
    return int(cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0])


def warmth(rgb: np.ndarray) -> float:
    """Red minus blue of a colour: positive for warm colours, negative for cold."""
    return float(rgb[0]) - float(rgb[2])


# --- pictures ---------------------------------------------------------------------------------------------------


def test_depth_colour_map_near_warm_far_cold_invalid_black():
    depth = np.zeros((40, 80), np.uint16)  # mm; 0 is "no data"
    depth[:, 20:40], depth[:, 40:60], depth[:, 60:] = 500, 1500, 4000
    pic = depth_picture(depth)
    assert pic.shape == (40, 80, 3) and pic.dtype == np.uint8
    near, mid, far = pic[5, 30], pic[5, 50], pic[5, 70]
    assert (pic[:, :20] == 0).all()  # invalid black
    assert hue(near) < hue(mid) < hue(far) and warmth(near) > 0 > warmth(far)  # red, then yellow-green, then blue
    assert near.max() > 60 and far.max() > 60  # valid pixels are never black
    metres = np.where(depth > 0, depth / 1000.0, np.nan).astype(np.float32)  # float metres, NaN invalid
    pic_m = depth_picture(metres)
    assert (pic_m[:, :20] == 0).all() and warmth(pic_m[5, 30]) > 0 > warmth(pic_m[5, 70])
    fixed = depth_picture(depth, near=500, far=1000)  # a given range: beyond it is as cold as far
    assert (fixed[5, 50] == fixed[5, 70]).all() and warmth(fixed[5, 30]) > 0
    assert (depth_picture(np.zeros((4, 4), np.uint16)) == 0).all()  # nothing valid: all black


def test_thermal_colour_map_hot_bright_cold_dark():
    agc = np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[None], 8, axis=0)  # the AGC image: hot is bright
    pic = thermal_picture(np.repeat(agc[..., None], 3, axis=2))
    cold, warm, hot = pic[0, 0].astype(int), pic[0, 32].astype(int), pic[0, -1].astype(int)
    assert cold.sum() < 30 and hot.sum() > 500  # inferno: black-purple to yellow-white
    assert cold.sum() < warm.sum() < hot.sum() and hot[0] > hot[2]
    assert (thermal_picture(agc) == pic).all()  # grey or three equal channels alike
    celsius = np.linspace(15, 40, 64, dtype=np.float32)[None].repeat(8, 0)  # a temperature map is stretched
    assert thermal_picture(celsius)[0, -1].sum() > thermal_picture(celsius)[0, 0].sum() + 400


@pytest.mark.parametrize("hz", [300.0, 1000.0, 4000.0])
def test_spectrogram_of_a_tone_has_its_energy_in_its_band(hz):
    rate, bands = 16000, 64
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    db = log_mel(tone[None], rate, bands=bands)
    assert db.shape[0] == bands and db.shape[1] >= 90 and db.max() == 0.0
    peak = int(np.argmax(db.mean(1)))
    assert abs(peak - mel_band_of(hz, rate, bands)) <= 1.0, (peak, mel_band_of(hz, rate, bands))
    far_bands = np.abs(np.arange(bands) - peak) > 6
    assert db.mean(1)[far_bands].max() < -40  # a pure tone: the rest is far below
    pic = spectrogram_picture(tone, rate, bands=bands)
    row = int(np.argmax(pic.astype(int).sum(2).mean(1)))
    assert row == bands - 1 - peak  # low frequencies at the bottom


def test_spectrogram_picture_higher_tone_higher_and_silence_dark():
    rate = 16000
    t = np.arange(rate // 2) / rate

    def brightest_row(hz):
        pic = spectrogram_picture(np.sin(2 * np.pi * hz * t).astype(np.float32), rate)
        return int(np.argmax(pic.astype(int).sum(2).mean(1)))

    assert brightest_row(4000) < brightest_row(500)
    silent = frame_picture(Frame(np.zeros((1, 8000), np.float32), "audio", 0.0, 0, meta={"sample_rate": 16000}))
    assert silent.max() < 20
    short = frame_picture(Frame(np.ones((2, 10), np.float32), "audio", 0.0, 0))  # tiny, stereo, no rate: no error
    assert short.ndim == 3 and short.dtype == np.uint8


# --- the mosaic -------------------------------------------------------------------------------------------------


def source_result(name: str, frame: Frame | None, label: str = "red") -> Result:
    scores = {label: 0.7, **{x: 0.15 for x in LABELS if x != label}}
    r = SourceResult(name, frame.modality if frame else "image", 0, 0.0, label, scores, label, 5.0, 1.0, frame=frame)
    return Result(0.0, r, {name: r}, fused_label=label, fused_scores={label: 0.7}, fused_sources=[name, "other"])


def test_mosaic_layout_tiles_text_and_banner():
    sources = {"rgb": "image", "depth": "depth", "thermal": "thermal", "audio": "audio"}
    m = Mosaic(sources, tile_width=100)  # too narrow: clamped to be readable
    assert m.tile_w == MIN_TILE_WIDTH and (m.cols, m.rows) == (2, 2)
    w, h = m.size
    assert w % 2 == 0 and h % 2 == 0 and w == 2 * MIN_TILE_WIDTH
    img = m.render()
    assert img.shape == (h, w, 3)
    blank = {n: img[y : y + bh, x : x + bw].copy() for n in sources for x, y, bw, bh in [m.picture_box(n)]}
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 255
    m.update(source_result("rgb", Frame(rgb, "image", 0.0, 0)))
    img = m.render()
    x, y, bw, bh = m.picture_box("rgb")
    tile = img[y : y + bh, x : x + bw]
    assert tile[bh // 2, bw // 2, 2] == 255 and tile[bh // 2, bw // 2, 0] == 0  # red, in BGR
    x, y, bw, bh = m.picture_box("depth")
    assert (img[y : y + bh, x : x + bw] == blank["depth"]).all()  # untouched: still waiting
    assert img[: m.banner_h].std() > 10  # the banner holds the fused label
    single = Mosaic({"cam": "image"}, tile_width=480)
    assert single.size[0] == 480 and single.scale == 1.0
    big = Mosaic({"cam": "image"}, tile_width=960)
    assert big.header_h == 2 * single.header_h  # text and rows scale with the tile


def test_a_frame_that_cannot_be_pictured_costs_only_its_picture():
    m = Mosaic({"cam": "image", "depth": "depth"})
    m.update(source_result("cam", Frame(np.zeros((2, 2, 2, 2), np.uint8), "image", 0.0, 0)))  # a 4-D "image"
    big = np.full((2000, 3000), 1500, np.int32)  # larger than the tile, a type OpenCV does not resize
    m.update(source_result("depth", Frame(big, "depth", 0.0, 0, units="mm")))
    img = m.render()
    x, y, w, h = m.picture_box("depth")
    assert img[y : y + h, x : x + w].max() > 0  # shown
    x, y, w, h = m.picture_box("cam")
    assert img[y + h // 2 - 20 : y + h // 2 + 10, x : x + w].max() > 60  # the problem is written in the tile


def test_mosaic_tiles_show_each_sensor():
    m = Mosaic({"depth": "depth", "thermal": "thermal", "audio": "audio", "cam": "image"})
    depth = np.full((48, 64), 3000, np.uint16)
    depth[:, :32] = 600
    m.update(source_result("depth", Frame(depth, "depth", 0.0, 0, units="mm")))
    hot = np.zeros((48, 64, 3), np.uint8)
    hot[:, 32:] = 255
    m.update(source_result("thermal", Frame(hot, "thermal", 0.0, 0)))
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)[None]
    m.update(source_result("audio", Frame(tone, "audio", 0.0, 0, meta={"sample_rate": 16000})))
    img = m.render()
    x, y, w, h = m.picture_box("depth")
    left, right = img[y + h // 3, x + w // 2 - 40], img[y + h // 3, x + w // 2 + 40]  # BGR
    assert int(left[2]) - int(left[0]) > 0 > int(right[2]) - int(right[0])  # near warm, far cold
    x, y, w, h = m.picture_box("thermal")
    assert img[y + h // 3, x + w // 2 + 40].sum() > img[y + h // 3, x + w // 2 - 40].sum() + 400  # hot bright
    x, y, w, h = m.picture_box("audio")
    rows = img[y : y + h, x : x + w].astype(int).sum(2).mean(1)
    assert 0.55 * h < int(np.argmax(rows)) < 0.9 * h  # 1 kHz: the lower part of a 0-8 kHz mel axis


# --- video ------------------------------------------------------------------------------------------------------


def write_tone_wav(path, seconds=1.0, hz=440.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(0).normal(0, 0.02, t.size)  # a real microphone's floor
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(((0.3 * np.sin(2 * np.pi * hz * t) + noise) * 32767).astype("<i2").tobytes())
    return path


def sensor_recordings(tmp_path):
    """Four replay sources: RGB at 8 FPS, depth at 4, thermal at 12 (the fastest), audio windows of 0.25 s."""
    depth_dir, thermal_dir = tmp_path / "depth", tmp_path / "thermal"
    depth_dir.mkdir()
    thermal_dir.mkdir()
    for i in range(4):
        d = np.full((48, 64), 2500, np.uint16)
        d[:, :32] = 700 + 100 * i
        d[:4] = 0
        cv2.imwrite(str(depth_dir / f"{i:03d}.png"), d)
    ramp = np.linspace(15.0, 40.0, 160)[None].repeat(120, 0)
    for i in range(24):
        cv2.imwrite(str(thermal_dir / f"{i:03d}.png"), np.rint((ramp + 273.15 + i * 0.1) * 100).astype(np.uint16))
    return {
        "rgb": ImageFolderSource(colour_frames(tmp_path / "rgb", ["red", "green"] * 4), fps=8, realtime=True),
        "depth": DepthSequenceSource(depth_dir, fps=4, realtime=True),
        "thermal": ThermalSequenceSource(thermal_dir, profile="lepton", fps=12, realtime=True),
        "audio": AudioFileSource(write_tone_wav(tmp_path / "a.wav"), window=0.25, hop=0.25, realtime=True),
    }


def non_empty(region: np.ndarray) -> bool:
    """A tile's picture area shows a picture (not the black 'waiting' area)."""
    return float((region.max(2) > 40).mean()) > 0.3


def test_demo_video_is_a_mosaic_at_the_video_sources_rate(tmp_path):
    """The demo video showed one 64 px RGB source at a fixed rate as mp4v: now every sensor, one frame per result
    of the fastest visual source, at its rate, in a codec browsers play."""
    sources = sensor_recordings(tmp_path)
    encoders = {m: fake_encoder(m) for m in ("image", "depth", "thermal", "audio")}
    assert video_source(sources) == "thermal"  # the fastest visual source
    video, said = tmp_path / "out" / "demo.mp4", []
    pipe = Pipeline(sources, encoders, LABELS)
    stats = run_demo(pipe, output=video, jsonl=None, say=said.append)
    thermal_results = stats["sources"]["thermal"]["processed"]
    assert thermal_results == 24 and stats["video_frames"] == 24 and stats["video_source"] == "thermal"
    assert stats["video_fps"] == 12

    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    assert len(frames) == thermal_results  # one mosaic frame per result of the video source
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)  # the source's rate
    m = Mosaic({n: s.modality for n, s in sources.items()}, bars=pipe.top_k)
    assert frames[-1].shape == (m.size[1], m.size[0], 3)
    for name in sources:
        x, y, w, h = m.picture_box(name)
        assert non_empty(frames[-1][y : y + h, x : x + w]), name  # every sensor is shown
    if HAVE_AV:
        import av

        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert stream.average_rate == 12 and stream.frames == 24
            assert "mp4" in container.format.name
        assert stats["video_codec"] == "h264" and not any("warning" in s for s in said)
    else:
        assert stats["video_codec"] == "mp4v" and any('pip install "lbedge[video]"' in s for s in said)


@pytest.mark.skipif(not HAVE_AV, reason="PyAV (lbedge[video]) is not installed")
def test_webm_is_vp9_and_the_container_reads_back(tmp_path):
    import av

    out = VideoOutput(tmp_path / "v.webm", (323, 241), 8.0, backend="pyav")
    assert out.size == (324, 242) and out.codec == "vp9" and out.browser_playable
    for i in range(5):
        out.write(np.full((241, 323, 3), 40 * i, np.uint8))  # odd sizes are resized to the even video size
    out.close()
    with av.open(str(tmp_path / "v.webm")) as container:
        stream = container.streams.video[0]
        assert "webm" in container.format.name and stream.codec_context.name == "vp9"
        assert sum(1 for _ in container.decode(stream)) == 5


def test_without_pyav_mp4v_with_a_warning_naming_the_extra(tmp_path, monkeypatch):
    import lbedge.video_output as vo

    monkeypatch.setattr(vo, "pyav", lambda: None)
    said = []
    out = VideoOutput(tmp_path / "v.mp4", (64, 48), 8.0, warn=said.append)
    assert out.codec == "mp4v" and not out.browser_playable
    assert len(said) == 1 and "browsers do not play" in said[0] and 'pip install "lbedge[video]"' in said[0]
    for _ in range(3):
        out.write(np.zeros((48, 64, 3), np.uint8))
    out.close()
    assert int(cv2.VideoCapture(str(tmp_path / "v.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    with pytest.raises(LBEdgeError, match="is closed"):
        out.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(MissingDependency, match=r"lbedge\[video\]"):
        VideoOutput(tmp_path / "w.mp4", (64, 48), 8.0, backend="pyav")
    assert not (tmp_path / "w.mp4").exists()  # a video that could not open leaves no empty file
    webm = VideoOutput(tmp_path / "v.webm", (64, 48), 8.0, warn=said.append)  # OpenCV's VP9, where it has it
    assert webm.codec == "vp9" and webm.browser_playable and len(said) == 1
    webm.close()


@pytest.mark.parametrize("backend", ["auto", "opencv"])
def test_video_output_errors_are_never_a_silent_success(tmp_path, backend):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LBEdgeError, match="cannot write the video"):  # when opened, not at the first frame
        VideoOutput(blocker / "v.mp4", (64, 48), 8.0, backend=backend)
    out = VideoOutput(tmp_path / "gone.mp4", (64, 48), 8.0, backend=backend)
    for i in range(40):
        out.write(np.full((48, 64, 3), i, np.uint8))
    (tmp_path / "gone.mp4").unlink()  # lost before it was finished
    with pytest.raises(LBEdgeError, match="not written|could not finish"):
        out.close()


def test_window_shows_one_mosaic_of_every_source_until_q(tmp_path, monkeypatch):
    """The window mode opened a window per source: now one window, the same mosaic as the video."""
    import lbedge.demo as demo

    shown = []

    class FakeWindow:  # this machine's OpenCV has no GUI: record what the window would show
        def show(self, image_bgr):
            shown.append(image_bgr.shape)
            return len(shown) < 5  # q pressed at the fifth picture

        def close(self):
            shown.append("closed")

    monkeypatch.setattr(demo, "Window", FakeWindow)
    sources = {
        "a": ImageFolderSource(colour_frames(tmp_path / "a", ["red"] * 10)),
        "b": ImageFolderSource(colour_frames(tmp_path / "b", ["blue"] * 10)),
    }
    stats = run_demo(Pipeline(sources, fake_encoder(), LABELS), output=None, jsonl=None, window=True)
    assert stats["results"] == 5 and shown[-1] == "closed" and stats["video_frames"] == 0
    assert len(shown) == 6 and len(set(shown[:-1])) == 1  # one picture per result, always the whole mosaic
    assert shown[0][1] == 2 * 480  # both sources side by side


def test_video_source_choice():
    class S:
        def __init__(self, modality, fps=None):
            self.modality, self.fps, self.live, self.name = modality, fps, False, ""

    assert video_source({"a": S("image", 8), "b": S("depth", 30)}) == "b"
    assert video_source({"a": S("image", 8), "b": S("thermal", 8)}) == "a"  # the first of equals
    assert video_source({"a": S("image"), "b": S("thermal", 9)}) == "b"  # a stated rate wins
    assert video_source({"mic": S("audio", 1.0), "cam": S("image")}) == "cam"
    assert video_source({"mic": S("audio", 1.0)}) == "mic"
