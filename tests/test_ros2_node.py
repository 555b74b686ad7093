"""The lbedge ROS 2 node. Its logic (lbedge.ros2.core, .config, .outputs) runs here without ROS: messages built
by rosbags go in through the subscriptions' entry point, and what the node would publish comes out as real
vision_msgs / diagnostic_msgs / sensor_msgs messages (serialised to CDR to prove them well formed). The rclpy shell
itself is tested where rclpy can be imported (a ROS 2 installation), and skipped elsewhere."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_pipeline_labels import COLOURS, SET_A, SET_B, colour_encoder

from lbedge import InputError, SensorError
from lbedge.sensors.ros_messages import IMAGE
from lbedge.sensors.ros_topic import TopicSource

pytest.importorskip("rosbags", reason="rosbags is not installed (lbedge[ros])")
from ros_recordings import BASE_NS, image, stamp_of, typestore  # noqa: E402

from lbedge.ros2.config import NODE_PARAMETERS, SOURCE_PARAMETERS, ConfigError, NodeConfig, parse_query  # noqa: E402
from lbedge.ros2.core import NodeCore, output_keys  # noqa: E402
from lbedge.ros2.messages import RosbagsFactory  # noqa: E402
from lbedge.ros2.outputs import ClassIds  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TS = typestore()
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LBEDGE_CACHE", str(tmp_path / "cache"))


def parameters(**extra) -> dict:
    """Flat parameter values, as ROS 2 hands them to the node from a YAML file."""
    values = {
        "models": ["/bundles/image"],
        "labels": SET_A,
        "sources": ["color", "color2"],
        "color.topic": "/camera/color/image_raw",
        "color.modality": "image",
        "color2.topic": "/camera2/color/image_raw",
        "color2.modality": "rgb",
        "smoothing": "none",
        "top_k": 2,
        "annotated_rate": 5,
    }
    values.update(extra)
    return values


class Published:
    """What the node publishes, by key, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        self.factory = RosbagsFactory()

    def __call__(self, key: str, msg: object) -> None:
        self.factory.serialize(msg)  # well formed, or this raises
        with self.lock:
            self.items.append((key, msg))

    def of(self, key: str) -> list:
        with self.lock:
            return [m for k, m in self.items if k == key]

    def wait(self, key: str, count: int, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.of(key)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        got = self.of(key)
        assert len(got) >= count, f"{key}: {len(got)} of {count} messages"
        return got


def colour_msg(colour: str, i: int, frame: str = "camera_color_optical_frame"):
    return image(TS, BASE_NS + i * 100_000_000, frame, np.full((16, 16, 3), RGB[colour], np.uint8), "rgb8")


def node(pub: Published, **extra) -> NodeCore:
    config = NodeConfig.from_parameters(parameters(**extra))
    return NodeCore(config, pub.factory, pub, encoders={"image": colour_encoder()}, clock_ns=lambda: 42)


def names_of(label_info) -> dict[int, str]:
    return {c.class_id: c.class_name for c in label_info.class_map}


def test_config_from_parameters_and_its_errors():
    c = NodeConfig.from_parameters(parameters(threshold=1, qos_depth=2.0))
    assert [s.name for s in c.sources] == ["color", "color2"] and c.sources[0].msgtype == IMAGE
    assert c.threshold == 1.0 and isinstance(c.threshold, float) and c.qos_depth == 2
    assert c.modality_of(c.sources[1]) == "image" and c.sync_clock == "device"
    assert set(SOURCE_PARAMETERS) == {"topic", "type", "modality", "frame_id", "sample_rate", "channels",
                                      "sample_format"}  # fmt: skip
    assert "labels" in NODE_PARAMETERS and NODE_PARAMETERS["qos_reliability"] == "best_effort"
    bad = parameters(models=[], threshold=2.0, top_k="many", sources=["fused", "thermal", "mic"])
    bad.update({"thermal.topic": "/t", "thermal.type": "image", "mic.topic": "/a", "mic.type": "audio_stamped"})
    bad.update({"mic.sample_format": "mp3ish", "labels": ["a", "a"]})
    with pytest.raises(ConfigError) as err:
        NodeConfig.from_parameters(bad)
    text = str(err.value)
    for expected in (
        "models: give at least one",
        "duplicate labels",
        "threshold must be in [0, 1]",
        "top_k: 'many' is not usable",
        "source name 'fused'",
        "fused.topic: give the topic",
        "thermal.modality: give image, depth or thermal",
        "mic: audio sample_format 'mp3ish' is not supported",
    ):
        assert expected in text, expected
    assert parse_query("[a person, a box, ]") == ["a person", "a box"]
    with pytest.raises(InputError):
        parse_query(" , ")


def test_node_publishes_classifications_stamped_and_framed_as_their_inputs():
    pub = Published()
    core = node(pub)
    assert set(core.keys) == set(output_keys(["color", "color2"])) | {"diagnostics", "annotated"}
    core.start()
    try:
        (info,) = pub.wait("label_info", 1)  # latched at start, before any classification
        names = names_of(info)
        assert sorted(names.values()) == sorted(SET_A) and pub.items[0][0] == "label_info"
        for i, colour in enumerate(COLOURS):
            core.on_message("color", colour_msg(colour, i), receive_time_ns=BASE_NS + i * 100_000_000 + 5)
            got = pub.wait("color/classification", i + 1)
        assert [stamp_of(m) for m in got] == [BASE_NS + i * 100_000_000 for i in range(3)]
        assert all(m.header.frame_id == "camera_color_optical_frame" for m in got)
        assert [names[int(m.results[0].class_id)] for m in got] == COLOURS
        assert all(len(m.results) == 2 for m in got)  # top_k
        # a second camera, stamped as the first one's last frame: fused with it
        core.on_message("color2", colour_msg("blue", 2, "cam2"), receive_time_ns=BASE_NS)
        (fused,) = pub.wait("fused/classification", 4)[-1:]
        assert stamp_of(fused) == BASE_NS + 200_000_000 and fused.header.frame_id == "cam2"
        assert names[int(fused.results[0].class_id)] == "blue"
        core.publish_diagnostics()
        (diag,) = pub.of("diagnostics")
        status = {s.name: s for s in diag.status}
        assert set(status) == {"lbedge: color", "lbedge: color2"} and stamp_of(diag) == 42
        values = {kv.key: kv.value for kv in status["lbedge: color"].values}
        assert values["processed"] == "3" and values["topic"] == "/camera/color/image_raw"
        assert values["state"] in ("running", "stalled") and "FPS" in status["lbedge: color"].message
        core.publish_annotated()
        (picture,) = pub.of("annotated")
        assert picture.encoding == "bgr8" and picture.height > 0 and stamp_of(picture) == BASE_NS + 200_000_000
    finally:
        core.stop()


def test_labels_change_while_running_by_parameter_and_query():
    pub = Published()
    core = node(pub, sources=["color"])
    core.start()
    try:
        core.on_message("color", colour_msg("red", 0))
        pub.wait("color/classification", 1)
        ok, why = core.on_parameters({"labels": SET_B})
        assert ok and why == ""
        infos = pub.wait("label_info", 2)
        assert sorted(names_of(infos[-1]).values()) == sorted(SET_B)
        # ids never change meaning: red kept 0, the new words got new ids
        assert names_of(infos[0])[0] == "red" and set(names_of(infos[-1])) == {3, 4, 5}
        (vision,) = pub.of("vision_info")[-1:]
        assert vision.database_version == 1 and vision.database_location == "~/label_info"
        core.on_message("color", colour_msg("blue", 1))
        msg = pub.wait("color/classification", 2)[-1]
        assert names_of(infos[-1])[int(msg.results[0].class_id)] == "navy"
        # the query topic, as ROS2-NanoOWL's input_query: comma-separated text
        assert core.on_query("[crimson, lime, navy]").result(timeout=30) == 2
        infos = pub.wait("label_info", 3)
        assert sorted(names_of(infos[-1]).values()) == ["crimson", "lime", "navy"]
        assert set(names_of(infos[-1])) == {3, 4, 5}  # the words kept their ids
        # refused: what cannot change live, and bad values; nothing changes then
        assert core.on_parameters({"models": ["/x"]}) == (
            False,
            "models cannot change while the node runs: restart it with the new value",
        )
        ok, why = core.on_parameters({"labels": ["a", "a"]})
        assert not ok and "duplicate" in why
        ok, why = core.on_parameters({"threshold": 3.0})
        assert not ok and "threshold" in why
        # the threshold changes live: LabelInfo says it, classifications leave out what scores below it
        assert core.on_parameters({"threshold": 0.5}) == (True, "")
        assert pub.wait("label_info", 4)[-1].threshold == 0.5
        core.on_message("color", colour_msg("green", 2))
        msg = pub.wait("color/classification", 3)[-1]
        assert len(msg.results) == 1 and msg.results[0].score >= 0.5
        # text for labels, as `ros2 param set /lbedge labels "a, b"` gives it
        assert core.on_parameters({"labels": "red, green, blue"}) == (True, "")
        assert sorted(names_of(pub.wait("label_info", 5)[-1]).values()) == ["blue", "green", "red"]
    finally:
        core.stop()


def test_class_ids_are_stable_and_bounded():
    ids = ClassIds()
    assert ids.assign(["a", "b"]) == {"a": 0, "b": 1}
    assert ids.assign(["c", "a"]) == {"c": 2, "a": 0} and ids["b"] == 1


def test_topic_source_waits_for_messages_and_says_which_topic_is_silent():
    src = TopicSource("color", "/camera/color/image_raw", IMAGE, "image", silence_s=0.2)
    src.open()
    with pytest.raises(SensorError, match="no message on /camera/color/image_raw .*ros2 topic hz"):
        src.read()
    src.push(colour_msg("red", 0))
    src.push(colour_msg("green", 1))  # the newest replaces what was not read yet
    bad = colour_msg("blue", 2)
    f = src.read()
    assert tuple(f.data[0, 0]) == RGB["green"] and src.replaced == 1 and f.meta["stamp_ns"] == BASE_NS + 10**8
    bad.data = bad.data[:7]
    src.push(bad)
    threading.Timer(0.05, lambda: src.push(colour_msg("blue", 3))).start()
    f = src.read()  # the damaged one is passed over, the next one read
    assert tuple(f.data[0, 0]) == RGB["blue"] and src.undecodable == 1
    src.close()


def test_the_rclpy_node_classifies_a_published_image():
    rclpy = pytest.importorskip(
        "rclpy",
        reason="rclpy is not installed: it comes with ROS 2 (apt), source /opt/ros/humble/setup.bash; the node's "
        "logic is tested above without it, only the thin rclpy shell needs ROS",
    )
    pytest.importorskip("vision_msgs", reason="vision_msgs is not installed (apt install ros-humble-vision-msgs)")
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Classification

    from lbedge.ros2 import node as shell

    rclpy.init()
    try:
        overrides = [
            Parameter("models", Parameter.Type.STRING_ARRAY, ["unused"]),
            Parameter("labels", Parameter.Type.STRING_ARRAY, SET_A),
            Parameter("sources", Parameter.Type.STRING_ARRAY, ["color"]),
            Parameter("color.topic", Parameter.Type.STRING, "/test/image"),
            Parameter("color.modality", Parameter.Type.STRING, "image"),
        ]
        lb = Node("lbedge", parameter_overrides=overrides)
        real_load = shell.NodeCore.__init__

        def with_fake_model(self, *a, **kw):
            real_load(self, *a, **{**kw, "encoders": {"image": colour_encoder()}})

        shell.NodeCore.__init__ = with_fake_model
        try:
            wired = shell.LbedgeNode(lb)
        finally:
            shell.NodeCore.__init__ = real_load
        helper = Node("helper")
        got = []
        helper.create_subscription(Classification, "/lbedge/color/classification", got.append, 10)
        out = helper.create_publisher(Image, "/test/image", 10)
        msg = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes([0, 0, 255] * 16))
        msg.header.frame_id = "cam"
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            out.publish(msg)
            rclpy.spin_once(lb, timeout_sec=0.05)
            rclpy.spin_once(helper, timeout_sec=0.05)
        assert got and got[0].header.frame_id == "cam"
        wired.destroy()
        lb.destroy_node()
        helper.destroy_node()
    finally:
        rclpy.try_shutdown()


