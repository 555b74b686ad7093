"""Recordings replay every frame, paced or as fast as possible, from every entry point (``lbedge demo``, the
RealSense example, ``source_from_spec``), and a replay that does lose frames says how many: the source's
``frames_lost``, the pipeline's events and ``stats()["lost"]``. Frames are counted, never timed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import OFFICIAL, TOKENIZER_DIR, random_model
from lbedge.pipeline import Pipeline
from lbedge.sensors import ImageFolderSource
from lbedge.sensors.spec import SourceOptions, source_from_spec
from test_pipeline import LABELS, FastLiveSource, colour_frames, fake_encoder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PACINGS = [pytest.param(True, id="paced"), pytest.param(False, id="fast")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """lb-mini's demo recordings of two held-out scenes (``make demo`` records eight): an MP4, a RealSense .db3
    with colour written offline, 16-bit depth and thermal PNG folders and a WAV, with truth.json's counts."""
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (lbedge[realsense])")
    from lbedge.lbmini.demo import demo_media

    media = demo_media(tmp_path_factory.mktemp("lb-mini-media"), scenes=2)
    assert media["files"]["depth"].endswith(".db3") and media["frames"] == 32
    return media


@pytest.fixture(scope="module")
def depth_bundle(tmp_path_factory):
    """A tiny depth bundle (ONNX Runtime, its own text tower), exported from a random checkpoint."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from lbedge.checkpoint import save_pretrained
    from lbedge.quantize.bundle_build import export_bundle

    root = tmp_path_factory.mktemp("tiny-depth")
    ckpt = save_pretrained(random_model("depth"), root / "ckpt", tokenizer_dir=TOKENIZER_DIR)
    export_bundle(ckpt, root / "bundle")
    return root / "bundle"


def _recording(media: dict, key: str) -> str:
    return str(Path(media["root"]) / media["files"][key])


# --- (a) lbedge demo ------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("paced", PACINGS)
def test_cli_demo_delivers_every_frame_of_a_realsense_recording(media, depth_bundle, tmp_path, paced):
    """`lbedge demo -m BUNDLE --depth depth.db3 --realtime` gave 6 results for 128 recorded frames, silently."""
    from lbedge.cli import main

    out = tmp_path / "r.jsonl"
    args = ["demo", "-m", str(depth_bundle), "--depth", _recording(media, "depth"), "--headless"]
    args += ["--jsonl", str(out), "--labels", "a ball,a box,a cone", *(["--realtime"] if paced else [])]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    updates = [json.loads(line)["update"] for line in out.read_text().splitlines()]
    assert [u["sequence"] for u in updates] == list(range(media["frames"]))
    assert {u["source"] for u in updates} == {"depth"}
    assert f"depth: {media['frames']} processed, 0 dropped, 0 skipped," in res.output
    assert "lost" not in res.output


# --- (b) the RealSense example ---------------------------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("paced", PACINGS)
def test_realsense_example_delivers_every_frame_of_a_recording(media, depth_bundle, paced):
    """`examples/realsense_rgbd.py --recording` gave 7 of 128: depth and colour now come in full, paced or not."""
    pytest.importorskip("torch")  # the image model is a checkpoint
    args = ["--depth-model", str(depth_bundle), "--image-model", str(OFFICIAL / "image")]
    args += ["--recording", _recording(media, "depth"), "--headless", "--labels", "a ball,a box"]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "realsense_rgbd.py"), *args, *([] if paced else ["--fast"])],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    n = media["frames"]
    for name in ("depth", "rgb"):
        sequences = [int(line.split("#")[1].split(":")[0]) for line in lines if line.startswith(f"{name} #")]
        assert sequences == list(range(n)), name
        assert f"  {name}: {n} processed, 0 dropped, 0 skipped, 0 lost" in lines
    assert not [line for line in lines if "lost" in line and "[event]" in line]


# --- (c) source_from_spec --------------------------------------------------------------------------------------
def _spec_sources(media: dict, options: SourceOptions) -> dict:
    """Every lb-mini recording as the command line names it."""
    root = Path(media["root"])
    return {
        "rgb": source_from_spec("rgb", _recording(media, "rgb"), options),
        "depth": source_from_spec("depth", _recording(media, "depth"), options),
        "depth_png": source_from_spec("depth", str(root / media["files"]["depth_frames"]), options),
        "thermal": source_from_spec("thermal", _recording(media, "thermal"), options),
        "audio": source_from_spec("audio", _recording(media, "audio"), options),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("paced", PACINGS)
def test_sources_from_specs_deliver_every_recorded_frame(media, paced):
    """Each recording through the pipeline, with a model slower than the recordings' rate: nothing dropped,
    nothing lost, every frame in order (audio: one window per scene)."""
    span = float(media["seconds_per_scene"])
    options = SourceOptions(realtime=paced, audio_window=span, audio_hop=span)
    sources = _spec_sources(media, options)
    assert all(not s.live and getattr(s, "realtime", False) == paced for s in sources.values())
    encoders = {m: fake_encoder(m, delay=0.01) for m in ("image", "depth", "thermal", "audio")}
    with Pipeline(sources, encoders, LABELS, smoothing="none", max_batch=2) as p:
        results = list(p)
    n, scenes = media["frames"], len(media["scenes"])
    for name in sources:
        sequences = [r.update.sequence for r in results if r.update.source == name]
        assert sequences == list(range(scenes if name == "audio" else n)), name
    stats = p.stats()
    assert all(st["dropped"] == 0 and st["skipped"] == 0 and st["lost"] == 0 for st in stats.values()), stats
    assert not [e for e in p.event_log if "lost" in e]


# --- replays that do lose frames --------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_librealsense_real_time_playback_reports_what_it_drops(media):
    """librealsense's real-time mode, asked for explicitly, rushes through a recording written offline and drops
    what the reader misses: every recorded frame is either classified or counted as lost, and said so."""
    options = SourceOptions(realtime=True, lossless=False)
    source = source_from_spec("depth", _recording(media, "depth"), options)
    with Pipeline({"depth": source}, fake_encoder("depth", delay=0.05), LABELS, max_batch=1) as p:
        results = list(p)
    st = p.stats()["depth"]
    assert st["lost"] > 0 and st["processed"] + st["lost"] == media["frames"]
    assert len(results) == st["processed"]
    assert any(
        e.startswith("source depth ended;") and f"{st['lost']} of its frames were lost" in e for e in p.event_log
    )


@pytest.mark.timeout(60)
def test_an_unreadable_recorded_frame_is_reported_lost(tmp_path):
    """A damaged file in a recorded folder is passed over: an event names the loss, stats count it."""
    folder = colour_frames(tmp_path / "f", ["red", "green", "blue", "red"])
    (folder / "001b.png").write_bytes(b"not a png")  # between frames 1 and 2
    with Pipeline({"cam": ImageFolderSource(folder)}, fake_encoder(), LABELS, smoothing="none") as p:
        results = list(p)
    assert [r.update.sequence for r in results] == [0, 1, 2, 3]
    assert p.stats()["cam"]["lost"] == 1 and p.stats()["cam"]["dropped"] == 0
    assert "source cam: 1 frame(s) lost before frame 2 (1 in all)" in p.event_log
    assert any("ended; 1 of its frames were lost" in e for e in p.event_log)


# --- the pipeline never drops a recording's frames or results ----------------------------------------------------
@pytest.mark.timeout(60)
def test_paced_recording_slower_model_loses_nothing(tmp_path):
    """A model slower than a paced recording's rate: the recording waits (late frames, never dropped ones)."""
    colours = ["red", "green", "blue"] * 8
    src = ImageFolderSource(colour_frames(tmp_path / "f", colours), fps=100.0, realtime=True)
    with Pipeline({"cam": src}, fake_encoder(delay=0.03), LABELS, smoothing="none", max_batch=1) as p:
        results = list(p)
    assert [r.update.sequence for r in results] == list(range(len(colours)))
    assert [r.update.raw_label for r in results] == colours
    st = p.stats()["cam"]
    assert (st["processed"], st["dropped"], st["skipped"], st["lost"]) == (len(colours), 0, 0, 0)


@pytest.mark.timeout(60)
def test_slow_consumer_beside_a_live_source_gets_every_recorded_result(tmp_path):
    """Results of a live sensor may be dropped for a slow consumer; a recording's beside it never are."""
    colours = ["red", "blue"] * 20
    sources = {"live": FastLiveSource(n=400), "rec": ImageFolderSource(colour_frames(tmp_path / "f", colours))}
    got = []
    with Pipeline(sources, fake_encoder(), LABELS, smoothing="none", results_queue=2) as p:
        for r in p:
            got.append((r.update.source, r.update.sequence))
            time.sleep(0.003)  # a consumer slower than the model
    assert [seq for name, seq in got if name == "rec"] == list(range(len(colours)))
    assert p.stats()["rec"]["processed"] == len(colours)
