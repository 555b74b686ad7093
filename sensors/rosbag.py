"""Replay of ROS 2 recordings: one topic of a rosbag2 recording (MCAP or SQLite3 storage, a recording folder or its
``.mcap``/``.db3`` file) as a source, with the recording's time stamps.

Messages are read with rosbags (``lbedge[ros]``, pure Python: no ROS installation needed) and decoded by
:class:`~lbedge.sensors.ros_messages.MessageDecoder`. Message types the recording defines are read from it; the
standard ROS 2 Humble types and ``audio_common_msgs`` are known beforehand (a Humble SQLite3 recording stores no
definitions).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from lbedge.deps import require
from lbedge.errors import InputError, SensorError

from .base import BaseSource
from .ros_messages import (
    AUDIO_COMMON_MSGS,
    AUDIO_INFO,
    SENSOR_TYPES,
    AudioFormat,
    Decoded,
    DecodeOptions,
    MessageDecoder,
    guess_modality,
    modality_name,
)

#: how many messages of a topic are tried when its modality is guessed (the first ones may be damaged)
_PROBE_MESSAGES = 5


def ros_typestore(extra: Mapping[str, str] | None = None) -> Any:
    """A rosbags type store with ROS 2 Humble's standard messages, ``audio_common_msgs`` and the ``extra``
    definitions (``{"pkg/msg/Type": ".msg text"}``)."""
    require("rosbags")
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    register_definitions(store, {**AUDIO_COMMON_MSGS, **(extra or {})})
    return store


def register_definitions(store: Any, definitions: Mapping[str, str]) -> None:
    """Add message types from their ``.msg`` text to a rosbags type store (types it already has are kept)."""
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for name, text in definitions.items():
        if name not in store.types:
            types.update(get_types_from_msg(text, name))
    if types:
        store.register(types)


def register_from_recording(store: Any, connections: Iterable[Any]) -> None:
    """Add the message types a recording defines (MCAP, and SQLite3 from ROS 2 Iron on) that the store lacks."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    types: dict[str, Any] = {}
    for c in connections:
        if c.msgtype in store.types or c.msgtype in types or not c.msgdef.data:
            continue
        try:
            if c.msgdef.format == MessageDefinitionFormat.MSG:
                types.update(get_types_from_msg(c.msgdef.data, c.msgtype))
            elif c.msgdef.format == MessageDefinitionFormat.IDL:
                sep = "=" * 80 + "\n"
                parts = c.msgdef.data.split(sep)[1:] if c.msgdef.data.startswith(sep) else ["\n" + c.msgdef.data]
                for part in parts:
                    types.update(get_types_from_idl(part.split("\n", 1)[1]))
        except Exception:  # noqa: BLE001 - a definition rosbags cannot parse: the topic is left unreadable
            continue
    if types:
        store.register({k: v for k, v in types.items() if k not in store.types})


def open_reader(path: str | os.PathLike) -> Any:
    """An open rosbags reader of a rosbag2 recording: a folder with ``metadata.yaml``, or one ``.mcap``/``.db3``
    file; anything else is a SensorError saying what is expected."""
    require("rosbags")
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise SensorError(
            f"{p} is a folder without metadata.yaml: give a rosbag2 recording folder, or its .mcap/.db3 file"
        )
    if p.is_file() and p.suffix.lower() not in (".mcap", ".db3"):
        raise SensorError(f"{p} is not a rosbag2 recording: give its folder or its .mcap/.db3 file")
    if not p.exists():
        raise SensorError(f"rosbag2 recording not found: {p}")
    reader = Reader(p)
    try:
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags' own errors vary by storage
        raise SensorError(f"cannot read the rosbag2 recording {p}: {exc}") from exc
    return reader


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a recording: its message type and how many messages it holds."""

    topic: str
    msgtype: str
    count: int


def bag_topics(path: str | os.PathLike) -> dict[str, TopicInfo]:
    """Every topic of a recording with its message type and message count."""
    reader = open_reader(path)
    try:
        out: dict[str, TopicInfo] = {}
        for c in reader.connections:
            prev = out.get(c.topic)
            out[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgcount + (prev.count if prev else 0))
        return out
    finally:
        reader.close()


def parse_topic(text: str) -> tuple[str, str | None]:
    """``TOPIC[:MODALITY]`` (``/camera/depth/image_rect_raw:depth``) as (topic, modality or None)."""
    topic, sep, modality = text.rpartition(":")
    if not sep:
        return text.strip(), None
    try:
        return topic.strip(), modality_name(modality)
    except InputError as exc:
        raise SensorError(f"--topic {text!r}: {exc}") from None


def source_name(topic: str) -> str:
    """A source name from a topic, usable in ROS names: ``/camera/color/image_raw`` gives ``camera_color_image_raw``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", topic.strip("/")).strip("_") or "topic"
    return name if name[0].isalpha() else f"t_{name}"


