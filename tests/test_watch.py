"""Watches (lbedge.watch): the watch file, the event state machine on synthetic score streams, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbedge.errors import InputError
from lbedge.frames import Frame
from lbedge.pipeline import Result, SourceResult
from lbedge.watch import (
    Detector,
    Interval,
    ScoreRecorder,
    TimeFusion,
    WatchConfig,
    WatchEngine,
    calibrate,
    load_truth,
    threshold_for_rate,
)

BASIC = """
[watch]
name = "test"
templates = ["a {}"]
labels = ["floor"]

[detectors.ball]
prompts = ["ball", "sphere"]
negatives = ["ring"]
sources = ["rgb", "fused"]
threshold = 0.6
min_duration = 0.5
hysteresis = 0.2
cooldown = 1.0

[detectors.box]
prompts = ["box"]
"""


def config(**ball) -> WatchConfig:
    """A watch with a 'ball' detector (fields from ``ball``) and a 'box' detector to compete with."""
    kw = dict(name="ball", prompts=("ball",), sources=("rgb",), threshold=0.5, hysteresis=0.1)
    kw.update(ball)
    return WatchConfig((Detector(**kw), Detector("box", ("box",), threshold=1.0)))  # box: never fires here


def feed(engine: WatchEngine, stream: str, series, dt: float = 0.1, t0: float = 0.0):
    """Feed ball probabilities ``series`` at ``dt`` steps; returns the events sent."""
    out = []
    for i, p in enumerate(series):
        out += engine.observe(stream, t0 + i * dt, {"ball": p, "box": 1 - p})
    return out


# --- the watch file ------------------------------------------------------------------------------------------------
def test_watch_file_parses_with_defaults_and_round_trips(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text(BASIC)
    cfg = WatchConfig.load(path)
    assert cfg.name == "test" and cfg.templates == ("a {}",) and cfg.labels == ("floor",)
    ball, box = cfg.detectors
    assert ball.prompts == ("ball", "sphere") and ball.negatives == ("ring",) and ball.sources == ("rgb", "fused")
    assert (ball.threshold, ball.min_duration, ball.hysteresis, ball.cooldown) == (0.6, 0.5, 0.2, 1.0)
    assert box.sources == ("*",) and box.threshold == 0.5 and box.min_duration == 0.0
    assert cfg.label_set() == ["ball", "sphere", "ring", "box", "floor"]
    assert ball.score({"ball": 0.3, "sphere": 0.25, "ring": 0.4}) == pytest.approx(0.55)
    assert box.streams(["rgb", "depth"]) == ["rgb", "depth"] and ball.streams(["rgb", "depth"]) == ["rgb", "fused"]
    tuned = cfg.replace_detector(
        Detector("ball", ("ball", "sphere"), thresholds={"rgb": 0.7}, calibration={"rgb": {"negatives": 3}})
    )
    back = WatchConfig.from_toml(tuned.to_toml())
    assert back.detectors == tuned.detectors and back.labels == tuned.labels and back.templates == tuned.templates
    assert back.detector("ball").threshold_for("rgb") == 0.7 and back.detector("ball").threshold_for("depth") == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[detectors.a\nprompts=1", "not valid TOML"),
        ("[watch]\nname = 'x'\n", "no detectors"),
        ("[detectors.a]\nprompts = []\n[detectors.b]\nprompts=['b']", "prompts is empty"),
        ("[detectors.a]\nthreshold = 0.5\n[detectors.b]\nprompts=['b']", "no prompts"),
        ("[detectors.a]\nprompts = ['a']\nthreshold = 1.5\n[detectors.b]\nprompts=['b']", "threshold is a score"),
        ("[detectors.a]\nprompts = ['a']\nthreshold = 0\n[detectors.b]\nprompts=['b']", "threshold is a score"),
        ("[detectors.a]\nprompts = ['a']\nthreshold = 'high'\n[detectors.b]\nprompts=['b']", "must be a number"),
        ("[detectors.a]\nprompts = ['a']\nhysteresis = 0.6\n[detectors.b]\nprompts=['b']", "hysteresis must be"),
        ("[detectors.a]\nprompts = ['a']\nmin_duration = -1\n[detectors.b]\nprompts=['b']", "min_duration must be"),
        ("[detectors.a]\nprompts = ['a']\ncooldown = true\n[detectors.b]\nprompts=['b']", "must be a number"),
        ("[detectors.a]\nprompts = ['a']\nthersh = 0.5\n[detectors.b]\nprompts=['b']", "unknown key(s) thersh"),
        ("[watch]\nlables = ['x']\n[detectors.a]\nprompts = ['a', 'b']", "unknown key(s) lables"),
        ("[detector.a]\nprompts = ['a', 'b']", "unknown top-level key(s) detector"),
        ("[detectors.a]\nprompts = ['a']", "one label"),
        ("[detectors.a]\nprompts = ['a']\nnegatives = ['a']", "both a prompt and a negative"),
        ("[detectors.a]\nprompts = ['a', '']\n[detectors.b]\nprompts=['b']", "non-empty strings"),
        ("[detectors.a]\nprompts = ['a']\nsources = []\n[detectors.b]\nprompts=['b']", "sources must be"),
        ("[watch]\ntemplates = ['a photo']\n[detectors.a]\nprompts = ['a', 'b']", "templates must be"),
        ("detectors = 3", "no detectors"),
        ("[detectors]\na = 3", "must be a table"),
    ],
)
def test_bad_watch_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match="bad.toml") as info:
        WatchConfig.load(path)
    assert message in str(info.value)


def test_missing_or_binary_watch_file_and_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="not found"):
        WatchConfig.load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="UTF-8"):
        WatchConfig.load(tmp_path / "bin.toml")
    cfg = config(sources=("lidar",))
    with pytest.raises(InputError, match="reads source 'lidar', but the sources are rgb, depth"):
        WatchEngine(cfg, ["rgb", "depth"])
    with pytest.raises(InputError, match="clock"):
        WatchEngine(config(), clock="gps")


# --- the state machine ---------------------------------------------------------------------------------------------
def test_onset_waits_for_min_duration_by_frame_time():
    eng = WatchEngine(config(min_duration=0.3))
    sent = feed(eng, "rgb", [0.1, 0.6, 0.7, 0.6, 0.9, 0.8, 0.1])
    start, end = sent
    assert start.kind == "start" and start.start == pytest.approx(0.1) and start.confirmed == pytest.approx(0.4)
    assert end.kind == "end" and end.end == pytest.approx(0.6) and end.reason == "below"
    assert end.peak == pytest.approx(0.9) and end.peak_time == pytest.approx(0.4) and end.sources == ["rgb"]
    assert end.duration == pytest.approx(0.5) and eng.events == [end] and eng.history == sent


def test_a_blip_shorter_than_min_duration_is_no_event():
    eng = WatchEngine(config(min_duration=0.3))
    assert feed(eng, "rgb", [0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.2]) == []  # 0.2 s above, twice
    assert eng.close() == []


def test_min_duration_zero_starts_on_the_first_frame_and_time_not_frame_count_matters():
    eng = WatchEngine(config(min_duration=0.0))
    (start,) = feed(eng, "rgb", [0.1, 0.8])
    assert start.start == start.confirmed == pytest.approx(0.1)
    slow = WatchEngine(config(min_duration=1.0))  # 2 frames 1 s apart confirm; 10 frames 0.1 s apart do not
    assert [e.kind for e in feed(slow, "rgb", [0.8, 0.8], dt=1.0)] == ["start"]
    fast = WatchEngine(config(min_duration=1.0))
    assert feed(fast, "rgb", [0.8] * 10, dt=0.1) == []


def test_hysteresis_keeps_an_event_through_dips():
    eng = WatchEngine(config(threshold=0.5, hysteresis=0.2))
    sent = feed(eng, "rgb", [0.8, 0.45, 0.35, 0.6, 0.31, 0.29, 0.9])
    assert [e.kind for e in sent] == ["start", "end", "start"]
    assert sent[1].end == pytest.approx(0.5)  # 0.29 < 0.5 - 0.2; 0.45, 0.35, 0.31 did not end it
    no_h = WatchEngine(config(threshold=0.5, hysteresis=0.0))
    assert [e.kind for e in feed(no_h, "rgb", [0.8, 0.45, 0.8])] == ["start", "end", "start"]


def test_cooldown_holds_back_the_next_event():
    eng = WatchEngine(config(cooldown=0.5))
    sent = feed(eng, "rgb", [0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert [e.kind for e in sent] == ["start", "end", "start"]
    assert sent[1].end == pytest.approx(0.1) and sent[2].start == pytest.approx(0.6)  # not before 0.1 + 0.5
    none = WatchEngine(config(cooldown=0.0))
    assert [e.start for e in feed(none, "rgb", [0.9, 0.1, 0.9]) if e.kind == "start"] == pytest.approx([0.0, 0.2])


def test_end_of_stream_closes_open_events_and_drops_pending_ones():
    eng = WatchEngine(config(min_duration=0.2))
    feed(eng, "rgb", [0.9, 0.9, 0.9, 0.95, 0.9])
    feed(eng, "depth", [0.9])  # not a stream of this detector: nothing
    (end,) = eng.close()
    assert end.kind == "end" and end.reason == "end of stream" and end.end == pytest.approx(0.4)
    assert end.peak == pytest.approx(0.95) and eng.close() == [] and eng.active() == []
    pending = WatchEngine(config(min_duration=1.0))
    feed(pending, "rgb", [0.9, 0.9])
    assert pending.close() == []


def test_time_going_back_ends_the_event_and_starts_afresh():
    eng = WatchEngine(config())
    feed(eng, "rgb", [0.9, 0.9, 0.9], t0=5.0)
    sent = feed(eng, "rgb", [0.9], t0=0.0)  # a looped recording
    assert [(e.kind, e.reason) for e in sent] == [("end", "time went back"), ("start", "")]
    assert sent[0].end == pytest.approx(5.2) and sent[1].start == 0.0


def test_each_stream_has_its_own_state_and_per_stream_thresholds():
    eng = WatchEngine(config(sources=("*",), thresholds={"depth": 0.8}), ["rgb", "depth"])
    sent = []
    for i, (a, b) in enumerate([(0.6, 0.6), (0.7, 0.85), (0.1, 0.85)]):
        sent += eng.observe("rgb", i * 0.1, {"ball": a, "box": 1 - a})
        sent += eng.observe("depth", i * 0.1, {"ball": b, "box": 1 - b})
    assert [(e.stream, e.kind, round(e.start, 2)) for e in sent] == [
        ("rgb", "start", 0.0),
        ("depth", "start", 0.1),
        ("rgb", "end", 0.0),
    ]
    assert sent[1].threshold == 0.8 and sent[0].threshold == 0.5
    assert {e.stream for e in eng.active()} == {"depth"}


def source_result(name: str, t: float, scores: dict, seq: int = 0) -> SourceResult:
    frame = Frame(np.zeros((2, 2, 3), np.uint8), "image", 1000.0 + t, seq, device_timestamp=t, source=name)
    return SourceResult(name, "image", seq, frame.timestamp, max(scores, key=scores.get), scores, "", 0, 0, frame=frame)


def result(update: SourceResult, *_unused) -> Result:
    """The pipeline's Result of one source's update (the engine fuses the sources itself)."""
    return Result(0.0, update, {update.source: update}, update.label, dict(update.scores), [update.source])


def test_fused_and_per_source_streams_from_pipeline_results():
    cfg = config(sources=("rgb", "fused"), threshold=0.6)
    events = []
    eng = WatchEngine(cfg, ["rgb", "depth"], callback=events.append)
    for i, (p, q) in enumerate([(0.5, 0.9), (0.5, 0.9), (0.05, 0.5)]):
        rgb = source_result("rgb", i * 0.1, {"ball": p, "box": 1 - p}, i)
        depth = source_result("depth", i * 0.1, {"ball": q, "box": 1 - q}, i)
        eng.update(result(rgb))
        eng.update(result(depth))
    eng.close()
    assert [(e.stream, e.kind) for e in events] == [("fused", "start"), ("fused", "end")]  # rgb alone never fired
    start, end = events
    assert start.start == 0.0 and end.end == pytest.approx(0.2) and end.reason == "below"
    assert start.peak == pytest.approx(0.7) and end.sources == ["depth"]  # only depth's own score reached 0.6
    assert end.snapshot is not None and end.snapshot.sequence == 0 and end.to_dict()["snapshot"]["source"] == "rgb"
    d = end.to_dict()
    assert d["event"] == "end" and d["detector"] == "ball" and d["duration"] == pytest.approx(0.2)
    # a result classified before the watch's labels were added (no 'box') is skipped, not scored as 0
    eng.update(result(source_result("rgb", 1.0, {"ball": 0.9})))
    assert eng.skipped == 1 and len(events) == 2


def test_fusion_by_frame_time_does_not_depend_on_arrival_order():
    """The fused stream of recordings is the same however the sources' results interleave (the pipeline reads
    recordings as fast as it can, each source in its own thread)."""
    rng = np.random.default_rng(1)
    series = {n: [(i * 0.125, float(rng.uniform())) for i in range(40)] for n in ("rgb", "depth", "thermal")}

    def run(order):
        cfg = config(sources=("fused",), threshold=0.55, hysteresis=0.1, min_duration=0.25)
        eng = WatchEngine(cfg, ["rgb", "depth", "thermal"])
        samples = []
        eng.score_hook = lambda det, stream, t, score: samples.append((det, t, round(score, 9)))
        for name, k in order:
            t, p = series[name][k]
            eng.update(result(source_result(name, t, {"ball": p, "box": 1 - p}, k)))
        eng.close()
        fused = [x for x in samples if x[0] == "ball"]  # (box reads each source: those come in arrival order)
        return fused, [(e.kind, e.start, e.end, e.sources) for e in eng.history if e.detector == "ball"]

    lockstep = [(n, k) for k in range(40) for n in ("rgb", "depth", "thermal")]
    bursts = [(n, k) for b in range(0, 40, 8) for n in ("thermal", "rgb", "depth") for k in range(b, b + 8)]
    a, b = run(lockstep), run(bursts)
    assert a == b and a[1]  # the same fused scores and events
    fused = a[0]
    assert len(fused) == 40 and fused[3][2] == pytest.approx(np.mean([series[n][3][1] for n in series]))


def test_time_fusion_waits_for_sources_within_skew_and_not_for_ended_ones():
    fusion = TimeFusion(tolerance=0.25, skew=1.0, sources=["rgb", "audio"])
    assert fusion.add("rgb", 0.0, {"a": 1.0}) == []  # waits for audio, which has not delivered yet
    (both,) = fusion.add("audio", 0.0, {"a": 0.0})
    assert both.time == 0.0 and both.probabilities == {"a": 0.5} and set(both.sources) == {"rgb", "audio"}
    assert fusion.add("rgb", 0.5, {"a": 1.0}) == []  # waits for audio (0.5 s behind: within skew)
    late, now = fusion.add("rgb", 1.5, {"a": 0.8})  # audio 1.5 s behind: no longer waited for
    assert late.time == 0.5 and late.probabilities == {"a": 1.0} and list(late.sources) == ["rgb"]  # 0.0 too old
    assert now.time == 1.5 and now.probabilities == {"a": 0.8} and fusion.flush() == []
    assert fusion.add("rgb", 0.0, {"a": 0.2}) == []  # a looped recording: starts afresh, waits for audio again
    (again,) = fusion.flush()  # the end of the stream: nothing waits
    assert again.time == 0.0 and again.probabilities == {"a": 0.2}
    live = TimeFusion(skew=0.0, sources=["rgb", "thermal"])  # live: fused as results arrive, nothing held
    assert [x.time for x in live.add("rgb", 10.0, {"a": 1.0})] == []  # the very first waits for one more
    assert [x.time for x in live.add("rgb", 10.1, {"a": 1.0})] == [10.0, 10.1]
    assert [x.time for x in live.add("thermal", 10.05, {"a": 0.0})] == []  # late: fused in, no sample of its own
    (now,) = live.add("rgb", 10.2, {"a": 1.0})
    assert now.time == 10.2 and set(now.sources) == {"rgb", "thermal"} and now.probabilities["a"] == 0.5
    alone = TimeFusion()  # no sources named: each fuses once it delivered
    assert [x.time for x in alone.add("rgb", 0.0, {"a": 1.0})] == [0.0]


def test_host_clock_uses_capture_times():
    eng = WatchEngine(config(), ["rgb"], clock="host")
    rgb = source_result("rgb", 0.0, {"ball": 0.9, "box": 0.1})
    (start,) = eng.update(result(rgb, {}, {"ball": 0.9, "box": 0.1}, ["rgb"]))
    assert start.start == 1000.0


# --- calibration --------------------------------------------------------------------------------------------------
def test_threshold_for_a_false_alarm_rate():
    negatives = [i / 100 for i in range(100)]  # 0.00 .. 0.99
    th = threshold_for_rate(negatives, 0.05)
    assert sum(s >= th for s in negatives) <= 5 and sum(s >= th - 0.011 for s in negatives) > 5
    assert threshold_for_rate([0.01] * 10, 0.0) == 0.05  # the floor
    assert threshold_for_rate([1.0] * 10, 0.0) == 1.0
    with pytest.raises(InputError, match="false-alarm rate"):
        threshold_for_rate(negatives, 1.5)


def test_calibrate_from_empty_scene_and_from_labelled_clips():
    cfg = config(sources=("rgb", "depth"), hysteresis=0.1)
    rng = np.random.default_rng(0)
    empty_rgb = [(i * 0.1, float(s)) for i, s in enumerate(rng.uniform(0.0, 0.3, 200))]
    empty_depth = [(i * 0.1, float(s)) for i, s in enumerate(rng.uniform(0.0, 0.7, 200))]
    tuned, rows = calibrate(cfg, {("ball", "rgb"): empty_rgb, ("ball", "depth"): empty_depth}, false_alarm_rate=0.01)
    ball = tuned.detector("ball")
    assert 0.25 < ball.thresholds["rgb"] <= 0.31 and 0.6 < ball.thresholds["depth"] <= 0.71
    assert {r["stream"]: r["frame_false_alarm_rate"] <= 0.01 for r in rows} == {"rgb": True, "depth": True}
    assert ball.calibration["rgb"]["negatives"] == 200 and ball.calibration["false_alarm_rate"] == 0.01
    assert tuned.detector("box") == cfg.detector("box")  # no scores of it: unchanged
    again = WatchConfig.from_toml(tuned.to_toml())
    assert again.detector("ball").thresholds == ball.thresholds and again.detector("ball").calibration["rgb"]

    truth = [Interval(0.0, 10.0, frozenset()), Interval(10.0, 20.0, frozenset({"ball"}))]
    series = [(i * 0.1, 0.2 if i < 100 else 0.8) for i in range(200)] + [(30.0, 0.99)]  # 30 s: outside the truth
    tuned, (row,) = calibrate(config(), {("ball", "rgb"): series}, false_alarm_rate=0.0, truth=truth)
    assert row["negatives"] == 100 and row["positives"] == 100 and row["frame_recall"] == 1.0
    assert tuned.detector("ball").thresholds["rgb"] == pytest.approx(0.2001)
    assert "note" not in row
    _, (row,) = calibrate(config(), {("ball", "rgb"): series}, false_alarm_rate=0.001, truth=truth)
    assert "too few to measure a rate of 0.001" in row["note"]  # 100 negative frames


def test_calibration_lowers_a_hysteresis_the_threshold_leaves_no_room_for():
    cfg = config(hysteresis=0.3, threshold=0.5)
    tuned, _ = calibrate(cfg, {("ball", "rgb"): [(0, 0.01)] * 20}, false_alarm_rate=0.0)
    ball = tuned.detector("ball")
    assert ball.thresholds["rgb"] == 0.05 and ball.hysteresis == 0.025


def test_truth_files_and_the_score_recorder(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text('[{"start": 0, "end": 2, "present": ["ball"]}, {"start": 2, "end": 4, "present": []}]')
    truth = load_truth(path, ["ball", "box"])
    assert truth[0].covers(1.9) and not truth[0].covers(2.0) and truth[1].present == frozenset()
    path.write_text('[{"start": 0, "end": 2, "present": ["bal"]}]')
    with pytest.raises(InputError, match="unknown detector"):
        load_truth(path, ["ball", "box"])
    path.write_text('[{"start": 2, "end": 1}]')
    with pytest.raises(InputError, match="start < end"):
        load_truth(path)
    path.write_text("{")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        load_truth(path)
    rec = ScoreRecorder(config(sources=("rgb", "fused")), ["rgb", "depth"])
    rec.update(result(source_result("rgb", 0.5, {"ball": 0.7, "box": 0.3})))
    rec.update(result(source_result("depth", 0.5, {"ball": 0.5, "box": 0.5})))
    rec.close()
    assert rec.scores[("ball", "rgb")] == [(0.5, 0.7)] and rec.scores[("ball", "fused")] == [(0.5, pytest.approx(0.6))]
    assert rec.scores[("box", "rgb")] == [(0.5, 0.3)] and ("box", "fused") not in rec.scores
    assert ("ball", "depth") not in rec.scores  # the ball detector reads rgb and fused


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    steps=st.lists(st.sampled_from([0.05, 0.1, 0.125, 0.5]), min_size=60, max_size=60),
    min_duration=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
    hysteresis=st.sampled_from([0.0, 0.1, 0.3]),
    cooldown=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_events_are_well_formed_for_any_score_stream(scores, steps, min_duration, hysteresis, cooldown):
    """Whatever the scores: every start is ended exactly once (close() at the end), events of a stream never overlap,
    each lasted min_duration above the threshold before it was confirmed, and cooldowns are kept."""
    cfg = config(threshold=0.5, min_duration=min_duration, hysteresis=hysteresis, cooldown=cooldown)
    eng = WatchEngine(cfg)
    times = np.concatenate([[0.0], np.cumsum(steps)])[: len(scores)]
    for t, p in zip(times, scores):
        eng.observe("rgb", float(t), {"ball": p, "box": 1 - p})
    eng.close()
    hist = [e for e in eng.history if e.detector == "ball"]
    assert [e.kind for e in hist] == ["start", "end"] * (len(hist) // 2)
    by_time = dict(zip(times.tolist(), scores))
    last_end = -np.inf
    for start, end in zip(hist[::2], hist[1::2]):
        assert (start.start, start.confirmed) == (end.start, end.confirmed)
        assert start.start <= start.confirmed <= end.end and end.peak >= 0.5
        assert start.confirmed - start.start >= min_duration - 1e-9
        assert all(s >= 0.5 for t, s in by_time.items() if start.start <= t <= start.confirmed)  # above throughout
        assert start.start >= last_end + cooldown - 1e-9 if last_end > -np.inf else True
        if end.reason == "below":
            assert by_time[end.end] < 0.5 - hysteresis
        else:
            assert end.reason == "end of stream" and end.end == times[-1]
        last_end = end.end
