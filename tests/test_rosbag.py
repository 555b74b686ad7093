"""ROS 2 recordings end to end, on real rosbag2 recordings written by rosbags in MCAP and SQLite3 storage (RGB,
16-bit depth, 32-bit depth, radiometric thermal, audio): RosbagSource replays each topic with the recording's stamps
and frames, `lbedge demo --rosbag` streams several topics through the pipeline, and `lbedge label-bag` writes a
copy whose vision_msgs messages carry the inputs' stamps, frames and the right labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_pipeline_labels import colour_encoder

from conftest import OFFICIAL, FuncBackend
from lbedge import Encoder, InputError, PreprocessConfig, SensorError
from lbedge.cli import main
from lbedge.pipeline import Pipeline
from lbedge.sensors import DecodeOptions, RosbagSource
from lbedge.sensors.rosbag import bag_topics, parse_topic, source_name
from test_pipeline import TOK, word_text_tower

pytest.importorskip("rosbags", reason="rosbags is not installed (lbedge[ros])")
from ros_recordings import (  # noqa: E402
    BASE_NS,
    audio_info,
    audio_stamped,
    image,
    read_bag,
    stamp_of,
    typestore,
    write_bag,
)

pytestmark = pytest.mark.timeout(300)

MS = 1_000_000
COLOUR_RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
SCENE = ["red", "red", "green", "blue", "blue", "green"]  # the colour camera's frames
LABELS = ["red", "green", "blue"]
TOPICS = {
    "color": "/camera/color/image_raw",
    "depth": "/camera/depth/image_rect_raw",
    "depthf": "/camera/depth/image_metres",
    "thermal": "/thermal/image_raw",
    "audio": "/audio/audio_stamped",
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def robot_recording(path: Path, storage: str) -> Path:
    """What a robot records: RealSense colour (stamped 3 ms before it was recorded) and depth at 10 Hz, depth in
    metres, a Lepton at 5 Hz, 2.5 s of 16 kHz audio in 0.1 s chunks with its AudioInfo, and a topic lbedge
    does not classify."""
    ts = typestore()
    topics: dict[str, list] = {t: [] for t in TOPICS.values()}
    for i, colour in enumerate(SCENE):
        t = BASE_NS + i * 100 * MS
        topics[TOPICS["color"]].append(
            (
                t,
                image(
                    ts,
                    t - 3 * MS,
                    "camera_color_optical_frame",
                    np.full((24, 32, 3), COLOUR_RGB[colour], np.uint8),
                    "rgb8",
                    pad=4,
                ),
            )  # fmt: skip
        )
        depth = np.full((12, 16), 500 + 100 * i, np.uint16)
        depth[0, 0] = 0
        topics[TOPICS["depth"]].append((t, image(ts, t, "camera_depth_optical_frame", depth, "16UC1")))
        metres = np.full((12, 16), 0.5 + 0.1 * i, np.float32)
        metres[0, 0] = np.nan
        topics[TOPICS["depthf"]].append((t, image(ts, t, "camera_depth_optical_frame", metres, "32FC1")))
    for i in range(3):
        t = BASE_NS + i * 200 * MS
        kelvin = np.full((12, 16), 29315 + 1000 * i, np.uint16)
        kelvin[:6] += 500
        topics[TOPICS["thermal"]].append((t, image(ts, t, "thermal_optical_frame", kelvin, "mono16")))
    for i in range(25):
        t = BASE_NS + i * 100 * MS
        tone = (3000 * np.sin(np.arange(1600) * 0.2)).astype(np.int16)
        topics[TOPICS["audio"]].append((t + 2 * MS, audio_stamped(ts, t, "mic_link", tone)))
    topics["/audio/audio_info"] = [(BASE_NS, audio_info(ts, 16000))]
    topics["/chatter"] = [(BASE_NS + 50 * MS, ts.types["std_msgs/msg/String"](data="hello"))]
    return write_bag(path, topics, storage, ts)


@pytest.fixture(params=["mcap", "sqlite3"])
def recording(request, tmp_path):
    return robot_recording(tmp_path / f"run_{request.param}", request.param)


def fake(modality: str) -> Encoder:
    """A model for any modality: the colour words' text tower; vision says 'red' for everything but images."""
    return Encoder(
        modality=modality,
        preprocess_config=PreprocessConfig(modality),
        vision=FuncBackend(lambda x: np.tile(np.eye(3, dtype=np.float32)[0], (len(x), 1)), "x"),
        text=word_text_tower(LABELS),
        tokenizer=TOK,
        logit_scale=50.0,
        embed_dim=3,
        text_fingerprint=f"fake-{modality}",
    )


