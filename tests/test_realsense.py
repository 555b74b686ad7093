"""RealSense sources without a camera: recordings written by lbedge's writer (a librealsense software device)
and played back through RealSenseRecording, checked value for value; the live source's failure paths."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

rs = pytest.importorskip(
    "pyrealsense2",
    reason='pyrealsense2 is not installed (pip install "lbedge[realsense]"; '
    "on Linux it also needs apt install libusb-1.0-0)",
)

from lbedge.errors import InputError, MissingDependency, SensorError  # noqa: E402
from lbedge.frames import Frame, Source  # noqa: E402
from lbedge.sensors.realsense import FILTERS, RealSense, RealSenseRecording, write_recording  # noqa: E402

N, FPS, H, W = 12, 60, 48, 64
HOLE = (slice(10, 20), slice(10, 20))  # invalid (0) pixels in every depth frame


def depth_mm(i: int) -> np.ndarray:
    d = np.full((H, W), 1000 + 10 * i, np.uint16)
    d[:, W // 2 :] += 500  # two planes, so that values are not all alike
    d[HOLE] = 0
    return d


def color_rgb(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(x * 4) % 256, (y * 5) % 256, np.full_like(x, 20 * i)], 2).astype(np.uint8)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two recordings: depth + colour in mm units, and depth only in 0.1 mm units."""
    folder = tmp_path_factory.mktemp("realsense")
    t0 = time.monotonic()
    with_color = write_recording(
        folder / "rgbd.db3", (depth_mm(i) for i in range(N)), color=(color_rgb(i) for i in range(N)), fps=FPS
    )
    write_s = time.monotonic() - t0
    fine = write_recording(folder / "depth_100um.db3", [depth_mm(i) for i in range(N)], fps=FPS, depth_units=0.0001)
    return {"rgbd": with_color, "fine": fine, "write_s": write_s, "folder": folder}


def _all_accounted(frames: list[Frame], src: RealSenseRecording | None = None) -> None:
    """Every recorded frame, once, in order, none lost: depth alone and with colour (the playback waits until
    every stream has started, so no stream misses the first frames and the syncer pairs every frameset)."""
    assert [f.meta["frame_number"] for f in frames] == list(range(N))
    assert [f.meta["frames_lost"] for f in frames] == [0] * N
    assert src is None or src.frames_lost == 0


def _check_sequence(frames: list[Frame]) -> None:
    """Every frame accounted for, in order, exact, paced by the device clock."""
    _all_accounted(frames)
    assert [f.sequence for f in frames] == list(range(len(frames)))
    numbers = [f.meta["frame_number"] for f in frames]
    for f in frames:
        assert f.modality == "depth" and f.units == "mm"
        assert f.data.dtype == np.uint16 and f.data.shape == (H, W)
        np.testing.assert_array_equal(f.data, depth_mm(f.meta["frame_number"]))  # exact, holes stay 0
        assert f.device_timestamp == pytest.approx(f.meta["frame_number"] / FPS, abs=1e-5)
    gaps = np.diff([f.device_timestamp for f in frames]) / np.diff(numbers)
    assert np.allclose(gaps, 1 / FPS, atol=1e-5)
    assert all(a.timestamp <= b.timestamp for a, b in zip(frames, frames[1:]))


def test_writer_is_quick_and_rejects_bag_output(recordings, tmp_path):
    assert recordings["rgbd"].suffix == ".db3" and recordings["rgbd"].stat().st_size > 0
    assert recordings["write_s"] < 3.0  # paced at 60 fps: about N / 60 s
    with pytest.raises(InputError, match=r"\.db3.*not \.bag|2\.58"):
        write_recording(tmp_path / "out.bag", [depth_mm(0)])
    assert not (tmp_path / "out.bag").exists()
    with pytest.raises(InputError, match="no depth frames"):
        write_recording(tmp_path / "empty.db3", [])
    with pytest.raises(InputError, match="one size"):
        write_recording(tmp_path / "sizes.db3", [depth_mm(0), np.zeros((4, 4), np.uint16)], fps=FPS, paced=False)
    with pytest.raises(InputError, match="colour frame"):
        write_recording(tmp_path / "count.db3", [depth_mm(0), depth_mm(1)], color=[color_rgb(0)], fps=FPS, paced=False)
    with pytest.raises(InputError, match="RGB"):
        write_recording(tmp_path / "gray.db3", [depth_mm(0)], color=[np.zeros((H, W), np.uint8)])
    assert not any(tmp_path.glob("*.db3"))  # failed writes leave no partial file


def test_replay_depth_exact_in_millimetres(recordings):
    src = RealSenseRecording(recordings["rgbd"])
    assert isinstance(src, Source) and src.live is False and src.realtime is False
    frames = list(src)
    _check_sequence(frames)
    meta = frames[0].meta
    assert meta["depth_scale"] == 0.001 and "color" not in meta
    intr = meta["intrinsics"]
    assert (intr["width"], intr["height"]) == (W, H)
    assert intr["fx"] == pytest.approx(intr["fy"]) and intr["fx"] > 0
    assert (intr["ppx"], intr["ppy"]) == pytest.approx(((W - 1) / 2, (H - 1) / 2))
    assert src.fps == FPS
    t0 = time.monotonic()
    assert src.read() is None and src.read() is None  # the end stays the end, without hanging
    assert time.monotonic() - t0 < 2.0
    src.close()


