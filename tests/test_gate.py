"""Change-gated inference (lbedge.gate): the measure, the gate's decisions, and the pipeline with a gate (no frame
lost, reused results marked, a change never missed past the maximum age, label switches, failures; off by
default, with results unchanged)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from lbedge.errors import UsageError
from lbedge.frames import Frame
from lbedge.gate import ChangeGate, GateState, change, parse_gate, resolve_gates, thumbnail
from lbedge.pipeline import Pipeline
from test_pipeline import LABELS, fake_encoder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


# --- the measure ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, want",
    [
        ((1, 3, 224, 224), (3, 16, 16)),  # image, depth, thermal: one plane per channel
        ((1, 3, 112, 1036), (3, 16, 16)),  # audio spectrogram
        ((1, 3, 8, 224, 224), (24, 16, 16)),  # video
        ((3, 10, 12), (3, 10, 12)),  # smaller than the thumbnail: kept
        ((100,), (1, 1, 16)),
        ((), (1, 1, 1)),
    ],
)
def test_thumbnail_shapes(shape, want):
    t = thumbnail(np.ones(shape, np.float32), 16)
    assert t.shape == want and t.dtype == np.float32 and np.allclose(t, 1.0)


def test_thumbnail_is_an_area_mean_of_each_channel():
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[:, :, :16, :16] = 3.0  # top-left quarter
    t = thumbnail(x, 2)
    assert np.allclose(t, [[[3.0, 0.0], [0.0, 0.0]]] * 3)
    x[:, 0] = 0.0
    assert np.allclose(thumbnail(x, 2)[:, 0, 0], [0.0, 3.0, 3.0])
    assert np.allclose(thumbnail(np.arange(10.0), 4), [[[0.5, 3, 5.5, 8]]])  # uneven blocks: 3, 2, 3, 2 values


def test_change_is_the_mean_absolute_difference_and_inf_when_not_comparable():
    a, b = np.zeros((4, 4), np.float32), np.full((4, 4), 0.5, np.float32)
    assert change(a, a) == 0.0 and change(a, b) == pytest.approx(0.5)
    assert change(a, None) == math.inf and change(None, a) == math.inf
    assert change(a, np.zeros((4, 5), np.float32)) == math.inf  # another shape
    assert change(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)) == math.inf  # empty
    b[0, 0] = np.nan
    assert change(a, b) == math.inf  # NaN: counts as a change
    b[0, 0] = np.inf
    assert change(a, b) == math.inf


# --- the configuration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        dict(threshold=-0.1),
        dict(threshold=float("nan")),
        dict(threshold="0.1"),
        dict(threshold=True),
        dict(max_age_s=None, max_age_frames=None),
        dict(max_age_s=0.0),
        dict(max_age_s=float("inf")),
        dict(max_age_frames=0),
        dict(max_age_frames=2.5),
        dict(size=0),
        dict(size=1000),
    ],
)
def test_bad_gates_are_usage_errors(kw):
    with pytest.raises(UsageError):
        ChangeGate(**kw)


def test_parse_gate():
    assert parse_gate("0.05") == ChangeGate(0.05)
    assert parse_gate("0.05:2.5") == ChangeGate(0.05, 2.5)
    assert parse_gate(" 0:0.5 ") == ChangeGate(0.0, 0.5)
    for bad in ("", "x", "0.1:", ":1", "0.1:1:2", "-1", "0.1:0", "0.1:nan", "nan"):
        with pytest.raises(UsageError):
            parse_gate(bad)


def test_resolve_gates():
    g = ChangeGate()
    assert resolve_gates(None, ["a", "b"]) == {}
    assert resolve_gates(g, ["a", "b"]) == {"a": g, "b": g}
    assert resolve_gates({"a": g, "b": None}, ["a", "b"]) == {"a": g}
    with pytest.raises(UsageError, match="unknown source"):
        resolve_gates({"c": g}, ["a", "b"])
    with pytest.raises(UsageError):
        resolve_gates({"a": 0.1}, ["a"])
    with pytest.raises(UsageError):
        resolve_gates(0.1, ["a"])


# --- the gate's decisions -------------------------------------------------------------------------------------
def frame_x(value: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    x = np.full((1, 3, 32, 32), value, np.float32)
    if noise:
        x += np.random.default_rng(seed).normal(0, noise, x.shape).astype(np.float32)
    return x


def test_static_input_is_reused_and_a_change_is_classified_at_once():
    st = GateState(ChangeGate(threshold=0.05, max_age_s=100.0))
    d = st.check(frame_x(0.0), 0.0)
    assert not d.reuse and d.why == "first"
    for i in range(1, 10):
        d = st.check(frame_x(0.0, noise=0.02, seed=i), i * 0.1)  # sensor noise: below the threshold
        assert d.reuse and d.age_frames == i and d.age_s == pytest.approx(i * 0.1)
        st.reused(d)
    d = st.check(frame_x(0.2), 1.0)  # a real change
    assert not d.reuse and d.why == "changed" and d.change == pytest.approx(0.2, abs=1e-6)
    d = st.check(frame_x(0.2), 1.1)  # compares with the new reference
    assert d.reuse and d.age_frames == 1


def test_max_age_forces_a_classification():
    st = GateState(ChangeGate(threshold=1.0, max_age_s=0.5))
    assert not st.check(frame_x(0.0), 0.0).reuse
    assert st.check(frame_x(0.0), 0.5).reuse  # at the maximum age: still reused
    d = st.check(frame_x(0.0), 0.51)
    assert not d.reuse and d.why == "max_age"
    st = GateState(ChangeGate(threshold=1.0, max_age_s=None, max_age_frames=3))
    reused = [st.check(frame_x(0.0), 0.0).reuse for _ in range(9)]
    assert reused == [False, True, True, True, False, True, True, True, False]


def test_a_slow_drift_below_the_threshold_is_seen_by_the_maximum_age():
    st = GateState(ChangeGate(threshold=0.05, max_age_frames=4, max_age_s=None))
    refs, value = [], 0.0
    for i in range(40):
        value += 0.01  # each step below the threshold, 0.4 in all
        if not st.check(frame_x(value), float(i)).reuse:
            refs.append(i)
    assert np.diff(refs).max() <= 5  # never more than 4 reused in a row


def test_labels_switch_invalid_input_time_going_back_and_invalidate_classify():
    st = GateState(ChangeGate(threshold=1.0, max_age_s=10.0))
    st.check(frame_x(0.0), 0.0, labels_version=0)
    assert st.check(frame_x(0.0), 0.1, labels_version=0).reuse
    assert st.check(frame_x(0.0), 0.2, labels_version=1).why == "labels"
    nan = frame_x(0.0)
    nan[0, 0, 0, 0] = np.nan
    assert st.check(nan, 0.3, labels_version=1).why == "invalid"
    assert st.check(frame_x(0.0), 0.4, labels_version=1).why == "invalid"  # the NaN reference compares with nothing
    assert st.check(frame_x(0.0), 0.5, labels_version=1).reuse
    assert st.check(frame_x(0.0), 0.1, labels_version=1).why == "max_age"  # the clock went back
    assert st.check(frame_x(0.0), float("nan"), labels_version=1).why == "max_age"
    assert st.check(frame_x(0.0), 1.0, labels_version=1).why == "max_age"  # after a NaN time: not comparable
    assert st.check(frame_x(0.0), 1.1, labels_version=1).reuse
    st.invalidate()
    assert st.check(frame_x(0.0), 1.2, labels_version=1).why == "first"
    assert st.check(np.zeros((1, 3, 10, 10), np.float32), 1.3, labels_version=1).why == "invalid"  # another shape


# --- the pipeline -------------------------------------------------------------------------------------------
class ArraySource:
    """A recording of given RGB frames, stamped ``dt`` seconds apart on the device clock (deterministic ages)."""

    modality, live = "image", False

    def __init__(self, frames, dt: float = 0.1, name: str = "cam"):
        self.frames, self.dt, self.name, self.i = list(frames), dt, name, 0

    def open(self):
        pass

    def read(self):
        if self.i >= len(self.frames):
            return None
        self.i += 1
        i = self.i - 1
        return Frame(self.frames[i], "image", time.monotonic(), i, device_timestamp=i * self.dt)

    def close(self):
        pass


def rgb(colour: str, noise: float = 0.0, seed: int = 0, patch: bool = False) -> np.ndarray:
    img = np.zeros((48, 64, 3), np.float32)
    img[..., {"red": 0, "green": 1, "blue": 2}[colour]] = 200
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape)
    if patch:
        img[22:26, 30:34, 1] = 255  # a small green patch: marks a frame the model fails on (see failing_encoder)
    return np.clip(img, 0, 255).astype(np.uint8)


def counting_encoder(**kw):
    enc = fake_encoder(**kw)
    calls = {"frames": 0}
    fn = enc.vision.fn

    def vision(x):
        calls["frames"] += len(x)
        return fn(x)

    enc.vision.fn = vision
    return enc, calls


def run(frames, gate=None, **kw) -> tuple[list, Pipeline, dict]:
    enc, calls = counting_encoder()
    with Pipeline(
        {"cam": ArraySource(frames)}, enc, LABELS, smoothing="none", sync_clock="device", gate=gate, **kw
    ) as p:
        results = list(p)
    return results, p, calls


STATIC_THEN_CHANGE = [rgb("red", 3, i) for i in range(20)] + [rgb("blue", 3, 20 + i) for i in range(10)]


def test_gate_off_is_the_default_and_changes_nothing():
    base, p0, calls0 = run(STATIC_THEN_CHANGE)
    off, p1, calls1 = run(STATIC_THEN_CHANGE, gate={"cam": None})
    assert calls0["frames"] == calls1["frames"] == 30
    for a, b in zip(base, off, strict=True):
        assert (a.update.sequence, a.update.raw_label, a.update.scores) == (
            b.update.sequence,
            b.update.raw_label,
            b.update.scores,
        )
        assert not a.update.reused and a.to_dict()["update"]["reused"] is False
    assert p0.stats()["cam"]["reused"] == 0 and p0.stats()["cam"]["processed"] == 30


@pytest.mark.parametrize("max_batch", [1, 8])
def test_gated_recording_loses_no_frame_and_marks_reused_results(max_batch):
    base, _, _ = run(STATIC_THEN_CHANGE, max_batch=max_batch)
    gate = ChangeGate(threshold=0.05, max_age_s=None, max_age_frames=5)
    results, p, calls = run(STATIC_THEN_CHANGE, gate=gate, max_batch=max_batch)
    assert [r.update.sequence for r in results] == list(range(30))  # every frame has a result, in order
    assert [r.update.raw_label for r in results] == [r.update.raw_label for r in base]  # accuracy kept
    reused = [r.update.reused for r in results]
    # frame 0 classified, then at most 5 reused in a row; the first blue frame (20) classified at once
    assert reused[:7] == [False, True, True, True, True, True, False]
    assert not reused[20] and results[20].update.raw_label == "blue"
    assert calls["frames"] == reused.count(False) < 30
    assert p.stats()["cam"]["reused"] == reused.count(True) and p.stats()["cam"]["processed"] == 30
    for r in results:
        u = r.update
        d = r.to_dict()["update"]
        assert d["reused"] == u.reused and d["age_s"] == u.age_s
        if u.reused:  # the previous result again, under this frame's sequence and timestamp
            assert u.infer_ms == 0 and u.batch == 0 and 0 < u.age_s <= 0.5 + 1e-9 and u.frame.sequence == u.sequence
            assert u.age_s == pytest.approx(0.1 * (u.sequence - max(i for i in range(u.sequence) if not reused[i])))


def test_a_change_is_never_missed_past_the_maximum_age():
    """A slow drift (each frame below the threshold) from red to blue: with max_age_s=0.3 s (3 frames at 10 FPS),
    no frame reuses a result older than 0.3 s, and the label follows the ungated one within 3 frames."""
    frames = []
    for i in range(40):
        img = np.zeros((48, 64, 3), np.float32)
        img[..., 0], img[..., 2] = 200 * (1 - i / 39), 200 * i / 39
        frames.append(img.astype(np.uint8))
    base, _, _ = run(frames)
    results, _, calls = run(frames, gate=ChangeGate(threshold=0.2, max_age_s=0.3))
    assert [r.update.sequence for r in results] == list(range(40))
    assert max(r.update.age_s for r in results) <= 0.3 + 1e-9
    classified = [i for i, r in enumerate(results) if not r.update.reused]
    assert np.diff(classified).max() <= 4 and calls["frames"] == len(classified) < 40
    flip = next(i for i, r in enumerate(base) if r.update.raw_label == "blue")
    seen = next(i for i, r in enumerate(results) if r.update.raw_label == "blue")
    assert flip <= seen <= flip + 3


def failing_encoder():
    """The fake encoder, failing (non-finite embedding) on frames with the green patch of ``rgb(patch=True)``."""

    def vision(x):
        out = np.eye(3, dtype=np.float32)[x.reshape(len(x), 3, -1).mean(-1).argmax(1)]
        out[x[:, 1].max(axis=(1, 2)) > 0] = np.nan
        return out

    return fake_encoder(vision=vision)


def test_a_failed_reference_is_never_reused():
    """The first frame fails: the frames that look the same as it are classified, not given a stale result."""
    frames = [rgb("red", patch=True)] + [rgb("red") for _ in range(5)]
    gate = ChangeGate(threshold=0.05, max_age_s=100.0)
    for max_batch in (1, 8):
        with Pipeline(
            {"cam": ArraySource(frames)}, failing_encoder(), LABELS, gate=gate, max_batch=max_batch, sync_clock="device"
        ) as p:
            results = list(p)
        assert [r.update.sequence for r in results] == [1, 2, 3, 4, 5]
        assert [r.update.reused for r in results] == [False, True, True, True, True]


def test_a_label_switch_invalidates_the_reused_result():
    frames = [rgb("red", 2, i) for i in range(80)]
    gate = ChangeGate(threshold=0.5, max_age_s=1000.0)
    switched, done = threading.Event(), threading.Event()
    enc = fake_encoder(labels=LABELS)
    new = ["blue", "red", "green"]  # another order: a reused result of the old set would name the wrong label

    def on_result(r):
        if r.update.sequence == 5 and not switched.is_set():
            switched.set()
            p.set_labels(new).add_done_callback(lambda f: done.set())

    src = ArraySource(frames)
    src.read = _wait_at(src, 40, done)  # frames 40 on come after the switch (it may happen earlier too)
    p = Pipeline({"cam": src}, enc, LABELS, gate=gate, smoothing="none", sync_clock="device")
    p.on_result(on_result)
    with p:
        results = list(p)
    assert [r.update.sequence for r in results] == list(range(80))
    versions = [r.labels_version for r in results]
    assert versions[0] == 0 and versions[-1] == 1 and versions == sorted(versions)
    first_new = versions.index(1)
    assert results[first_new].update.reused is False  # the first frame after the switch is classified
    assert all(r.update.reused for r in results[first_new + 1 :])
    for r in results:
        assert r.update.raw_label == "red" and set(r.update.scores) <= set(new if r.labels_version else LABELS)


def _wait_at(src: ArraySource, index: int, event: threading.Event):
    """``src.read`` that waits (30 s at most) for ``event`` before delivering frame ``index``."""
    read = src.read

    def wait_then_read():
        if src.i == index:
            event.wait(30)
        return read()

    return wait_then_read


def test_one_gate_per_source_and_unknown_sources_refused():
    enc = fake_encoder()
    a, b = ArraySource([rgb("red")] * 6, name="a"), ArraySource([rgb("red")] * 6, name="b")
    gate = ChangeGate(threshold=0.05, max_age_s=100.0)
    with Pipeline({"a": a, "b": b}, enc, LABELS, gate={"a": gate}, sync_clock="device") as p:
        results = list(p)
    reused = {n: [r.update.reused for r in results if r.update.source == n] for n in "ab"}
    assert reused["a"] == [False] + [True] * 5 and reused["b"] == [False] * 6
    assert p.stats()["a"]["reused"] == 5 and p.stats()["b"]["reused"] == 0
    with pytest.raises(UsageError, match="unknown source"):
        Pipeline({"a": ArraySource([])}, enc, LABELS, gate={"x": gate})


def test_cli_gate_option_is_validated():
    from click.testing import CliRunner

    from lbedge.cli import main

    for bad in ("abc", "-1", "0.1:0", "0.1:x:2"):
        r = CliRunner().invoke(main, ["demo", "--lb-mini", "--headless", "--gate", bad])
        assert r.exit_code == 2 and "--gate" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["demo", "--help"])
    assert "--gate THRESHOLD[:MAX_AGE_S]" in r.output and "default: off" in r.output


def test_lb_mini_bundle_on_a_static_recording_with_a_change(lb_mini_copy):
    """lb-mini's real image bundle on 24 noisy copies of one picture, then 16 of another (8 FPS stamps): every frame
    has a result, the change is classified at once, no result is older than the maximum age, reused results repeat
    the classified frame's label and scores, and most model calls are skipped."""
    import lbedge
    from lbmini.demo import DEMO_LABELS, DEMO_TEMPLATES

    def picture(square: bool, seed: int) -> np.ndarray:
        img = np.full((128, 128, 3), 90.0, np.float32)
        if square:
            img[40:88, 40:88] = (230, 120, 40)
        else:
            yy, xx = np.mgrid[:128, :128]
            img[(yy - 64) ** 2 + (xx - 64) ** 2 < 28**2] = (40, 200, 90)
        img += np.random.default_rng(seed).normal(0, 2.0, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    frames = [picture(False, i) for i in range(24)] + [picture(True, 100 + i) for i in range(16)]
    gate = ChangeGate(threshold=0.02, max_age_s=0.5)
    with lbedge.load_bundle(lb_mini_copy / "image") as enc:
        with Pipeline(
            {"cam": ArraySource(frames, dt=0.125)},
            enc,
            list(DEMO_LABELS),
            templates=list(DEMO_TEMPLATES),
            gate=gate,
            smoothing="none",
            sync_clock="device",
        ) as p:
            results = list(p)
    updates = [r.update for r in results]
    assert [u.sequence for u in updates] == list(range(40))
    assert not updates[0].reused and not updates[24].reused  # the first frame and the change
    assert max(u.age_s for u in updates) <= 0.5 + 1e-9
    last = None
    for u in updates:
        if u.reused:
            assert (u.raw_label, u.scores) == (last.raw_label, last.scores)
        else:
            last = u
    assert 0 < p.stats()["cam"]["reused"] == sum(u.reused for u in updates) and sum(u.reused for u in updates) >= 20


def test_live_source_with_a_gate():
    """A live camera (newest frame only) of a still picture: the first frame is classified, every later result is
    the reused one, newest first as without a gate."""
    from test_pipeline import FastLiveSource

    with Pipeline({"live": FastLiveSource(60)}, fake_encoder(delay=0.002), LABELS, gate=ChangeGate(0.0, 3600.0)) as p:
        results = list(p)
    seqs = [r.update.sequence for r in results]
    assert seqs == sorted(seqs) and len(results) >= 2
    assert not results[0].update.reused and all(r.update.reused for r in results[1:])
    assert all(r.update.raw_label == "red" for r in results)
    assert p.stats()["live"]["reused"] == len(results) - 1


def test_demo_command_with_a_gate(tmp_path):
    """`lbedge demo --gate` on a recording of one picture repeated (tiny official-format checkpoint): every frame has
    a JSON line with `reused` and `age_s`; the summary counts the reused ones."""
    import json

    from click.testing import CliRunner

    from conftest import OFFICIAL
    from lbedge.cli import main
    from test_pipeline import colour_frames

    pytest.importorskip("torch")
    folder = colour_frames(tmp_path / "f", ["red"] * 6)
    out = tmp_path / "r.jsonl"
    args = ["demo", "-m", OFFICIAL / "image", "--rgb", folder, "-l", "a,b", "--headless", "--jsonl", out]
    r = CliRunner().invoke(main, [str(a) for a in [*args, "--gate", "0:3600"]])
    assert r.exit_code == 0, r.output
    updates = [json.loads(line)["update"] for line in out.read_text().splitlines()]
    assert [u["sequence"] for u in updates] == list(range(6))
    assert [u["reused"] for u in updates] == [False] + [True] * 5 and updates[0]["age_s"] == 0
    assert "5 reused (change gate: model skipped)" in r.output
    r = CliRunner().invoke(main, [str(a) for a in args])  # no gate: as before
    assert r.exit_code == 0, r.output
    updates = [json.loads(line)["update"] for line in out.read_text().splitlines()]
    assert [u["reused"] for u in updates] == [False] * 6 and "reused" not in r.output


def random_run(seed: int, max_batch: int) -> tuple[list, list[str], Pipeline]:
    """Random runs of red, green and blue frames with noise, 40 % of the red ones failing in the model, through a
    gate (threshold 0.05, 0.45 s or 3 frames); the results, each frame's colour and the pipeline."""
    rng = np.random.default_rng(seed)
    frames, colours = [], []
    while len(frames) < 60:
        colour = str(rng.choice(["red", "green", "blue"]))
        for _ in range(int(rng.integers(1, 12))):
            frames.append(rgb(colour, 3, len(frames), patch=colour == "red" and rng.random() < 0.4))
            colours.append(colour)
    gate = ChangeGate(threshold=0.05, max_age_s=0.45, max_age_frames=3)

    def vision(x):  # the fake encoder's colour, failing on red frames with the green patch
        time.sleep(0.003)  # slower than reading: the recording's queue fills, batches are full
        out = np.eye(3, dtype=np.float32)[x.reshape(len(x), 3, -1).mean(-1).argmax(1)]
        out[(x[:, 1].max(axis=(1, 2)) > 0) & (x.reshape(len(x), 3, -1).mean(-1).argmax(1) == 0)] = np.nan
        return out

    with Pipeline(
        {"cam": ArraySource(frames)},
        fake_encoder(vision=vision),
        LABELS,
        gate=gate,
        max_batch=max_batch,
        smoothing="none",
        sync_clock="device",
    ) as p:
        results = list(p)
    return results, colours, p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_gate_invariants_on_random_recordings_with_failures(seed, max_batch):
    """Every frame the model did not refuse has a result, in order; a reused result repeats the last classified
    result of its source (never a failed frame's), at most ``max_age_frames`` in a row and never older than
    ``max_age_s``; a colour change is classified at once."""
    results, colours, p = random_run(seed, max_batch)
    updates = [r.update for r in results]
    seqs = [u.sequence for u in updates]
    assert seqs == sorted(seqs) and len(seqs) + p.stats()["cam"]["skipped"] == len(colours)
    assert p.stats()["cam"]["skipped"] > 0 and p.stats()["cam"]["reused"] > 0  # both paths were taken
    last, in_row = None, 0
    for u in updates:
        assert u.raw_label == colours[u.sequence]  # never a stale label of another colour
        if u.reused:
            in_row += 1
            assert last is not None and (u.raw_label, u.scores) == (last.raw_label, last.scores)
            assert in_row <= 3 and u.age_s <= 0.45 + 1e-9
            assert u.age_s == pytest.approx(0.1 * (u.sequence - last.sequence), abs=1e-4)
        else:
            last, in_row = u, 0
    for i in range(1, len(colours)):
        if colours[i] != colours[i - 1] and i in seqs:
            assert not updates[seqs.index(i)].reused


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gating_does_not_depend_on_batching(seed):
    """The same recordings with failing frames, gated with batches of 1, 3 and 8: the same frames are classified,
    reused and skipped, with the same labels (a failure inside a batch re-decides that source's later frames)."""

    def summary(max_batch):
        results, _, p = random_run(seed, max_batch)
        return [(r.update.sequence, r.update.reused, r.update.raw_label) for r in results], p.stats()["cam"]["skipped"]

    assert summary(1) == summary(3) == summary(8)
