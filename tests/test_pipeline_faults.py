"""Fault injection into the pipeline: sources and models that raise anything, hang, vanish or repeat; callbacks
that fail or stop the pipeline; damaged prompt caches. Every case must end (or keep running) with events, never
hang: each test has a time limit, so a hang fails it instead of hanging CI."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from conftest import FuncBackend
from lbedge import Encoder, PreprocessConfig, SensorError
from lbedge.frames import Frame
from lbedge.pipeline import Pipeline, PipelineError, ReopenPolicy
from lbedge.sensors.base import BaseSource
from test_pipeline import LABELS, TOK, fake_encoder, word_text_tower

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


class Recording(BaseSource):
    """A recording of ``n`` coloured frames whose ``_read`` can be made to fail at chosen frames."""

    modality = "image"

    def __init__(self, n=10, fail_at=(), fail_times=1, error=None, live=False, name="rec"):
        super().__init__(name, fps=100.0)
        self.n, self.fail_at, self.live = n, set(fail_at), live
        self.error = error if error is not None else SensorError("medium error")
        self.left = {i: fail_times for i in fail_at}  # how often each frame still fails (-1: always)
        self._i = 0
        self.opens = 0

    def _open(self):
        self.opens += 1
        self._i = 0

    def _read(self):
        if self._i >= self.n:
            return None
        if self._i in self.fail_at and self.left[self._i] != 0:
            self.left[self._i] -= 1
            raise self.error
        self._i += 1
        img = np.zeros((8, 8, 3), np.uint8)
        img[..., (self._i - 1) % 3] = 255
        return img, None


def _seqs(results, name):
    return [r.update.sequence for r in results if r.update.source == name]


def test_recording_that_fails_mid_stream_resumes_without_repeating_frames():
    """A recording that failed mid-stream was reopened from frame 0 (774 results from a 20-frame recording)."""
    rec = Recording(n=20, fail_at=(5, 12), fail_times=1)
    with Pipeline({"rec": rec}, fake_encoder(), LABELS, reopen_backoff=(0.01, 0.02), smoothing="none") as p:
        results = list(p)
    assert _seqs(results, "rec") == list(range(20)) and rec.opens == 3
    assert sum("rec failed" in e for e in p.event_log) == 2
    assert sum("resumed at frame" in e for e in p.event_log) == 2


def test_recording_that_always_fails_at_one_frame_ends_with_an_event():
    """``max_reopen`` never ended it before: the failure count was reset by each good read after the reopen."""
    rec = Recording(n=20, fail_at=(7,), fail_times=-1)
    with Pipeline({"rec": rec}, fake_encoder(), LABELS, reopen_backoff=(0.01, 0.02)) as p:
        results = list(p)
    assert _seqs(results, "rec") == list(range(7))  # every good frame once, then the end
    assert any("rec gave up after 4 failures" in e for e in p.event_log)
    assert rec.opens == 4


def test_max_reopen_counts_failures_in_a_window_whatever_came_between():
    rec = Recording(n=400, fail_at=range(3, 400, 3), fail_times=1, live=False)
    policy = ReopenPolicy(backoff=(0.001, 0.001), max_failures=5, window_s=60)
    with Pipeline({"rec": rec}, fake_encoder(), LABELS, reopen=policy) as p:
        results = list(p)
    assert any("gave up after 6 failures" in e for e in p.event_log)
    seqs = _seqs(results, "rec")
    assert seqs == list(range(len(seqs))) and len(seqs) < 400


def test_live_sensor_errors_are_retried_for_ever_but_bugs_are_not():
    class Unplugged(Recording):
        def _open(self):
            raise SensorError("no such device")

    class Buggy(Recording):
        def _open(self):
            raise TypeError("unsupported operand")

    unplugged, buggy = Unplugged(live=True, name="cam"), Buggy(live=True, name="bug")
    good = Recording(n=5, name="good")
    p = Pipeline(
        {"cam": unplugged, "bug": buggy, "good": good},
        fake_encoder(),
        LABELS,
        reopen=ReopenPolicy(backoff=(0.005, 0.01)),
    )
    with p:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum("cam failed" in e for e in p.event_log) < 8:
            time.sleep(0.02)
        log = list(p.event_log)
    assert sum("cam failed" in e for e in log) >= 8 and not any("cam gave up" in e for e in log)
    assert any("bug gave up after 4 failures" in e and "TypeError: unsupported operand" in e for e in log)
    assert p.processed["good"] == 5


@pytest.mark.parametrize(
    "error", [ValueError("odd rate"), KeyError("sample_rate"), ZeroDivisionError("size 0"), MemoryError()]
)
def test_any_exception_from_preprocessing_skips_the_frame_not_the_pipeline(error):
    """A bad prompt cache, a bundle with preprocess.size 0, a WAV at an odd rate: the thread died, demo hung."""
    enc = fake_encoder()
    calls = []

    def preprocess(frame):
        calls.append(1)
        if len(calls) % 2 == 0:
            raise error
        return np.zeros((1, 3, 224, 224), np.float32)

    enc.preprocess_frame = preprocess
    with Pipeline({"rec": Recording(n=10)}, enc, LABELS, smoothing="none") as p:
        results = list(p)
    assert len(results) == 5 and p.stats()["rec"]["skipped"] == 5
    assert any("frame 1 skipped" in e and type(error).__name__ in e for e in p.event_log)
    assert not [t for t in p.threads if t.is_alive()]


def test_a_source_whose_every_frame_fails_is_ended():
    enc = fake_encoder()
    enc.preprocess_frame = lambda frame: 1 / 0
    with Pipeline({"rec": Recording(n=10**6)}, enc, LABELS, max_bad_frames=20) as p:
        results = list(p)
    assert results == [] or all(not r for r in results)
    assert any("last 20 frames could not be used" in e for e in p.event_log)
    skipped = [e for e in p.event_log if "skipped" in e]
    assert len(skipped) == 3  # reported, not 20 identical warnings


def test_audio_frame_without_a_sample_rate_is_skipped_with_a_reason():
    class NoRate(Recording):
        modality = "audio"

        def _read(self):
            got = super()._read()
            return None if got is None else (np.zeros((1, 16000), np.float32), None)

    with Pipeline({"mic": NoRate(n=3)}, fake_encoder("audio"), LABELS) as p:
        results = list(p)
    assert results == [] and any("without meta['sample_rate']" in e for e in p.event_log)


def test_model_failures_of_any_type_cost_only_the_frame():
    enc = fake_encoder()
    inner = enc.vision.fn

    def vision(x):
        if (x.reshape(len(x), -1).max(1) > 100).any():
            raise RuntimeError("CUDA error: an illegal memory access")
        return inner(x)

    enc.vision.fn = vision
    enc.preprocess_frame = lambda f: np.full((1, 3, 224, 224), 1000.0 if f.data[0, 0, 2] else 0.0, np.float32)
    with Pipeline({"rec": Recording(n=9)}, enc, LABELS, smoothing="none") as p:
        results = list(p)
    assert _seqs(results, "rec") == [0, 1, 3, 4, 6, 7]
    assert any("RuntimeError: CUDA error" in e for e in p.event_log)


def test_a_failing_worker_ends_iteration_with_an_error():
    p = Pipeline({"rec": Recording(n=50)}, fake_encoder(), LABELS)

    def broken(*a, **kw):
        raise AssertionError("a bug in the fusion code")

    p._result = broken
    with pytest.raises(PipelineError, match="AssertionError: a bug in the fusion code"):
        with p:
            list(p)
    assert not [t for t in p.threads if t.is_alive()]
    assert any("worker failed" in e for e in p.event_log)


def test_model_with_wrong_output_shape_is_reported_per_frame():
    enc = fake_encoder(vision=lambda x: np.ones((len(x), 5), np.float32))  # 5-d embeddings, 3-d text
    with Pipeline({"rec": Recording(n=4)}, enc, LABELS) as p:
        results = list(p)
    assert results == [] and p.stats()["rec"]["skipped"] == 4


def test_damaged_prompt_cache_file_does_not_hang_the_pipeline(tmp_path, monkeypatch):
    """An .npy of the wrong shape in $LBEDGE_CACHE/prompts made the worker die and `lbedge demo` hang."""
    from lbedge.zeroshot import TEMPLATES, PromptCache

    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "c"))
    enc = fake_encoder()
    prompts = [t.replace("{}", label) for label in LABELS for t in TEMPLATES["image"]]
    cache = PromptCache()
    cache.directory.mkdir(parents=True)
    np.save(cache.directory / f"{cache.key(enc.text_fingerprint, prompts)}.npy", np.ones((len(prompts), 7), np.float32))
    with Pipeline({"rec": Recording(n=6)}, enc, LABELS, smoothing="none") as p:
        results = list(p)
    assert len(results) == 6
    assert np.load(cache.directory / f"{cache.key(enc.text_fingerprint, prompts)}.npy").shape == (len(prompts), 3)


class Hanging(BaseSource):
    """Delivers ``good`` frames, then blocks in read() (a wedged driver) until released."""

    modality, live = "image", True

    def __init__(self, good=3):
        super().__init__("hang", fps=30.0)
        self.good, self.release = good, threading.Event()

    def _open(self):
        pass

    def _read(self):
        if self.good <= 0:
            self.release.wait()
            return None
        self.good -= 1
        return np.zeros((8, 8, 3), np.uint8), None


def test_a_stalled_source_is_reported_and_others_go_on():
    hang = Hanging()
    steady = Recording(n=10**6, name="steady", live=True)
    p = Pipeline({"hang": hang, "steady": steady}, fake_encoder(), LABELS, stall_timeout=0.3)
    try:
        with p:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("hang stalled" in e for e in p.event_log):
                time.sleep(0.02)
            before = p.processed["steady"]
            time.sleep(0.2)
            assert p.processed["steady"] > before  # the others go on
            assert any("hang stalled: no frame for" in e for e in p.event_log)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 6  # stop() is bounded even so
    finally:
        hang.release.set()


def test_a_source_is_not_stalled_by_the_time_before_it_opened():
    """A stall counts from the source's opening: a pipeline created long before start() (a demo preparing its
    recordings) reports none for a source that delivers as soon as it is open."""

    class SlowStart(Recording):
        def _read(self):
            if self._i == 0:
                time.sleep(0.3)  # the first frame comes a little after the opening, well within the timeout
            return super()._read()

    rec = SlowStart(n=20, name="rec", live=True)
    p = Pipeline({"rec": rec}, fake_encoder(), LABELS, stall_timeout=1.0)
    time.sleep(1.5)  # longer than the stall timeout, before anything was opened
    with p:
        results = list(p)  # a live source keeps only its newest frame: how many of the 20 are classified varies
    assert results and results[-1].update.source == "rec"
    assert not [e for e in p.event_log if "stalled" in e], p.event_log


def test_stop_from_a_callback_is_clean(caplog):
    caplog.set_level(logging.ERROR)
    p = Pipeline({"rec": Recording(n=10**6, live=True)}, fake_encoder(), LABELS)
    seen = []

    def stop_after_three(result):
        seen.append(result)
        if len(seen) == 3:
            p.stop()

    p.on_result(stop_after_three)
    with p:
        results = list(p)
    assert 3 <= len(seen) <= 4 and len(results) <= len(seen)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # no spurious error
    assert not [t for t in p.threads if t.is_alive()]


def test_an_empty_recording_ends_with_an_event_that_says_so():
    with Pipeline({"rec": Recording(n=0)}, fake_encoder(), LABELS) as p:
        assert list(p) == []
    assert any("ended without delivering a frame" in e for e in p.event_log)


def test_custom_source_without_seek_is_resumed_by_reading():
    class Plain:
        """A recording with only the bare protocol (no seek): restarts at frame 0 when reopened."""

        modality, live, name = "image", False, "plain"

        def __init__(self):
            self.i, self.failed = 0, False

        def open(self):
            self.i = 0

        def read(self, timeout=None):
            if self.i == 4 and not self.failed:
                self.failed = True
                raise OSError("read error")
            if self.i >= 8:
                return None
            self.i += 1
            img = np.zeros((8, 8, 3), np.uint8)
            return Frame(img, "image", time.monotonic(), self.i - 1)

        def close(self):
            pass

    with Pipeline({"plain": Plain()}, fake_encoder(), LABELS, reopen_backoff=(0.01, 0.01)) as p:
        results = list(p)
    assert _seqs(results, "plain") == list(range(8))


def test_reopen_policy_is_validated():
    from lbedge.errors import LBEdgeError

    with pytest.raises(LBEdgeError, match="backoff"):
        ReopenPolicy(backoff=(0.0, 1.0))
    with pytest.raises(LBEdgeError, match="stall_timeout"):
        Pipeline({"rec": Recording()}, fake_encoder(), LABELS, stall_timeout=0)


def test_encoder_of_a_fake_tower_still_works_with_the_real_tokenizer():
    """The test doubles above use the real CLIP tokenizer: guard against a silent change of it."""
    enc = Encoder(
        modality="image",
        preprocess_config=PreprocessConfig("image"),
        vision=FuncBackend(lambda x: np.ones((len(x), 3), np.float32), "x"),
        text=word_text_tower(LABELS),
        tokenizer=TOK,
        logit_scale=1.0,
        embed_dim=3,
        text_fingerprint="t",
    )
    assert enc.embed_text(["a photo of a red"]).shape == (1, 3)


class Stamped(Recording):
    """A recording whose frames carry their own stamps ``start + i * step`` (``times`` overrides them), with an
    optional slow opening or a read that hangs at one frame until ``release`` is set."""

    def __init__(self, n, start=0.0, step=0.1, open_delay=0.0, times=None, hang_at=None, name="rec"):
        super().__init__(n=n, name=name)
        self.times = times if times is not None else [start + i * step for i in range(n)]
        self.open_delay, self.hang_at, self.release = open_delay, hang_at, threading.Event()

    def _open(self):
        time.sleep(self.open_delay)
        super()._open()

    def _read(self):
        if self._i == self.hang_at and not self.release.is_set():
            self.release.wait(30)
        i = self._i
        got = super()._read()
        return None if got is None else (got[0], self.times[i])


def _replay(sources, **kw):
    with Pipeline(sources, fake_encoder(), LABELS, smoothing="none", **kw) as p:
        got = [(r.update.source, r.update.frame.device_timestamp) for r in p]
    return got, p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("max_batch", [1, 4])
def test_recordings_replay_in_time_order_whatever_opens_first(max_batch):
    """Recordings read as fast as possible are classified in the order of their frames' stamps across sources,
    even when one of them takes long to open (the others used to run through before it delivered anything), so a
    replay gives the same results, fused stream and watch events every time."""
    runs = []
    for slow in ("a", "c"):
        sources = {
            "a": Stamped(15, 0.00, name="a", open_delay=0.5 if slow == "a" else 0.0),
            "b": Stamped(15, 0.05, name="b"),
            "c": Stamped(10, 0.02, step=0.15, name="c", open_delay=0.5 if slow == "c" else 0.0),
        }
        got, _ = _replay(sources, max_batch=max_batch)
        assert len(got) == 40
        assert [t for _, t in got] == sorted(t for _, t in got), got
        runs.append(got)
    assert runs[0] == runs[1]


@pytest.mark.timeout(60)
def test_a_looping_recording_does_not_starve_the_others():
    """A recording that starts over (its stamps jump back) keeps its place in the replay order: it does not come
    first for ever while the other recordings wait."""
    looped = Stamped(12, name="loop", times=[i % 4 * 0.1 for i in range(12)])  # three passes over 0.0..0.3 s
    other = Stamped(12, 0.05, name="other")
    got, _ = _replay({"loop": looped, "other": other})
    assert sorted(got) == sorted(
        [("loop", i % 4 * 0.1) for i in range(12)] + [("other", 0.05 + i * 0.1) for i in range(12)]
    )
    order = [s for s, _ in got]
    last_loop = len(order) - 1 - order[::-1].index("loop")
    assert order[:last_loop].count("other") >= 8, order  # its passes follow one another in time, between the other's


@pytest.mark.timeout(60)
def test_a_stalled_recording_does_not_hold_the_others():
    """A recording whose read hangs is reported stalled and no longer waited for; its frames come when it
    recovers."""
    stuck = Stamped(6, name="stuck", hang_at=2)
    fine = Stamped(10, 0.05, name="fine")
    seen = []

    def on_result(result):
        seen.append(result.update.source)
        if seen.count("fine") == 10:
            stuck.release.set()  # recovers once every other frame came through

    with Pipeline({"stuck": stuck, "fine": fine}, fake_encoder(), LABELS, stall_timeout=0.3) as p:
        p.on_result(on_result)
        results = list(p)
    assert sorted(seen) == ["fine"] * 10 + ["stuck"] * 6
    assert [r.update.source for r in results][:2] == ["stuck", "fine"]
    assert any("source stuck stalled" in e for e in p.event_log), p.event_log