def test_finer_depth_units_come_back_as_the_same_millimetres(recordings):
    frames = list(RealSenseRecording(recordings["fine"]))
    _check_sequence(frames)
    assert frames[0].meta["depth_scale"] == 0.0001  # float32 noise removed


def test_colour_frames(recordings):
    frames = list(RealSenseRecording(recordings["rgbd"], color=True))
    _check_sequence(frames)
    for f in frames:
        rgb = f.meta["color"]
        assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
        np.testing.assert_array_equal(rgb, color_rgb(f.meta["frame_number"]))
    with pytest.raises(SensorError, match="holds: depth"):  # no colour in that file
        RealSenseRecording(recordings["fine"], color=True).open()


def test_align_to_color(recordings, tmp_path):
    src = RealSenseRecording(recordings["rgbd"], align_to_color=True)
    frames = list(src)
    _all_accounted(frames, src)
    for f in frames:
        want = depth_mm(f.meta["frame_number"])
        valid = f.data > 0
        assert f.data.shape == (H, W) and valid.mean() > 0.9  # same pose and optics: a near identity
        np.testing.assert_array_equal(f.data[valid], want[valid])
        assert not f.data[12:18, 12:18].any()  # the hole is still a hole
    # colour at twice the depth resolution: depth is reprojected to the colour image's size
    path = write_recording(
        tmp_path / "hires.db3",
        [np.full((H, W), 1500, np.uint16)] * 3,
        color=[np.zeros((2 * H, 2 * W, 3), np.uint8)] * 3,
        fps=FPS,
        paced=False,
    )
    frames = list(RealSenseRecording(path, align_to_color=True, color=True))
    assert frames and all(f.data.shape == (2 * H, 2 * W) and f.meta["color"].shape == (2 * H, 2 * W, 3) for f in frames)
    assert frames[-1].meta["intrinsics"]["width"] == 2 * W and set(np.unique(frames[-1].data)) == {1500}


def test_filters(recordings):
    src = RealSenseRecording(recordings["rgbd"], filters=["hole_filling", "decimation"])
    assert src.filters == ("decimation", "hole_filling")  # canonical order whatever the given order
    frames = list(src)
    _all_accounted(frames, src)
    f = frames[-1]
    assert f.data.shape == (H // 2, W // 2) and f.data.dtype == np.uint16
    assert f.meta["intrinsics"]["width"] == W // 2
    assert f.data[6:9, 6:9].all()  # hole filled
    assert set(np.unique(f.data)) <= {1000 + 10 * f.meta["frame_number"], 1500 + 10 * f.meta["frame_number"]}
    everything = list(RealSenseRecording(recordings["rgbd"], filters=FILTERS, align_to_color=True, color=True))
    _all_accounted(everything)
    assert everything[-1].data.dtype == np.uint16
    with pytest.raises(SensorError, match="decimation, spatial, temporal, hole_filling"):
        RealSenseRecording(recordings["rgbd"], filters=["median"])
    with pytest.raises(SensorError, match="'sharpen'"):
        RealSense(filters="sharpen")


def test_realtime_and_loop(recordings):
    t0 = time.monotonic()
    src = RealSenseRecording(recordings["rgbd"], realtime=True, color=True)
    frames = list(src)
    assert time.monotonic() - t0 >= 0.7 * (N - 1) / FPS  # at the recorded pace, not as fast as possible
    _all_accounted(frames, src)  # paced by lbedge: every frame
    offline = write_recording(
        recordings["folder"] / "offline.db3", [depth_mm(i) for i in range(N)], fps=FPS, paced=False
    )  # written faster than real time
    t0 = time.monotonic()
    src = RealSenseRecording(offline, realtime=True)
    frames = list(src)
    assert time.monotonic() - t0 >= 0.9 * (N - 1) / FPS  # still at its recorded rate
    _all_accounted(frames, src)
    with RealSenseRecording(recordings["rgbd"], loop=True) as src:
        numbers = [src.read().meta["frame_number"] for _ in range(2 * N + 3)]
    assert numbers.count(N - 1) == 2 and numbers[-1] < N - 1  # went round twice and on


@pytest.mark.timeout(60)
def test_librealsense_real_time_mode_counts_every_frame_it_drops(recordings):
    """Asked for explicitly, librealsense's real-time playback of a recording written offline rushes through it
    and drops what a slow reader misses: every dropped frame is counted, at the gaps and at the end."""
    offline = write_recording(
        recordings["folder"] / "rushed.db3", [depth_mm(i) for i in range(N)], fps=FPS, paced=False
    )
    src = RealSenseRecording(offline, realtime=True, lossless=False)
    frames = []
    with src:
        while (frame := src.read()) is not None:
            frames.append(frame)
            time.sleep(0.2)  # far slower than the recording's few milliseconds of host time
    numbers = [f.meta["frame_number"] for f in frames]
    assert numbers == sorted(set(numbers)) and len(frames) < N
    assert len(frames) + src.frames_lost == N  # nothing hidden
    gaps = sum(b - a - 1 for a, b in zip(numbers, numbers[1:]))
    assert frames[-1].meta["frames_lost"] == gaps  # counted as the frame numbers jump; before and after: at the end


def test_frame_number_gaps_of_the_recording_itself(recordings, monkeypatch):
    """A camera's own drops are stored as gaps in the frame numbers: a .db3 replay knows how many frames the file
    holds, so such gaps are not losses of the replay; without that count (a .bag) every gap counts as lost."""
    import lbedge.sensors.realsense as realsense

    write_frame = realsense._software_frame

    def every_other_number(rs_module, pixels, profile, index, fps):
        frame = write_frame(rs_module, pixels, profile, index, fps)
        frame.frame_number = 2 * index
        return frame

    monkeypatch.setattr(realsense, "_software_frame", every_other_number)
    gapped = write_recording(recordings["folder"] / "gapped.db3", [depth_mm(i) for i in range(N)], fps=FPS)
    monkeypatch.undo()
    assert realsense.recorded_depth_frames(gapped) == N
    src = RealSenseRecording(gapped)
    frames = list(src)
    assert [f.meta["frame_number"] for f in frames] == list(range(0, 2 * N, 2)) and src.frames_lost == 0
    monkeypatch.setattr(realsense, "recorded_depth_frames", lambda path: None)  # as for a .bag file
    src = RealSenseRecording(gapped)
    assert len(list(src)) == N and src.frames_lost == N - 1


def test_context_manager_iterator_and_reopen(recordings):
    with RealSenseRecording(recordings["rgbd"], name="bench-cam") as src:
        first = src.read()
        assert isinstance(first, Frame) and first.source == "bench-cam" and first.sequence == 0
        rest = list(src)
        assert len(rest) == N - 1 - first.meta["frame_number"]
    with pytest.raises(SensorError, match="before open"):
        src.read()
    again = list(src)  # closed sources reopen from the start
    _all_accounted(again, src)
    src.close()


def test_missing_and_corrupt_recordings(tmp_path):
    with pytest.raises(SensorError, match="not found.*nothing.db3"):
        RealSenseRecording(tmp_path / "nothing.db3").open()
    bad = tmp_path / "noise.db3"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SensorError, match="noise.db3"):
        RealSenseRecording(bad).open()
    bad_bag = tmp_path / "noise.bag"
    bad_bag.write_bytes(bad.read_bytes())
    with pytest.raises(SensorError, match="noise.bag"):
        RealSenseRecording(bad_bag).open()


