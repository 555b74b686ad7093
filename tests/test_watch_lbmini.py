"""Watches end to end on lb-mini's world: recorded held-out scenes with known objects, the example watch file through
the pipeline (Pipeline.watch), the `lbedge watch` command (run and calibrate) and the evaluation's scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LBMINI, ROOT
from lbedge.cli import main
from lbedge.errors import InputError
from lbedge.watch import FUSED, Detector, WatchConfig

pytestmark = pytest.mark.timeout(300)
EXAMPLE = ROOT / "examples" / "watches" / "lbmini.toml"
OBJECTS = ("ball", "box", "cone", "ring", "bar")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, lb_mini_text) -> Path:
    """lb-mini's committed bundles with their text bundle beside them."""
    if Path(lb_mini_text) == LBMINI / "text":
        return LBMINI
    root = tmp_path_factory.mktemp("lb-mini") / "bundles"
    shutil.copytree(LBMINI, root, ignore=shutil.ignore_patterns("text", "student"))
    shutil.copytree(lb_mini_text, root / "text")
    return root


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """Eight held-out scenes of the world as recordings (RGB MP4, depth, 16-bit thermal), with their truth."""
    from lbedge.lbmini.demo import demo_media

    return demo_media(tmp_path_factory.mktemp("watch") / "media", scenes=8, seed=3)


def encoders(bundles: Path) -> dict:
    from lbedge import load_bundle

    return {m: load_bundle(bundles / m) for m in ("image", "depth", "thermal")}


def test_example_watch_file_has_detectors_for_every_object():
    cfg = WatchConfig.load(EXAMPLE)
    assert len(cfg.detectors) >= 3 and set(cfg.names()) == set(OBJECTS)
    assert all(FUSED in d.sources for d in cfg.detectors) and cfg.templates == ("a {}",)


def test_pipeline_watch_on_recorded_scenes_finds_the_objects(bundles, media):
    """Pipeline.watch adds the watch's prompts to a pipeline built with only two labels; on eight recorded scenes
    the detectors fire on the objects present, per source and fused, and the same recording gives the same
    events twice, per source and fused (frame times, not wall-clock)."""
    from lbedge import Pipeline
    from lbedge.lbmini.demo import demo_sources
    from lbedge.lbmini.watch_eval import occurrences, score_events

    cfg = WatchConfig.load(EXAMPLE)
    truth = occurrences(media)
    runs = []
    for _ in range(2):
        sources = {n: s for n, s in demo_sources(media, realtime=False).items() if n != "audio"}
        pipe = Pipeline(
            sources,
            encoders(bundles),
            ["ball", "box"],
            templates=["a {}"],
            smoothing="none",
            sync_clock="device",
            max_batch=1,
        )
        with pytest.raises(InputError, match="reads source 'lidar'"):  # refused before anything changes
            pipe.watch(WatchConfig((Detector("x", ("ball",), sources=("lidar",)), Detector("y", ("box",)))))
        assert pipe.labels == ["ball", "box"]
        seen = []
        engine = pipe.watch(cfg, seen.append)
        assert pipe.labels == ["ball", "box", "cone", "ring", "bar"]
        with pipe:
            for _ in pipe:
                pass
        engine.close()
        assert seen == engine.history and engine.events
        assert {e.kind for e in seen} == {"start", "end"}
        runs.append(engine)
    rows = score_events(runs[0].events, truth, cfg, ["rgb", "depth", "thermal", FUSED], 16.0)
    by = {(r["detector"], r["stream"]): r for r in rows}
    for stream, least in (("thermal", 0.6), ("depth", 0.5), (FUSED, 0.5)):
        found = sum(r["recall"] * r["occurrences"] for (_, s), r in by.items() if s == stream and r["occurrences"])
        assert found >= least * sum(len(v) for v in truth.values()), (stream, rows)
        events = sum(r["events"] for (_, s), r in by.items() if s == stream)
        hits = sum((r["precision"] or 0) * r["events"] for (_, s), r in by.items() if s == stream)
        assert events and hits >= 0.7 * events, (stream, rows)
    for ev in runs[0].events:
        assert ev.start <= ev.confirmed <= ev.end and ev.peak >= ev.threshold and ev.snapshot is not None
        assert ev.sources and (ev.stream == FUSED or ev.sources == [ev.stream])

    def timeline(engine):
        return sorted((e.detector, e.stream, e.start, e.end, round(e.peak, 5), tuple(e.sources)) for e in engine.events)

    assert timeline(runs[0]) == timeline(runs[1])  # fused too: the engine fuses the sources by their frame times


def cli_sources(bundles: Path, media: dict) -> list[str]:
    root = Path(media["root"])
    return [
        *("-m", str(bundles / "image"), "-m", str(bundles / "thermal")),
        *("--rgb", str(root / media["files"]["rgb"]), "--thermal", str(root / media["files"]["thermal"])),
        *("--folder-fps", str(media["fps"])),
    ]