def flatten(params: dict, prefix: str = "") -> dict:
    """Nested YAML parameters as ROS 2 flattens them: ``color: {topic: x}`` is ``color.topic``."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_ament_package_has_its_manifest_launch_files_and_parameters():
    import ast
    import xml.etree.ElementTree as ET

    from ruamel.yaml import YAML

    from conftest import ROOT

    pkg = ROOT / "ros2" / "package" / "lbedge_ros"
    manifest = ET.parse(pkg / "package.xml").getroot()
    assert manifest.get("format") == "3" and manifest.findtext("name") == "lbedge_ros"
    assert manifest.find("export/build_type").text == "ament_python"
    depends = {d.text for d in manifest.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "vision_msgs", "diagnostic_msgs", "std_msgs", "launch_ros"} <= depends
    setup = (pkg / "setup.py").read_text()
    assert "lbedge_node = lbedge_ros.node:main" in setup and (pkg / "resource" / "lbedge_ros").is_file()
    assert "script_dir=$base/lib/lbedge_ros" in (pkg / "setup.cfg").read_text()
    launches = sorted((pkg / "launch").glob("*.launch.py"))
    assert [p.name for p in launches] == ["lbedge.launch.py", "realsense_thermal.launch.py"]
    for launch in launches:
        tree = ast.parse(launch.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
        assert '"lbedge_node"' in launch.read_text()
    for config in sorted((pkg / "config").glob("*.yaml")):
        (params,) = YAML(typ="safe").load(config.read_text()).values()
        c = NodeConfig.from_parameters(flatten(params["ros__parameters"]))  # every parameter is valid
        assert c.sources and all(s.topic.startswith("/") for s in c.sources)
        assert set(flatten(params["ros__parameters"])) <= set(NODE_PARAMETERS) | {
            f"{s}.{k}" for s in params["ros__parameters"]["sources"] + ["mic"] for k in SOURCE_PARAMETERS
        }
    # the launch file's thermal camera publishes what the parameters subscribe to
    rt = YAML(typ="safe").load((pkg / "config" / "realsense_thermal.yaml").read_text())
    assert rt["/**"]["ros__parameters"]["thermal"]["topic"] == "/thermal/image_raw"
    assert '"pixel_format": "mono16"' in (pkg / "launch" / "realsense_thermal.launch.py").read_text()
