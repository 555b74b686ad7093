"""Real rosbag2 recordings for tests, written with rosbags (MCAP or SQLite3 storage, CDR messages): RGB, depth in
16UC1 millimetres and 32FC1 metres, 16-bit radiometric thermal and audio_common_msgs audio, each message stamped
and framed as a driver would. Built from the message fields directly, independently of lbedge's decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

BASE_NS = 1_700_000_000_123_456_789  # an epoch time with nanoseconds a float would round


def typestore() -> Any:
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    types.update(get_types_from_msg("uint8[] data", "audio_common_msgs/msg/AudioData"))
    types.update(
        get_types_from_msg(
            "std_msgs/Header header\naudio_common_msgs/AudioData audio", "audio_common_msgs/msg/AudioDataStamped"
        )
    )
    types.update(
        get_types_from_msg(
            "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format",
            "audio_common_msgs/msg/AudioInfo",
        )
    )
    ts.register(types)
    return ts


def header(ts: Any, stamp: int, frame_id: str) -> Any:
    t = ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    return ts.types["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)


def image(ts: Any, stamp: int, frame_id: str, arr: np.ndarray, encoding: str, *, big_endian: bool = False, pad=0):
    """A sensor_msgs/Image of ``arr`` (rows padded by ``pad`` bytes, as some drivers do)."""
    h, w = arr.shape[:2]
    a = arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<"))
    rows = a.reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return ts.types["sensor_msgs/msg/Image"](
        header=header(ts, stamp, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=step,
        data=data.reshape(-1),
    )


def compressed(ts: Any, stamp: int, frame_id: str, payload: bytes, fmt: str):
    return ts.types["sensor_msgs/msg/CompressedImage"](
        header=header(ts, stamp, frame_id), format=fmt, data=np.frombuffer(payload, np.uint8).copy()
    )


def audio_stamped(ts: Any, stamp: int, frame_id: str, pcm: np.ndarray):
    data = ts.types["audio_common_msgs/msg/AudioData"](data=np.frombuffer(pcm.astype("<i2").tobytes(), np.uint8))
    return ts.types["audio_common_msgs/msg/AudioDataStamped"](header=header(ts, stamp, frame_id), audio=data)


def audio_info(ts: Any, rate: int, channels: int = 1, fmt: str = "S16LE"):
    return ts.types["audio_common_msgs/msg/AudioInfo"](
        channels=channels, sample_rate=rate, sample_format=fmt, bitrate=0, coding_format="wave"
    )


def write_bag(path: Path, topics: dict[str, Iterable[tuple[int, Any]]], storage: str = "mcap", ts: Any = None) -> Path:
    """A rosbag2 recording folder at ``path`` with ``topics`` (``{topic: [(log time ns, message), ...]}``), in
    ``storage`` (mcap or sqlite3); messages are written in log-time order, as a recorder writes them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = ts or typestore()
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    rows = []
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, msgs in topics.items():
            for t, msg in msgs:
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msg.__msgtype__, typestore=ts)
                rows.append((t, topic, msg))
        for t, topic, msg in sorted(rows, key=lambda r: r[0]):
            w.write(conns[topic], t, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every message of a recording, deserialised, by topic: ``{topic: [(log time ns, message), ...]}``."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, r.deserialize(raw, conn.msgtype)))
    return out


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
