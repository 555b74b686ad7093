"""Building ROS 2 messages two ways, behind one interface: rosbags' message classes (for recordings, ``lbedge
label-bag``, and for the tests) and rclpy's generated ones (for the live node). The code that turns results into
messages (:mod:`lbedge.ros2.outputs`) is written once against :class:`MessageFactory`.

``vision_msgs`` (ros-perception/vision_msgs 4.x, as ROS 2 Humble ships it) is not in rosbags' standard type stores:
its definitions are registered here from their fields.
"""

from __future__ import annotations

import array
import importlib
from typing import Any, Protocol

import numpy as np

from lbedge.sensors.rosbag import ros_typestore

CLASSIFICATION = "vision_msgs/msg/Classification"
OBJECT_HYPOTHESIS = "vision_msgs/msg/ObjectHypothesis"
LABEL_INFO = "vision_msgs/msg/LabelInfo"
VISION_CLASS = "vision_msgs/msg/VisionClass"
VISION_INFO = "vision_msgs/msg/VisionInfo"
IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
DIAGNOSTIC_STATUS = "diagnostic_msgs/msg/DiagnosticStatus"
KEY_VALUE = "diagnostic_msgs/msg/KeyValue"

#: the vision_msgs types lbedge publishes, by their fields (comments and constants left out)
VISION_MSGS = {
    OBJECT_HYPOTHESIS: "string class_id\nfloat64 score\n",
    CLASSIFICATION: "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
    VISION_CLASS: "uint16 class_id\nstring class_name\n",
    LABEL_INFO: "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
    VISION_INFO: "std_msgs/Header header\nstring method\nstring database_location\nint32 database_version\n",
}


def typestore() -> Any:
    """A rosbags type store with ROS 2 Humble's messages, audio_common_msgs and vision_msgs."""
    return ros_typestore(VISION_MSGS)


class MessageFactory(Protocol):
    """Makes messages by type name and fields, whatever the message classes are."""

    def make(self, msgtype: str, **fields: Any) -> Any:
        """A message of ``msgtype`` (``pkg/msg/Type``) with these fields."""
        ...

    def uint8s(self, data: bytes | np.ndarray) -> Any:
        """A ``uint8[]`` field's value."""
        ...

    def byte(self, value: int) -> Any:
        """A ``byte`` field's value."""
        ...


def header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` with a stamp in integer nanoseconds."""
    stamp_ns = max(0, int(stamp_ns))
    t = factory.make("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return factory.make("std_msgs/msg/Header", stamp=t, frame_id=frame_id)


def image_message(factory: MessageFactory, picture: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A ``sensor_msgs/Image`` of an 8-bit ``HxWx3`` picture (``rgb8`` or ``bgr8``)."""
    pic = np.ascontiguousarray(picture, np.uint8)
    if pic.ndim != 3 or pic.shape[2] != 3:
        raise ValueError(f"an {encoding} image needs HxWx3 uint8 pixels, got {pic.dtype} {pic.shape}")
    h, w = pic.shape[:2]
    return factory.make(
        IMAGE,
        header=header(factory, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=factory.uint8s(pic),
    )


class RosbagsFactory:
    """Messages as rosbags' classes, serialisable to CDR for a recording (:meth:`serialize`)."""

    def __init__(self, store: Any | None = None):
        self.store = store if store is not None else typestore()

    def make(self, msgtype: str, **fields: Any) -> Any:
        return self.store.types[msgtype](**fields)

    def uint8s(self, data: bytes | np.ndarray) -> Any:
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        return np.frombuffer(data, np.uint8).copy()

    def byte(self, value: int) -> Any:
        return int(value)

    def serialize(self, msg: Any) -> bytes:
        """The CDR bytes of a message (what a rosbag2 recording stores)."""
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))


class RclpyFactory:
    """Messages as rclpy's generated classes (``vision_msgs.msg.Classification``...), imported when first used;
    needs a sourced ROS 2 installation with vision_msgs (``apt install ros-humble-vision-msgs``)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def message_class(self, msgtype: str) -> type:
        """rclpy's class of ``pkg/msg/Type``; an ImportError says which ROS package to install."""
        cls = self._classes.get(msgtype)
        if cls is None:
            package, _, name = msgtype.split("/")
            try:
                cls = getattr(importlib.import_module(f"{package}.msg"), name)
            except (ImportError, AttributeError) as exc:
                raise ImportError(
                    f"the ROS 2 message {msgtype} is not available ({exc}): install its package, e.g. "
                    f"sudo apt install ros-$ROS_DISTRO-{package.replace('_', '-')}, and source ROS 2"
                ) from exc
            self._classes[msgtype] = cls
        return cls

    def make(self, msgtype: str, **fields: Any) -> Any:
        return self.message_class(msgtype)(**fields)

    def uint8s(self, data: bytes | np.ndarray) -> Any:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        return array.array("B", raw)

    def byte(self, value: int) -> Any:
        return bytes([int(value)])