def encoders() -> dict[str, Encoder]:
    return {"image": colour_encoder(), **{m: fake(m) for m in ("depth", "thermal", "audio")}}


# --- replay ----------------------------------------------------------------------------------------------------------
def test_every_topic_replays_with_its_stamps_frames_and_data(recording):
    storage_file = next(recording.glob("*.mcap"), None) or next(recording.glob("*.db3"))
    for path in (recording, storage_file):  # the recording folder or its storage file
        with RosbagSource(path, TOPICS["color"]) as src:
            frames = list(src)
        assert src.modality == "image" and src.count == 6 and src.name == "camera_color_image_raw"
        assert [f.sequence for f in frames] == list(range(6))
        assert [f.meta["stamp_ns"] for f in frames] == [BASE_NS + i * 100 * MS - 3 * MS for i in range(6)]
        assert [f.meta["log_time_ns"] for f in frames] == [BASE_NS + i * 100 * MS for i in range(6)]
        assert all(f.meta["frame_id"] == "camera_color_optical_frame" for f in frames)
        assert [tuple(f.data[5, 5]) for f in frames] == [COLOUR_RGB[c] for c in SCENE]
        assert frames[1].device_timestamp == pytest.approx((BASE_NS + 97 * MS) / 1e9)
        assert src.frames_lost == 0

    with RosbagSource(recording, TOPICS["depth"]) as src:
        depth = list(src)
    assert src.modality == "depth" and [int(f.data[5, 5]) for f in depth] == [500 + 100 * i for i in range(6)]
    assert all(f.data.dtype == np.uint16 and f.data[0, 0] == 0 and f.units == "mm" for f in depth)
    with RosbagSource(recording, TOPICS["depthf"]) as src:
        metres = list(src)
    assert [float(f.data[5, 5]) for f in metres] == pytest.approx([500 + 100 * i for i in range(6)], rel=1e-5)
    assert all(np.isnan(f.data[0, 0]) for f in metres)
    with RosbagSource(recording, TOPICS["thermal"]) as src:
        thermal = list(src)
    assert src.modality == "thermal" and len(thermal) == 3
    assert [round(float(f.meta["celsius"][9, 9]), 2) for f in thermal] == [20.0, 30.0, 40.0]
    assert all(f.data.shape == (12, 16, 3) and f.meta["frame_id"] == "thermal_optical_frame" for f in thermal)
    src = RosbagSource(recording, TOPICS["audio"], options=DecodeOptions(window=1.0, hop=0.5))
    with src:
        audio = list(src)
    assert src.modality == "audio" and src.options.audio.sample_rate == 16000  # from the recording's AudioInfo
    assert [f.meta["stamp_ns"] - BASE_NS for f in audio] == [10**9, 15 * 10**8, 2 * 10**9, 25 * 10**8]
    assert all(f.data.shape == (1, 16000) and f.meta["sample_rate"] == 16000 for f in audio)


