"""The streaming pipeline with real replay sources and a fake model: no drops on recordings, newest-frame
on live sources, recovery from failing sources, smoothing, fusion, clean shutdown."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from conftest import OFFICIAL, FuncBackend, sigint_as_in_a_terminal
from lbedge import ClipTokenizer, Encoder, PreprocessConfig, SensorError
from lbedge.frames import Frame
from lbedge.pipeline import Pipeline, Smoother
from lbedge.sensors import ImageFolderSource

TOK = ClipTokenizer.from_dir(OFFICIAL / "tokenizer")
LABELS = ["red", "green", "blue"]


def word_text_tower(labels):
    """A fake text tower: the basis vector of the label word a prompt contains."""
    ids = {TOK.encode(label)[0]: i for i, label in enumerate(labels)}

    def text(tokens):
        out = np.full((len(tokens), len(labels)), 0.01, np.float32)
        for r, row in enumerate(tokens):
            for tid, i in ids.items():
                if tid in row:
                    out[r, i] = 1.0
        return out

    return FuncBackend(text, "ids")


def fake_encoder(modality: str = "image", delay: float = 0.0, vision=None, labels=LABELS) -> Encoder:
    """Vision: the dominant colour channel of the (preprocessed) frame (or ``vision``); text: the label word's
    basis vector."""

    def colour(x):
        if delay:
            time.sleep(delay)
        chans = x.reshape(len(x), 3, -1).mean(-1) if modality != "audio" else np.ones((len(x), 3))
        return np.eye(3, dtype=np.float32)[chans.argmax(1)]

    return Encoder(
        modality=modality,
        preprocess_config=PreprocessConfig(modality),
        vision=FuncBackend(vision or colour, "x"),
        text=word_text_tower(labels),
        tokenizer=TOK,
        logit_scale=50.0,
        embed_dim=len(labels),
        text_fingerprint=f"fake-{modality}",
    )


def colour_frames(folder, colours):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(colours):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., {"red": 2, "green": 1, "blue": 0}[c]] = 255  # BGR on disk
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def test_recording_is_processed_without_drops(tmp_path):
    colours = ["red"] * 5 + ["blue"] * 5
    src = ImageFolderSource(colour_frames(tmp_path / "f", colours))
    with Pipeline({"cam": src}, fake_encoder(), LABELS, smoothing="none") as p:
        results = list(p)
    assert [r.update.sequence for r in results] == list(range(10))
    assert [r.update.raw_label for r in results] == colours
    assert results[-1].fused_label == "blue" and p.dropped["cam"] == 0
    st = p.stats()["cam"]
    assert st["processed"] == 10 and st["dropped"] == 0 and st["fps"] > 0 and st["preprocess_ms"] > 0
    assert st["latency_ms"] >= st["infer_ms"] >= 0 and results[0].update.preprocess_ms > 0
    assert any("ended" in e for r in results for e in r.events)
    assert not [t for t in p.threads if t.is_alive()]  # clean shutdown, no leaked threads


class FastLiveSource:
    """A live source that produces frames faster than the model runs."""

    modality, live = "image", True

    def __init__(self, n=200):
        self.name, self.n, self.i = "live", n, 0

    def open(self):
        pass

    def read(self, timeout=None):
        if self.i >= self.n:
            return None
        time.sleep(0.001)
        self.i += 1
        return Frame(np.full((32, 32, 3), (255, 0, 0), np.uint8), "image", time.monotonic(), self.i - 1)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def __iter__(self):
        return iter(())


def test_live_source_keeps_only_the_newest_frame():
    with Pipeline({"live": FastLiveSource()}, fake_encoder(delay=0.02), LABELS) as p:
        results = list(p)
    seqs = [r.update.sequence for r in results]
    assert p.dropped["live"] > 0 and len(results) < 200  # the slow model dropped frames...
    assert seqs == sorted(seqs) and seqs[-1] >= 150  # ...but never fell behind the sensor
    assert all(r.update.latency_ms < 1000 for r in results)


class FlakySource(ImageFolderSource):
    """Fails twice at frame 3 (as a recording on a flaky medium would); reopened, it starts at its beginning."""

    def __init__(self, folder, failures=2):
        super().__init__(folder)
        self.failures, self.opens = failures, 0

    def _read(self):
        if self._i == 3 and self.failures > 0:
            self.failures -= 1
            raise SensorError("USB disconnect")
        return super()._read()

    def _open(self):
        self.opens += 1
        super()._open()


def test_failing_source_is_reopened_while_others_go_on(tmp_path):
    flaky = FlakySource(colour_frames(tmp_path / "a", ["green"] * 6))
    steady = ImageFolderSource(colour_frames(tmp_path / "b", ["red"] * 6))
    with Pipeline({"flaky": flaky, "steady": steady}, fake_encoder(), LABELS, reopen_backoff=(0.01, 0.05)) as p:
        results = list(p)
    events = [e for r in results for e in r.events]
    assert sum("flaky failed: USB disconnect" in e for e in events) == 2
    assert any("flaky recovered (resumed at frame 3)" in e for e in events)
    assert p.processed == {"flaky": 6, "steady": 6} and flaky.opens == 3
    # the reopened recording resumed where it failed: every frame once, in order, never again from frame 0
    assert [r.update.sequence for r in results if r.update.source == "flaky"] == list(range(6))


def test_source_that_never_recovers_gives_up(tmp_path):
    class Dead(ImageFolderSource):
        def _open(self):
            raise SensorError("no such device")

    ok = ImageFolderSource(colour_frames(tmp_path / "b", ["red"] * 3))
    with Pipeline(
        {"dead": Dead(tmp_path / "x"), "ok": ok}, fake_encoder(), LABELS, reopen_backoff=(0.01, 0.02), max_reopen=2
    ) as p:
        results = list(p)
    assert p.processed["ok"] == 3 and p.processed["dead"] == 0
    assert any("dead gave up" in e for e in p.event_log)  # after the last frame: in the log
    assert all(e in p.event_log for r in results for e in r.events)


def test_fusion_over_synchronised_sources(tmp_path):
    a = ImageFolderSource(colour_frames(tmp_path / "a", ["red"] * 4))
    b = ImageFolderSource(colour_frames(tmp_path / "b", ["blue"] * 4))
    with Pipeline({"a": a, "b": b}, fake_encoder(), LABELS, smoothing="none", sync_tolerance=10.0) as p:
        last = list(p)[-1]
    assert set(last.fused_sources) == {"a", "b"}
    assert last.fused_scores["red"] == pytest.approx(last.fused_scores["blue"], abs=1e-3)


def test_smoothing_with_hysteresis_does_not_flicker():
    s = Smoother("ema", alpha=0.3, hysteresis=0.1)
    shown = [s.update(np.array(p))[0] for p in ([0.9, 0.1], [0.45, 0.55], [0.55, 0.45], [0.45, 0.55])]
    assert shown == [0, 0, 0, 0]
    shown = [s.update(np.array([0.05, 0.95]))[0] for _ in range(6)]
    assert shown[-1] == 1
    m = Smoother("majority", window=5)
    labels = [m.update(np.eye(2)[k])[0] for k in (0, 0, 1, 0, 1, 1, 1)]
    assert labels == [0, 0, 0, 0, 0, 1, 1]


def test_callbacks_and_stop_end_every_thread(tmp_path):
    seen = []
    p = Pipeline({"live": FastLiveSource(n=10**6)}, fake_encoder(), LABELS)
    p.on_result(seen.append)
    p.on_result(lambda r: 1 / 0)  # a failing callback does not stop the pipeline
    p.start()
    deadline = time.monotonic() + 5
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.stop()
    assert len(seen) >= 5
    assert not [t for t in p.threads if t.is_alive()]
    assert not [t for t in threading.enumerate() if t.name.startswith("lbedge-")]


def test_missing_encoder_is_an_error(tmp_path):
    with pytest.raises(Exception, match="no encoder for modality depth"):
        from lbedge.sensors import DepthSequenceSource

        Pipeline({"d": DepthSequenceSource(tmp_path)}, {"image": fake_encoder()}, LABELS)


def test_cli_demo_headless_writes_video_and_json_lines(tmp_path):
    pytest.importorskip("torch")
    import json as _json

    from click.testing import CliRunner

    from lbedge.cli import main

    frames = colour_frames(tmp_path / "f", ["red", "green", "blue", "red"])
    out, jl = tmp_path / "out" / "annotated.mp4", tmp_path / "results.jsonl"
    r = CliRunner().invoke(
        main,
        [
            "demo",
            "--checkpoint",
            str(OFFICIAL / "image"),
            "--rgb",
            str(frames),
            "-l",
            "red,green,blue",
            "--headless",
            "-o",
            str(out),
            "--jsonl",
            str(jl),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = [_json.loads(line) for line in jl.read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["update"]["source"] == "rgb" and rows[0]["fused"]["label"] in LABELS
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and cap.get(cv2.CAP_PROP_FPS) == 10  # the folder's rate
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) >= 320  # the mosaic's tile, readable
    r = CliRunner().invoke(main, ["demo", "--checkpoint", str(OFFICIAL / "image"), "--rgb", str(frames), "-l", "a,b"])
    assert r.exit_code == 2 and "--headless" in r.output  # this OpenCV build has no window
    r = CliRunner().invoke(
        main, ["demo", "--checkpoint", str(OFFICIAL / "image"), "--rgb", "/dev/video97", "-l", "a,b", "--headless"]
    )
    assert r.exit_code == 1 and "cannot open" in r.output  # a camera that is not there: one error
    r = CliRunner().invoke(
        main, ["demo", "--checkpoint", str(OFFICIAL / "image"), "--depth", "nothing.xyz", "-l", "a,b", "--headless"]
    )
    assert r.exit_code == 2 and "realsense" in r.output  # a spec that names nothing: usage


def test_slow_consumer_of_a_recording_loses_no_results(tmp_path):
    src = ImageFolderSource(colour_frames(tmp_path / "f", ["red"] * 40))
    seqs = []
    with Pipeline({"cam": src}, fake_encoder(), LABELS, results_queue=2) as p:
        for r in p:
            time.sleep(0.005)
            seqs.append(r.update.sequence)
    assert seqs == list(range(40)) and p.results_dropped == 0


def test_recorded_frames_are_batched_in_order(tmp_path):
    colours = ["red", "green", "blue"] * 8
    sizes = []
    enc = fake_encoder(delay=0.03)
    inner = enc.vision.fn
    enc.vision.fn = lambda x: (sizes.append(len(x)), inner(x))[1]
    src = ImageFolderSource(colour_frames(tmp_path / "f", colours))
    with Pipeline({"cam": src}, enc, LABELS, smoothing="none", max_batch=4) as p:
        results = list(p)
    assert [r.update.sequence for r in results] == list(range(24))
    assert [r.update.raw_label for r in results] == colours
    assert max(sizes) > 1 and max(sizes) <= 4 and sum(sizes) == 24  # batched, never beyond max_batch
    assert max(r.update.batch for r in results) == max(sizes)


def test_sources_of_one_modality_share_a_batch(tmp_path):
    a = colour_frames(tmp_path / "a", ["red"] * 6)
    b = colour_frames(tmp_path / "b", ["blue"] * 6)
    enc = fake_encoder(delay=0.02)
    with Pipeline({"a": ImageFolderSource(a), "b": ImageFolderSource(b)}, enc, LABELS, smoothing="none") as p:
        results = list(p)
    by_source = {n: [r.update for r in results if r.update.source == n] for n in "ab"}
    assert [u.sequence for u in by_source["a"]] == list(range(6))
    assert [u.sequence for u in by_source["b"]] == list(range(6))
    assert any(u.batch > 1 for u in by_source["a"])
    assert enc.vision.calls < 12  # fewer model calls than frames


def test_a_bad_frame_in_a_batch_costs_only_itself(tmp_path):
    # (no batch-size assertion here: the fallback re-runs the bad frame's whole batch one frame at a time, and
    # which frames share a batch with it depends on thread timing; batching itself is tested above)
    a = colour_frames(tmp_path / "a", ["red"] * 6)
    b = colour_frames(tmp_path / "b", ["blue"] * 6)
    white = np.full((48, 64, 3), 255, np.uint8)
    cv2.imwrite(str(b / "002.png"), white)  # the model refuses this frame
    enc = fake_encoder(delay=0.02)
    inner = enc.vision.fn

    def vision(x):
        if (x.reshape(len(x), -1).min(1) > 1.5).any():  # an all-white frame
            raise SensorError("unusable frame")
        return inner(x)

    enc.vision.fn = vision
    with Pipeline({"a": ImageFolderSource(a), "b": ImageFolderSource(b)}, enc, LABELS, smoothing="none") as p:
        results = list(p)
    by_source = {n: [r.update for r in results if r.update.source == n] for n in "ab"}
    assert [u.sequence for u in by_source["a"]] == list(range(6))
    assert [u.sequence for u in by_source["b"]] == [0, 1, 3, 4, 5]
    assert all(u.raw_label == "red" for u in by_source["a"]) and all(u.raw_label == "blue" for u in by_source["b"])
    assert any("frame 2 skipped" in e for e in p.event_log)


def test_pictures_of_depth_and_audio_frames_for_the_mosaic():
    from lbedge.demo import display_problem
    from lbedge.pictures import frame_picture

    depth = np.zeros((48, 64), np.uint16)
    depth[:, 32:] = 800
    depth[:, 48:] = 3000
    pic = frame_picture(Frame(depth, "depth", 0.0, 0, units="mm"))
    assert pic.shape == (48, 64, 3) and pic.dtype == np.uint8
    assert (pic[0, 0] == 0).all() and not (pic[0, 40] == pic[0, 60]).all()  # invalid black, near != far
    wave = np.sin(np.linspace(0, 20, 16000, dtype=np.float32))[None]
    pic = frame_picture(Frame(wave, "audio", 0.0, 0, meta={"sample_rate": 16000}))
    assert pic.shape[0] == 64 and pic.shape[1] >= 90 and pic.shape[2] == 3 and pic.any()  # a log-mel spectrogram
    assert "no GUI" in display_problem() or "DISPLAY" in display_problem()  # this machine has no window


def test_cli_demo_png_output_and_clean_exit_on_sigint(tmp_path):
    pytest.importorskip("torch")
    import signal
    import subprocess
    import sys

    frames = colour_frames(tmp_path / "f", ["red", "green", "blue"])
    jl, pngs = tmp_path / "r.jsonl", tmp_path / "pngs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lbedge.cli",
            "demo",
            "--checkpoint",
            str(OFFICIAL / "image"),
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
            str(pngs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not jl.exists() or len(jl.read_text().splitlines()) < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C on a looping recording that never ends
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err  # interrupted: not a success
    assert "interrupted" in out and "rgb:" in out and "processed" in out
    pictures = sorted(pngs.glob("rgb_*.png"))
    assert len(pictures) >= 5  # a folder output: one PNG (the mosaic) per result
    assert cv2.imread(str(pictures[0])).shape[1] >= 320