def test_live_camera_that_is_absent():
    cam = RealSense(serial="nonexistent")
    assert cam.live is True and cam.modality == "depth" and cam.units == "mm"
    with pytest.raises(SensorError, match="nonexistent.*devices found"):
        cam.open()
    with pytest.raises(SensorError, match="before open"):
        cam.read()


def test_missing_pyrealsense2_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import pyrealsense2 -> ImportError
    with pytest.raises(MissingDependency, match=r"lbedge\[realsense\]"):
        RealSense().open()
    with pytest.raises(MissingDependency, match=r"lbedge\[realsense\]"):
        write_recording(tmp_path / "x.db3", [depth_mm(0)])


def test_module_import_does_not_import_pyrealsense2():
    code = "import sys, lbedge.sensors.realsense; assert 'pyrealsense2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_rgbd_recording_through_the_pipeline(recordings, monkeypatch, tmp_path):
    """Depth and colour of one recording as two pipeline sources: classified per frame, fused exactly."""
    from lbedge.pipeline import Pipeline
    from lbedge.sensors.split import rgbd_sources
    from test_pipeline import fake_encoder

    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SensorError, match="color=True"):
        rgbd_sources(RealSenseRecording(recordings["rgbd"]))
    sources = rgbd_sources(RealSenseRecording(recordings["rgbd"], color=True))
    assert [s.modality for s in sources.values()] == ["depth", "image"]
    encoders = {"depth": fake_encoder("depth"), "image": fake_encoder("image")}
    with Pipeline(sources, encoders, ["red", "green", "blue"], smoothing="none", sync_tolerance=0.0) as p:
        results = list(p)
    by = {n: [r.update for r in results if r.update.source == n] for n in sources}
    _all_accounted([d.frame for d in by["depth"]])
    assert len(by["rgb"]) == len(by["depth"])
    assert all(st["lost"] == 0 and st["processed"] == N for st in p.stats().values())
    for d, c in zip(by["depth"], by["rgb"]):
        assert d.timestamp == c.timestamp  # one device frame, two views
        np.testing.assert_array_equal(c.frame.data, color_rgb(d.frame.meta["frame_number"]))
        assert "color" not in d.frame.meta
    assert any(set(r.fused_sources) == {"depth", "rgb"} for r in results)
    assert all(not t.is_alive() for t in p.threads)