class RosbagSource(BaseSource):
    """One topic of a rosbag2 recording (a folder, or its ``.mcap``/``.db3`` file) as a replay source.

    ``modality``: image, depth, thermal or audio; None guesses it from the message type and the image encoding
    (:func:`~lbedge.sensors.ros_messages.guess_modality`). ``options``: thermal profile and gain control, audio
    format (None: the recording's ``AudioInfo`` when it has one) and windows. Every message is delivered, as fast
    as it is read or, with ``realtime``, paced by the recording's own time stamps (the times messages were
    recorded). Frames carry the message's header stamp (``device_timestamp`` in seconds, exact in
    ``meta["stamp_ns"]``), its ``frame_id`` and the recording time (``meta["log_time_ns"]``). A message that
    cannot be decoded is passed over and counted in ``frames_lost``.

    The topic, its type and its modality are checked when the source is built: a wrong topic is one error naming
    the topics the recording holds.
    """

    live = False

    def __init__(
        self,
        path: str | os.PathLike,
        topic: str,
        *,
        modality: str | None = None,
        options: DecodeOptions | None = None,
        realtime: bool = False,
        name: str = "",
    ):
        self.path, self.topic = Path(path), topic
        options = options or DecodeOptions()
        info = self._probe(modality, options)
        super().__init__(name or source_name(topic), realtime=realtime, fps=info["fps"])
        self.msgtype: str = info["msgtype"]
        self.modality: str = info["modality"]
        self.count: int = info["count"]
        self.options = dataclasses.replace(options, audio=info["audio"])
        self.units = MessageDecoder(self.msgtype, self.modality, self.options, topic=topic).units
        self._reader: Any = None
        self._store: Any = None
        self._decoder: MessageDecoder | None = None
        self._messages: Any = None
        self._pending: collections.deque[Decoded] = collections.deque()
        self._index = 0  # messages read in this pass
        self._first_log: int | None = None
        self._due_log: int | None = None

    # --- checks when built ------------------------------------------------------------------------------------
    def _probe(self, modality: str | None, options: DecodeOptions) -> dict[str, Any]:
        reader = open_reader(self.path)
        try:
            conns = [c for c in reader.connections if c.topic == self.topic]
            if not conns:
                held = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections) or "no topics"
                raise SensorError(f"{self.path} has no topic {self.topic}; it holds {held}")
            msgtype = conns[0].msgtype
            if any(c.msgtype != msgtype for c in conns):
                raise SensorError(f"{self.topic} in {self.path} holds several message types: give one topic per type")
            if msgtype not in SENSOR_TYPES:
                raise SensorError(f"{self.topic} holds {msgtype}: lbedge classifies {', '.join(SENSOR_TYPES)}")
            count = sum(c.msgcount for c in conns)
            store = ros_typestore()
            register_from_recording(store, reader.connections)
            if modality is None:
                modality = self._guess(reader, conns, store, msgtype)
            modality = modality_name(modality)
            audio = options.audio
            if modality == "audio" and audio is None:
                audio = self._audio_info(reader, store)
            duration = max(0, reader.end_time - reader.start_time) / 1e9
            fps = (count - 1) / duration if count > 1 and duration > 0 else None
            if modality == "audio":
                fps = 1.0 / options.hop
            return {"msgtype": msgtype, "modality": modality, "count": count, "audio": audio, "fps": fps}
        finally:
            reader.close()

    def _guess(self, reader: Any, conns: list, store: Any, msgtype: str) -> str:
        problems = []
        for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            if i >= _PROBE_MESSAGES:
                break
            try:
                return guess_modality(msgtype, store.deserialize_cdr(raw, conn.msgtype))
            except Exception as exc:  # noqa: BLE001 - a damaged first message: try the next ones
                problems.append(str(exc))
        if problems:
            raise SensorError(f"{self.topic}: cannot read its first messages ({problems[0]}); name its modality")
        raise SensorError(f"{self.topic} in {self.path} holds no messages")

    def _audio_info(self, reader: Any, store: Any) -> AudioFormat | None:
        """The format of the recording's ``AudioInfo`` topic nearest the audio topic (same namespace first)."""
        infos = [c for c in reader.connections if c.msgtype == AUDIO_INFO]
        if not infos:
            return None
        ns = self.topic.rpartition("/")[0]
        infos.sort(key=lambda c: (c.topic.rpartition("/")[0] != ns, c.topic))
        for conn, _, raw in reader.messages(connections=infos[:1]):
            try:
                return AudioFormat.from_info(store.deserialize_cdr(raw, conn.msgtype))
            except SensorError as exc:
                raise SensorError(
                    f"{self.topic}: {conn.topic} states an audio format lbedge cannot read: {exc}"
                ) from exc
        return None

    # --- BaseSource hooks ---------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._reader = open_reader(self.path)
        try:
            self._store = ros_typestore()
            register_from_recording(self._store, self._reader.connections)
            conns = [c for c in self._reader.connections if c.topic == self.topic]
            if not conns:
                raise SensorError(f"{self.name}: {self.path} no longer has the topic {self.topic}")
            self._decoder = MessageDecoder(self.msgtype, self.modality, self.options, topic=self.topic)
            self._messages = iter(self._reader.messages(connections=conns))
        except BaseException:
            self._close()
            raise
        self._pending.clear()
        self._index = 0
        self._first_log = self._due_log = None

    def _read(self):
        assert self._decoder is not None
        while not self._pending:
            if self._messages is None:
                return None
            item = next(self._messages, None)
            if item is None:
                self._messages = None
                self._pending.extend(self._decoder.flush(self._due_log or 0))
                continue
            conn, log_time, raw = item
            self._index += 1
            if self._first_log is None:
                self._first_log = log_time
            try:
                self._pending.extend(self._decoder.decode(self._store.deserialize_cdr(raw, conn.msgtype), log_time))
            except Exception as exc:  # noqa: BLE001 - one damaged message costs only itself
                self._lose_once(
                    ("message", self._index),
                    f"message {self._index} of {self.topic} (recorded at {log_time} ns) cannot be decoded: {exc}",
                )
        d = self._pending.popleft()
        self._due_log = d.meta.get("log_time_ns", self._due_log)
        return d.data, d.stamp_ns / 1e9, dict(d.meta)

    def _pace_offset(self) -> float | None:
        if self._first_log is None or self._due_log is None:
            return None
        return max(0.0, (self._due_log - self._first_log) / 1e9)

    def seek(self, position: int) -> int:
        reached = super().seek(position)
        offset = self._pace_offset()
        if offset is not None:
            self._t0 = time.monotonic() - offset  # pacing goes on from the recording time reached
        return reached

    def _close(self) -> None:
        self._messages = None
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def __repr__(self) -> str:
        return f"RosbagSource({str(self.path)!r}, {self.topic!r}, modality={self.modality!r})"