def test_topics_are_checked_when_a_source_is_built(recording, tmp_path):
    with pytest.raises(SensorError, match="has no topic /nope; it holds .*/camera/color/image_raw"):
        RosbagSource(recording, "/nope")
    with pytest.raises(SensorError, match="holds std_msgs/msg/String: lbedge classifies"):
        RosbagSource(recording, "/chatter")
    with pytest.raises(SensorError, match="not found"):
        RosbagSource(tmp_path / "missing", "/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SensorError, match="without metadata.yaml"):
        RosbagSource(tmp_path / "empty", "/x")
    with pytest.raises(SensorError, match="cannot be audio"):
        RosbagSource(recording, TOPICS["color"], modality="audio")
    topics = bag_topics(recording)
    assert topics[TOPICS["color"]].count == 6 and topics[TOPICS["audio"]].msgtype.endswith("AudioDataStamped")
    assert parse_topic("/a/b:rgb") == ("/a/b", "image") and parse_topic("/a/b") == ("/a/b", None)
    assert source_name("/camera/color/image_raw") == "camera_color_image_raw" and source_name("/9x") == "t_9x"


def test_a_damaged_message_is_lost_and_counted_alone(tmp_path):
    ts = typestore()
    msgs = [
        (BASE_NS + i * MS, image(ts, BASE_NS + i * MS, "cam", np.full((4, 4, 3), 9 * i, np.uint8), "rgb8"))
        for i in range(4)
    ]
    msgs[2][1].data = msgs[2][1].data[:5]  # truncated on disk
    rec = write_bag(tmp_path / "damaged", {"/cam": msgs}, "mcap", ts)
    with Pipeline({"cam": RosbagSource(rec, "/cam")}, colour_encoder(), LABELS) as p:
        results = list(p)
    assert [r.update.frame.meta["stamp_ns"] - BASE_NS for r in results] == [0, MS, 3 * MS]
    assert p.stats()["cam"]["lost"] == 1
    assert any("message 3 of /cam" in e or "1 frame(s) lost" in e for e in p.event_log)


def test_realtime_replay_is_paced_by_the_recorded_times_and_resumes(recording):
    src = RosbagSource(recording, TOPICS["color"], realtime=True)
    with src:
        offsets = []
        for _ in range(3):
            src.read()
            offsets.append(round(src._pace_offset(), 3))
    assert offsets == [0.0, 0.1, 0.2]  # each frame due at its recording time after the first
    src.open()
    assert src.seek(4) == 4  # a reopened recording resumes after its last delivered frame
    f = src.read()
    assert f.sequence == 4 and f.meta["stamp_ns"] == BASE_NS + 397 * MS
    src.close()


# --- label-bag -----------------------------------------------------------------------------------------------------
def classifications(out: dict, topic: str) -> list:
    return [m for _, m in out[topic]]


def test_label_bag_adds_classifications_with_the_inputs_stamps_frames_and_labels(recording, tmp_path):
    from lbedge.ros2.bag import LabelBagOptions, label_bag, storage_of, topic_sources

    dst = tmp_path / "labelled"
    sources = topic_sources(
        recording,
        [(TOPICS["color"], None), (TOPICS["depth"], "depth"), (TOPICS["thermal"], None), (TOPICS["audio"], None)],
        DecodeOptions(window=1.0, hop=0.5),
    )
    summary = label_bag(recording, dst, encoders(), LABELS, sources, LabelBagOptions(smoothing="none", top_k=2))
    assert summary["storage"] == storage_of(recording) == storage_of(dst)
    assert {n: (s["messages"], s["results"], s["lost"]) for n, s in summary["sources"].items()} == {
        "camera_color_image_raw": (6, 6, 0),
        "camera_depth_image_rect_raw": (6, 6, 0),
        "thermal_image_raw": (3, 3, 0),
        "audio_audio_stamped": (25, 4, 0),  # 25 chunks of audio: 4 windows of 1 s every 0.5 s
    }
    src, out = read_bag(recording), read_bag(dst)
    # every input message is copied, unchanged, at its recording time
    for topic, msgs in src.items():
        assert [t for t, _ in out[topic]] == [t for t, _ in msgs]
        assert [repr(m) for _, m in out[topic]] == [repr(m) for _, m in msgs]
    # label info: every class id's label, latched
    (info,) = classifications(out, "/lbedge/label_info")
    names = {c.class_id: c.class_name for c in info.class_map}
    assert sorted(names.values()) == sorted(LABELS) and info.threshold == 0.0
    (vision,) = classifications(out, "/lbedge/vision_info")
    assert vision.database_location == "/lbedge/label_info" and vision.database_version == 0
    # the colour camera: one classification per image, with its stamp, frame and colour
    colour = out["/lbedge/camera_color_image_raw/classification"]
    assert [t for t, _ in colour] == [t for t, _ in src[TOPICS["color"]]]  # recorded beside its input
    assert [stamp_of(m) for _, m in colour] == [stamp_of(m) for _, m in src[TOPICS["color"]]]
    assert all(m.header.frame_id == "camera_color_optical_frame" for _, m in colour)
    assert [names[int(m.results[0].class_id)] for _, m in colour] == SCENE
    assert all(len(m.results) == 2 and m.results[0].score >= m.results[1].score for _, m in colour)
    audio = classifications(out, "/lbedge/audio_audio_stamped/classification")
    assert [stamp_of(m) - BASE_NS for m in audio] == [10**9, 15 * 10**8, 2 * 10**9, 25 * 10**8]
    assert all(m.header.frame_id == "mic_link" for m in audio)
    thermal = classifications(out, "/lbedge/thermal_image_raw/classification")
    assert [stamp_of(m) for m in thermal] == [stamp_of(m) for _, m in src[TOPICS["thermal"]]]
    # fusion: one per distinct input stamp, each at a stamp of an input
    fused = classifications(out, "/lbedge/fused/classification")
    stamps = {stamp_of(m) for t in (TOPICS["color"], TOPICS["depth"], TOPICS["thermal"]) for _, m in src[t]}
    stamps |= {stamp_of(m) for m in audio}
    assert sorted(stamp_of(m) for m in fused) == sorted(stamps)
    assert summary["written"]["/lbedge/fused/classification"] == len(stamps)


def test_label_bag_metadata_says_what_was_labelled_and_offers_label_info_latched(tmp_path):
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    from lbedge.ros2.bag import LabelBagOptions, label_bag, topic_sources

    rec = robot_recording(tmp_path / "in", "mcap")
    dst = tmp_path / "out"
    sources = topic_sources(rec, [(TOPICS["color"], None)])
    options = LabelBagOptions(prefix="/robot/lb", storage="sqlite3")
    summary = label_bag(rec, dst, colour_encoder(), LABELS, sources, options)
    assert summary["storage"] == "sqlite3" and list(dst.glob("*.db3"))
    with Reader(dst) as r:
        conns = {c.topic: c for c in r.connections}
        assert conns["/robot/lb/label_info"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        assert "/robot/lb/fused/classification" not in conns  # one source: nothing to fuse
        assert conns["/robot/lb/camera_color_image_raw/classification"].msgtype == "vision_msgs/msg/Classification"
    meta = (dst / "metadata.yaml").read_text()
    assert "camera_color_image_raw" in meta and "lbedge" in meta
    with pytest.raises(InputError, match="exists"):
        label_bag(rec, dst, colour_encoder(), LABELS, sources)
    with pytest.raises(InputError, match="ROS namespace"):
        LabelBagOptions(prefix="lbedge")


# --- the command line ------------------------------------------------------------------------------------------------
@pytest.fixture
def models(make_checkpoint):
    pytest.importorskip("torch")
    return {"image": OFFICIAL / "image", "depth": make_checkpoint("depth"), "audio": make_checkpoint("audio")}


def test_demo_streams_several_topics_of_a_recording(recording, models, tmp_path):
    args = ["demo", "-m", str(models["image"]), "-m", str(models["depth"]), "--rosbag", str(recording)]
    args += ["--topic", TOPICS["color"], "--topic", f"{TOPICS['depthf']}:depth", "--labels", "a cat,a dog"]
    r = CliRunner().invoke(main, [*args, "--headless", "--jsonl", str(tmp_path / "r.jsonl"), "--realtime"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    seqs = {}
    for row in rows:
        seqs.setdefault(row["update"]["source"], []).append(row["update"]["sequence"])
    assert seqs == {"camera_color_image_raw": list(range(6)), "camera_depth_image_metres": list(range(6))}
    assert any(len(row["fused"]["sources"]) == 2 for row in rows)  # fused by stamps 3 ms apart
    assert "camera_color_image_raw: 6 processed, 0 dropped, 0 skipped" in r.output


def test_label_bag_command_in_both_storages(recording, models, tmp_path):
    dst = tmp_path / "labelled"
    args = ["label-bag", str(recording), str(dst), "-m", str(models["image"]), "-m", str(models["audio"])]
    args += ["--topic", TOPICS["color"], "--topic", TOPICS["audio"], "--labels", "a cat,a dog", "--window-s", "1"]
    r = CliRunner().invoke(main, [*args, "--hop-s", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{") :])
    assert summary["sources"]["camera_color_image_raw"]["results"] == 6
    assert summary["sources"]["audio_audio_stamped"]["results"] == 4
    out = read_bag(dst)
    names = {c.class_id: c.class_name for c in classifications(out, "/lbedge/label_info")[0].class_map}
    got = classifications(out, "/lbedge/camera_color_image_raw/classification")
    assert len(got) == 6 and all(names[int(m.results[0].class_id)] in ("a cat", "a dog") for m in got)
    assert len(classifications(out, "/lbedge/fused/classification")) == 6 + 4


def test_command_line_mistakes_are_usage_errors(recording, models, tmp_path):
    run = CliRunner().invoke
    m = ["-m", str(models["image"])]
    r = run(main, ["demo", *m, "--topic", "/x", "--labels", "a,b", "--headless"])
    assert r.exit_code == 2 and "give --rosbag too" in r.output
    r = run(main, ["demo", *m, "--rosbag", str(recording), "--rgb", "0", "--labels", "a,b", "--headless"])
    assert r.exit_code == 2 and "--rosbag brings its own sources" in r.output
    r = run(main, ["demo", *m, "--rosbag", str(recording), "--topic", "/nope", "--labels", "a,b", "--headless"])
    assert r.exit_code == 2 and "it holds" in r.output and TOPICS["color"] in r.output
    r = run(main, ["label-bag", str(recording), str(recording), *m, "--topic", TOPICS["color"], "--labels", "a,b"])
    assert r.exit_code == 2 and "exists" in r.output
    r = run(main, ["label-bag", str(recording), str(tmp_path / "o"), *m, "--labels", "a,b"])
    assert r.exit_code == 2 and "--topic" in r.output
    r = run(main, ["label-bag", str(recording), str(tmp_path / "o"), *m, "--topic", TOPICS["audio"], "--labels",
                   "a,b", "--audio-format", "fast"])  # fmt: skip
    assert r.exit_code == 2 and "RATE" in r.output
