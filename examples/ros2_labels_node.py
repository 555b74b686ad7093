#!/usr/bin/env python
"""A ROS 2 node that publishes lbedge zero-shot labels of its sensors as JSON (std_msgs/String).

Hardware: whatever sensors its parameters name (see lbedge.sensors.spec: a camera index, realsense,
/dev/videoN for a thermal camera, mic). Without hardware: point the parameters at recordings.
Needs a ROS 2 installation (Humble on JetPack 6 / Ubuntu 22.04) sourced in the shell; rclpy is imported here
only, never by lbedge.

    ros2 run --prefix 'python3' ... or simply:
    python3 examples/ros2_labels_node.py --ros-args -p models:="['bundles/image']" -p rgb:=0 \
        -p labels:="['a person','a forklift','an empty aisle']"
    ros2 topic echo /lbedge/labels
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

import lbedge
from lbedge.sensors.spec import KINDS, SourceOptions, source_from_spec


def result_message(result: lbedge.Result) -> str:
    """The JSON text published for one result: per-source and fused labels, scores, latency, events."""
    return json.dumps(result.to_dict())


def build_pipeline(
    models: Sequence[str], specs: dict[str, str], labels: Sequence[str], options: SourceOptions | None = None
) -> lbedge.Pipeline:
    """One encoder per model folder, one source per non-empty spec (rgb, depth, thermal, audio)."""
    encoders = {enc.modality: enc for enc in (lbedge.load(m) for m in models)}
    sources = {kind: source_from_spec(kind, spec, options or SourceOptions()) for kind, spec in specs.items() if spec}
    return lbedge.Pipeline(sources, encoders, list(labels))


def main(argv: Sequence[str] | None = None) -> None:
    try:
        import rclpy
        from rclpy.node import Node
        from std_msgs.msg import String
    except ImportError as exc:
        sys.exit(
            f"ROS 2 Python (rclpy, std_msgs) was not found ({exc}): source your ROS 2 setup first, e.g. "
            "`source /opt/ros/humble/setup.bash`"
        )

    rclpy.init(args=argv)
    node = Node("lbedge", namespace="lbedge")
    models = node.declare_parameter("models", [""]).value
    labels = node.declare_parameter("labels", ["a person", "an empty room"]).value
    specs = {kind: node.declare_parameter(kind, "").value for kind in KINDS}
    publisher = node.create_publisher(String, "labels", 10)
    pipeline = build_pipeline([m for m in models if m], specs, labels, SourceOptions(realtime=True))
    pipeline.on_result(lambda result: publisher.publish(String(data=result_message(result))))
    pipeline.start()
    node.get_logger().info(f"publishing {', '.join(pipeline.sources)} labels on {publisher.topic_name}")
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        pipeline.stop()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
