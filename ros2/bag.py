"""``lbedge label-bag``: a copy of a rosbag2 recording with lbedge's results added as standard messages, so they
open in Foxglove or rviz beside the input.

Every input message is copied unchanged (same topics, types, definitions and recording times). For each classified
topic, ``<prefix>/<source>/classification`` holds one ``vision_msgs/Classification`` per classified message (audio:
per window), with the input's header stamp and frame and its recording time; ``<prefix>/fused/classification`` the
late fusion of the sources (with two or more), computed in recording order so that a recording always gives the
same result; ``<prefix>/label_info`` (``vision_msgs/LabelInfo``, class id -> label, offered latched) and
``<prefix>/vision_info`` the label set.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from lbedge.encoder import Encoder
from lbedge.errors import InputError, SensorError
from lbedge.pipeline import Pipeline, fuse
from lbedge.progress import Counter, stage
from lbedge.sensors.ros_messages import DecodeOptions
from lbedge.sensors.rosbag import RosbagSource, open_reader, register_from_recording, source_name

from .core import LABEL_INFO_KEY, VISION_INFO_KEY, classification_key
from .messages import CLASSIFICATION, LABEL_INFO, VISION_INFO, RosbagsFactory, typestore
from .outputs import FUSED, OutputOptions, ResultMessages

STORAGES = ("mcap", "sqlite3")


@dataclass(frozen=True)
class LabelBagOptions:
    """How a recording is labelled: output topics under ``prefix``; ``storage`` of the copy (mcap or sqlite3;
    None: the input's); the messages' ``threshold`` and ``top_k``; the pipeline's ``smoothing``; fusion of
    messages whose stamps lie within ``sync_tolerance`` seconds; ``fused_frame_id`` (empty: the triggering
    input's frame); prompt ``templates`` (None: each modality's)."""

    prefix: str = "/lbedge"
    storage: str | None = None
    threshold: float = 0.0
    top_k: int = 5
    smoothing: str = "ema"
    sync_tolerance: float = 0.25
    fused_frame_id: str = ""
    templates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(/[A-Za-z][A-Za-z0-9_]*)+", self.prefix):
            raise InputError(f"prefix {self.prefix!r} must be a ROS namespace such as /lbedge")
        if self.storage is not None and self.storage not in STORAGES:
            raise InputError(f"storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        OutputOptions(self.threshold, self.top_k, self.fused_frame_id)  # checks them


@dataclass
class Classified:
    """One classified input message: where and when it was, and its smoothed probabilities (label order)."""

    source: str
    stamp_ns: int
    frame_id: str
    log_time_ns: int
    labels_version: int
    probs: np.ndarray


def storage_of(path: str | os.PathLike) -> str:
    """The storage of a recording (folder or file): mcap or sqlite3."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(p.iterdir()) if p.is_dir() else []
    suffixes = {f.suffix.lower() for f in files}
    if ".mcap" in suffixes:
        return "mcap"
    if ".db3" in suffixes:
        return "sqlite3"
    raise SensorError(f"{p} holds no .mcap or .db3 file: is it a rosbag2 recording?")


def topic_sources(
    src: str | os.PathLike, topics: Sequence[tuple[str, str | None]], decode: DecodeOptions | None = None
) -> dict[str, RosbagSource]:
    """One replay source per ``(topic, modality or None to guess it)`` of the recording ``src``, named after its
    topic (:func:`~lbedge.sensors.rosbag.source_name`)."""
    sources: dict[str, RosbagSource] = {}
    for topic, modality in topics:
        name = source_name(topic)
        if name in sources or name == FUSED:
            raise InputError(f"topic {topic} is given twice (or names a source {name!r} that is taken)")
        sources[name] = RosbagSource(src, topic, modality=modality, options=decode)
    return sources


def label_bag(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    encoders: Mapping[str, Encoder] | Encoder,
    labels: Sequence[str],
    sources: Mapping[str, RosbagSource],
    options: LabelBagOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``dst``, a copy of the recording ``src`` with the classifications of ``sources`` (topics of ``src``,
    e.g. from :func:`topic_sources`) against ``labels`` added (see the module docstring). Returns a summary: per
    source its topic, modality, messages, results and losses; the topics and messages written; the pipeline's
    events. ``progress(done, total)`` is called while the label prompts are embedded."""
    o = options or LabelBagOptions()
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise InputError(f"{dst} exists: give a new folder for the labelled recording (rosbag2 recordings are folders)")
    if dst.suffix.lower() in (".mcap", ".db3"):
        raise InputError(f"{dst}: give a folder name for the labelled recording (its {dst.suffix} file goes inside)")
    if not sources:
        raise InputError("give at least one topic to classify")
    if FUSED in sources:
        raise InputError(f"a source may not be named {FUSED!r}: that name is the fused result's")
    storage = o.storage or storage_of(src)
    stage("classifying %d topic(s) of %s", len(sources), src)
    records, stats, events, labels_used = _classify(sources, encoders, labels, o, progress)
    fused = _fuse(records, o) if len(sources) > 1 else []
    stage("writing %s (%s)", dst, storage)
    written, copied, skipped = _write(src, dst, storage, list(sources), records, fused, labels_used, o)
    return {
        "input": str(src),
        "output": str(dst),
        "storage": storage,
        "labels": list(labels_used),
        "sources": {
            n: {
                "topic": s.topic,
                "modality": s.modality,
                "messages": s.count,
                "results": int(stats[n]["processed"]),
                "skipped": int(stats[n]["skipped"]),
                "lost": int(stats[n]["lost"]),
            }
            for n, s in sources.items()
        },
        "written": written,
        "copied": copied,
        "skipped_topics": skipped,
        "events": events,
    }


def _classify(
    sources: Mapping[str, RosbagSource],
    encoders: Mapping[str, Encoder] | Encoder,
    labels: Sequence[str],
    o: LabelBagOptions,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[Classified], dict, list[str], list[str]]:
    pipe = Pipeline(
        sources,
        encoders,
        labels,
        templates=list(o.templates) if o.templates else None,
        top_k=len(labels),  # every label's probability, for fusion
        smoothing=o.smoothing,
        sync_clock="device",
        sync_tolerance=o.sync_tolerance,
        progress=progress,
    )
    names = pipe.labels
    # audio gives windows, not one result per message: the count follows the images
    counter = Counter("classified images", sum(s.count for s in sources.values() if s.modality != "audio"))
    records = []
    with pipe:
        for r in pipe:
            u = r.update
            meta = u.frame.meta if u.frame is not None else {}
            records.append(
                Classified(
                    u.source,
                    int(meta.get("stamp_ns", 0)),
                    str(meta.get("frame_id", "")),
                    int(meta.get("log_time_ns", 0)),
                    u.labels_version,
                    np.array([u.scores.get(label, 0.0) for label in names], np.float64),
                )
            )
            if u.modality != "audio":
                counter.advance()
    return records, pipe.stats(), list(pipe.event_log), names


def _fuse(records: list[Classified], o: LabelBagOptions) -> list[Classified]:
    """Late fusion in stamp order, deterministic whatever the threads did: at each stamp, every source's latest
    probabilities whose stamps lie within the tolerance are averaged. Messages of one stamp (an RGB-D pair) give
    one fused classification, recorded with the latest of them."""
    latest: dict[str, tuple[float, np.ndarray]] = {}
    out = []
    ordered = sorted(records, key=lambda r: (r.stamp_ns, r.log_time_ns, r.source))
    for stamp, group in itertools.groupby(ordered, key=lambda r: r.stamp_ns):
        rs = list(group)
        for r in rs:
            latest[r.source] = (stamp / 1e9, r.probs)
        _, probs = fuse(latest, stamp / 1e9, o.sync_tolerance)
        last = rs[-1]
        frame_id = o.fused_frame_id or last.frame_id
        log_time = max(r.log_time_ns for r in rs)
        out.append(Classified(FUSED, stamp, frame_id, log_time, last.labels_version, probs))
    return out


def _write(
    src: Path,
    dst: Path,
    storage: str,
    names: list[str],
    records: list[Classified],
    fused: list[Classified],
    labels: list[str],
    o: LabelBagOptions,
) -> tuple[dict[str, int], int, list[str]]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer

    factory = RosbagsFactory(typestore())
    out = ResultMessages(factory, OutputOptions(o.threshold, o.top_k, o.fused_frame_id))
    reader = open_reader(src)
    try:
        register_from_recording(factory.store, reader.connections)
        start = int(reader.start_time) if reader.message_count else 0
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(dst, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        writer.set_custom_data("lbedge", json.dumps({"labels": labels, "classified": names}, ensure_ascii=False))
        written: dict[str, int] = {}
        with writer:
            copies, skipped = _copy_connections(writer, reader, factory.store)
            zero = QosTime(0, 0)
            latched = Qos(
                history=QosHistory.KEEP_LAST,
                depth=1,
                reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL,
                deadline=zero,
                lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC,
                liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False,
            )
            conns = {
                key: writer.add_connection(f"{o.prefix}/{key}", CLASSIFICATION, typestore=factory.store)
                for key in [classification_key(n) for n in names] + ([classification_key(FUSED)] if fused else [])
            }
            conns[LABEL_INFO_KEY] = writer.add_connection(
                f"{o.prefix}/{LABEL_INFO_KEY}", LABEL_INFO, typestore=factory.store, offered_qos_profiles=[latched]
            )
            conns[VISION_INFO_KEY] = writer.add_connection(
                f"{o.prefix}/{VISION_INFO_KEY}", VISION_INFO, typestore=factory.store, offered_qos_profiles=[latched]
            )
            label_msgs = [
                (start, LABEL_INFO_KEY, out.label_info(labels, start)),
                (start, VISION_INFO_KEY, out.vision_info(0, start, f"{o.prefix}/{LABEL_INFO_KEY}")),
            ]
            results = sorted(
                (
                    (r.log_time_ns, classification_key(r.source), r)
                    for r in itertools.chain(records, fused)  # fused after the source's own at equal times
                ),
                key=lambda x: x[0],
            )
            copied = 0
            for t, kind, item in _merged(reader, copies, label_msgs, results):
                if kind == "copy":
                    conn, raw = item
                    writer.write(conn, t, raw)
                    copied += 1
                    continue
                key, payload = item
                msg = (
                    out.classification(dict(zip(labels, payload.probs.tolist())), payload.stamp_ns, payload.frame_id)
                    if isinstance(payload, Classified)
                    else payload
                )
                writer.write(conns[key], t, factory.serialize(msg))
                topic = f"{o.prefix}/{key}"
                written[topic] = written.get(topic, 0) + 1
    finally:
        reader.close()
    return written, copied, skipped


def _copy_connections(writer: Any, reader: Any, store: Any) -> tuple[dict[int, Any], list[str]]:
    """An output connection for every input connection (same topic, type, definition, QoS); topics whose type
    has no definition in the recording nor in the type store cannot be written and are listed."""
    out: dict[int, Any] = {}
    by_key: dict[tuple, Any] = {}
    skipped = []
    for c in reader.connections:
        key = (c.topic, c.msgtype)
        if key in by_key:
            out[c.id] = by_key[key]
            continue
        qos = list(getattr(c.ext, "offered_qos_profiles", []) or [])
        fmt = getattr(c.ext, "serialization_format", "cdr")
        if c.msgdef.data and c.digest:
            conn = writer.add_connection(
                c.topic,
                c.msgtype,
                msgdef=c.msgdef.data,
                rihs01=c.digest,
                serialization_format=fmt,
                offered_qos_profiles=qos,
            )
        elif c.msgtype in store.types:
            conn = writer.add_connection(
                c.topic, c.msgtype, typestore=store, serialization_format=fmt, offered_qos_profiles=qos
            )
        else:
            skipped.append(f"{c.topic} ({c.msgtype}: no definition in the recording)")
            continue
        by_key[key] = out[c.id] = conn
    return out, skipped


def _merged(
    reader: Any, copies: Mapping[int, Any], label_msgs: list[tuple], results: list[tuple]
) -> Iterator[tuple[int, str, Any]]:
    """Input messages and new messages in recording-time order (inputs first at equal times)."""
    order = itertools.count()

    def inputs() -> Iterator[tuple]:
        for c, t, raw in reader.messages():
            if c.id in copies:
                yield (t, 0, next(order), "copy", (copies[c.id], raw))

    new = [(t, 1, next(order), "new", (key, payload)) for t, key, payload in itertools.chain(label_msgs, results)]
    for t, _, _, kind, item in heapq.merge(inputs(), new):
        yield t, kind, item