def test_watch_command_runs_the_example_on_recordings(tmp_path, bundles, media):
    watch = tmp_path / "rgb-thermal.toml"  # the example on the two sources given here
    watch.write_text(EXAMPLE.read_text().replace('"rgb", "depth", "thermal", "fused"', '"rgb", "thermal", "fused"'))
    res = CliRunner().invoke(
        main,
        ["watch", str(watch), *cli_sources(bundles, media), "--jsonl", str(tmp_path / "ev.jsonl")]
        + ["--snapshots", str(tmp_path / "snaps")],
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    ends = [e for e in lines if e["event"] == "end"]
    assert ends and len(lines) == 2 * len(ends)  # every event started and ended
    assert {e["detector"] for e in ends} <= set(OBJECTS) and {e["stream"] for e in ends} <= {"rgb", "thermal", FUSED}
    scenes = [(s["time"], s["label"].removeprefix("a ")) for s in media["scenes"]]
    right = [e for e in ends if any(a <= e["confirmed"] < b and obj == e["detector"] for (a, b), obj in scenes)]
    assert len(right) >= 0.7 * len(ends), ends
    for e in ends:
        assert Path(e["snapshot"]["file"]).is_file() and e["end"] >= e["confirmed"] >= e["start"]
    assert "results; events: ball" in res.output and " ended on " in res.output
    if Path("/dev/full").exists():  # events that cannot be written: one error, exit status 1, not a silent run
        res = CliRunner().invoke(main, ["watch", str(watch), *cli_sources(bundles, media), "--jsonl", "/dev/full"])
        assert res.exit_code == 1 and "error: cannot write the events" in res.output, res.output
    # `lbedge watch run FILE` is the same command
    res = CliRunner().invoke(main, ["watch", "run", str(watch), *cli_sources(bundles, media), "--max-results", "5"])
    assert res.exit_code == 0, res.output
    # a detector reading a source that is not there: one clear error before anything runs
    res = CliRunner().invoke(main, ["watch", str(EXAMPLE), *cli_sources(bundles, media)])
    assert res.exit_code == 1 and "reads source 'depth', but the sources are rgb, thermal" in res.output
    assert "Traceback" not in res.output


def test_watch_calibrate_on_labelled_recordings(tmp_path, bundles, media):
    from lbedge.lbmini.watch_eval import write_truth

    watch = tmp_path / "w.toml"
    watch.write_text(EXAMPLE.read_text().replace('"rgb", "depth", "thermal", "fused"', '"rgb", "thermal"'))
    truth = write_truth(media, tmp_path / "truth.json")
    args = ["watch", "calibrate", str(watch), *cli_sources(bundles, media), "--truth", str(truth)]
    res = CliRunner().invoke(main, [*args, "--false-alarm-rate", "0.02", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["output"] == str(tmp_path / "w.calibrated.toml")
    tuned = WatchConfig.load(report["output"])
    assert len(report["streams"]) == 10  # five detectors on two streams
    for row in report["streams"]:
        d = tuned.detector(row["detector"])
        assert d.thresholds[row["stream"]] == row["threshold"] and row["frame_false_alarm_rate"] <= 0.02
        present = any(row["detector"] in s["label"] for s in media["scenes"])
        assert row["negatives"] > row["positives"] and (row["positives"] > 0) == present
        assert 0 <= row.get("frame_recall", 0) <= 1
        assert d.calibration[row["stream"]]["negatives"] == row["negatives"] and d.hysteresis < row["threshold"]
    # the table for people, and the empty-scene calibration (no truth: every frame a negative)
    res = CliRunner().invoke(main, [*args[:-2], "-o", str(tmp_path / "empty.toml")])
    assert res.exit_code == 0, res.output
    assert "(empty scene)" in res.output and "-> threshold" in res.output
    assert WatchConfig.load(tmp_path / "empty.toml").detector("ball").calibration["false_alarm_rate"] == 0.01


def test_watch_command_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[detectors.a]\nprompts = ['a']\nthreshold = 2\n[detectors.b]\nprompts = ['b']\n")
    res = CliRunner().invoke(main, ["watch", str(bad), "-m", "x", "--rgb", "x"])
    assert res.exit_code == 1 and "error: watch file" in res.output and "threshold is a score in (0, 1]" in res.output
    res = CliRunner().invoke(main, ["watch", str(tmp_path / "none.toml"), "-m", "x", "--rgb", "x"])
    assert res.exit_code == 1 and "not found" in res.output
    res = CliRunner().invoke(main, ["watch", str(EXAMPLE)])
    assert res.exit_code == 2 and "give at least one source" in res.output
    (tmp_path / "truth.json").write_text('[{"start": 0, "end": 1, "present": ["dog"]}]')
    res = CliRunner().invoke(main, ["watch", "calibrate", str(EXAMPLE), "--truth", str(tmp_path / "truth.json")])
    assert res.exit_code == 1 and "unknown detector(s) dog" in res.output
