"""Watch events as ROS 2 messages (lbedge.ros2.outputs.watch_event_status), built and serialised with rosbags."""

from __future__ import annotations

import numpy as np
import pytest

from lbedge.frames import Frame
from lbedge.watch import WatchEvent

pytest.importorskip("rosbags", reason="rosbags is not installed (lbedge[ros])")
from lbedge.ros2.messages import RosbagsFactory  # noqa: E402
from lbedge.ros2.outputs import OK, WARN, watch_event_status  # noqa: E402


def event(kind: str) -> WatchEvent:
    snap = Frame(np.zeros((2, 2, 3), np.uint8), "image", 5.0, 42, device_timestamp=1700000000.5, source="color")
    return WatchEvent(
        "person near dock",
        "fused",
        kind,
        1700000000.25,
        1700000000.75,
        1700000003.5 if kind == "end" else None,
        0.91,
        1700000000.5,
        0.6,
        ["color", "thermal"],
        "below" if kind == "end" else "",
        snap,
    )


def test_watch_events_become_diagnostic_arrays_that_serialise():
    f = RosbagsFactory()
    for kind, level, stamp in (("start", WARN, 1700000000.75), ("end", OK, 1700000003.5)):
        msg = watch_event_status(f, event(kind), node="dock")
        back = f.store.deserialize_cdr(f.serialize(msg), msg.__msgtype__)
        assert back.__msgtype__ == "diagnostic_msgs/msg/DiagnosticArray"
        assert back.header.stamp.sec == int(stamp) and abs(back.header.stamp.nanosec - (stamp % 1) * 1e9) < 1e3
        (status,) = back.status
        assert status.level == level and status.name == "dock watch: person near dock"
        assert status.hardware_id == "fused" and "person near dock" in status.message
        values = {kv.key: kv.value for kv in status.values}
        assert values["event"] == kind and values["sources"] == "color,thermal" and values["peak"] == "0.91"
        assert values["snapshot_sequence"] == "42" and values["snapshot_source"] == "color"
        assert values["end"] == ("" if kind == "start" else "1700000003.5")
