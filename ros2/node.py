"""The lbedge ROS 2 node: the thin rclpy shell around :class:`lbedge.ros2.core.NodeCore`.

It declares the parameters (:mod:`lbedge.ros2.config`), subscribes to each source's topic with sensor QoS (best
effort, keep last 1, unless told otherwise), creates the publishers (``~/<source>/classification``,
``~/fused/classification``, ``~/label_info`` and ``~/vision_info`` latched, ``~/annotated``, ``/diagnostics``), takes
new labels from the ``labels`` parameter and the ``~/input_query`` topic (std_msgs/String, comma-separated), and
forwards everything to the core. Run it with ``ros2 launch lbedge_ros lbedge.launch.py`` (the ament package in
``ros2/package/lbedge_ros``) or ``python3 -m lbedge.ros2.node --ros-args --params-file params.yaml``.

rclpy comes with ROS 2 (apt), not from PyPI: source ROS 2 before running this module; nothing else in lbedge
imports rclpy.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

from lbedge.errors import LBEdgeError

from .config import NODE_PARAMETERS, SOURCE_PARAMETERS, ConfigError, NodeConfig, parse_query
from .core import ANNOTATED_KEY, DIAGNOSTICS_KEY, INPUT_QUERY_KEY, LABEL_INFO_KEY, VISION_INFO_KEY, NodeCore
from .messages import CLASSIFICATION, DIAGNOSTIC_ARRAY, IMAGE, LABEL_INFO, VISION_INFO, RclpyFactory

ROS_HINT = "source your ROS 2 setup first, e.g. `source /opt/ros/humble/setup.bash` (docs/ros2.md)"


class _RosLogHandler(logging.Handler):
    """lbedge's log records (pipeline events, warnings) on the node's ROS logger."""

    def __init__(self, logger: Any):
        super().__init__()
        self.ros = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.ERROR:
                self.ros.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros.warning(text)
            else:
                self.ros.info(text)
        except Exception:  # noqa: BLE001 - logging must never fail the node
            pass


class LbedgeNode:
    """Wires an rclpy ``Node`` to a :class:`NodeCore`: parameters, subscriptions, publishers, timers."""

    def __init__(self, node: Any):
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        self.node = node
        self._Parameter = Parameter
        values = self._declare()
        config = NodeConfig.from_parameters(values)
        factory = RclpyFactory()
        self.core = NodeCore(
            config,
            factory,
            self._publish,
            clock_ns=lambda: node.get_clock().now().nanoseconds,
            node_name=node.get_name(),
        )
        latched = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        sensor = QoSProfile(
            depth=config.qos_depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT
            if config.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE,
        )
        types = {LABEL_INFO_KEY: LABEL_INFO, VISION_INFO_KEY: VISION_INFO, ANNOTATED_KEY: IMAGE}
        types[DIAGNOSTICS_KEY] = DIAGNOSTIC_ARRAY
        self.publishers = {}
        for key in self.core.keys:
            msgtype = types.get(key, CLASSIFICATION)
            topic = "/diagnostics" if key == DIAGNOSTICS_KEY else f"~/{key}"
            # reliable publishers reach reliable and best-effort subscribers alike (rviz, rqt_image_view, Foxglove)
            qos = latched if key in (LABEL_INFO_KEY, VISION_INFO_KEY) else 1 if key == ANNOTATED_KEY else 10
            self.publishers[key] = node.create_publisher(factory.message_class(msgtype), topic, qos)
        self.core.label_info_topic = self.publishers[LABEL_INFO_KEY].topic_name
        for s in config.sources:
            node.create_subscription(
                factory.message_class(s.msgtype),
                s.topic,
                lambda msg, name=s.name: self.core.on_message(name, msg, node.get_clock().now().nanoseconds),
                sensor,
            )
        node.create_subscription(String, f"~/{INPUT_QUERY_KEY}", self._on_query, 10)
        node.add_on_set_parameters_callback(self._on_parameters)
        node.create_timer(1.0 / config.diagnostics_rate, self.core.publish_diagnostics)
        if config.annotated_rate > 0:
            node.create_timer(1.0 / config.annotated_rate, self.core.publish_annotated)
        self.core.start()
        names = ", ".join(f"{s.name} ({s.topic}, {config.modality_of(s)})" for s in config.sources)
        node.get_logger().info(f"classifying {names} against {len(config.labels)} labels")

    def _declare(self) -> dict[str, Any]:
        """Declare every parameter (a source's once ``sources`` names it) and return their values."""
        node, Parameter = self.node, self._Parameter
        from rcl_interfaces.msg import ParameterDescriptor

        def declare(name: str, default: Any) -> Any:
            if isinstance(default, list) and not default:  # an empty list would be typed as bytes
                return node.declare_parameter(name, Parameter.Type.STRING_ARRAY).value
            return node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value

        values = {name: declare(name, default) for name, default in NODE_PARAMETERS.items()}
        for source in values.get("sources") or []:
            for key, default in SOURCE_PARAMETERS.items():
                values[f"{source}.{key}"] = declare(f"{source}.{key}", default)
        return values

    def _publish(self, key: str, msg: Any) -> None:
        self.publishers[key].publish(msg)

    def _on_query(self, msg: Any) -> None:
        """New labels on ``~/input_query``: set the ``labels`` parameter (so ``ros2 param get`` stays true)."""
        try:
            labels = parse_query(msg.data)
        except Exception as exc:  # noqa: BLE001 - a bad query is reported, nothing changes
            self.node.get_logger().warning(f"input_query {msg.data!r} ignored: {exc}")
            return
        result = self.node.set_parameters([self._Parameter("labels", self._Parameter.Type.STRING_ARRAY, labels)])
        if result and not result[0].successful:
            self.node.get_logger().warning(f"input_query {msg.data!r} refused: {result[0].reason}")

    def _on_parameters(self, params: Sequence[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        ok, reason = self.core.on_parameters({p.name: p.value for p in params})
        return SetParametersResult(successful=ok, reason=reason)

    def destroy(self) -> None:
        self.core.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the node until Ctrl-C or shutdown."""
    try:
        import rclpy
        from rclpy.node import Node
    except ImportError as exc:
        sys.exit(f"ROS 2 Python (rclpy) was not found ({exc}): {ROS_HINT}")
    rclpy.init(args=argv)
    node = Node("lbedge")
    root = logging.getLogger("lbedge")
    handler = _RosLogHandler(node.get_logger())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    shell = None
    from rclpy.executors import ExternalShutdownException

    try:
        shell = LbedgeNode(node)
        rclpy.spin(node)
    except ConfigError as exc:
        node.get_logger().error(str(exc))
        raise SystemExit(2) from None
    except LBEdgeError as exc:  # a model that cannot load, a label set that cannot be embedded
        node.get_logger().error(str(exc))
        raise SystemExit(1) from None
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if shell is not None:
            shell.destroy()
        root.removeHandler(handler)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
