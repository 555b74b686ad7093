"""Pipeline results as standard ROS 2 messages: ``vision_msgs/Classification`` per source and fused (header stamp
and frame of the classified input), ``vision_msgs/LabelInfo`` and ``VisionInfo`` for the label set, and
``diagnostic_msgs/DiagnosticArray`` with each source's rate, latency and state, and watch events
(:func:`watch_event_status`).

Class ids are stable for a whole run (:class:`ClassIds`): a label keeps its id across label changes and a new label
gets the next free one, so an id never changes meaning and a Classification can always be read with any LabelInfo
of the run that lists its ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lbedge.errors import InputError
from lbedge.pipeline import Result, SourceResult
from lbedge.watch import WatchEvent

from .messages import (
    CLASSIFICATION,
    DIAGNOSTIC_ARRAY,
    DIAGNOSTIC_STATUS,
    KEY_VALUE,
    LABEL_INFO,
    OBJECT_HYPOTHESIS,
    VISION_CLASS,
    VISION_INFO,
    MessageFactory,
    header,
)

#: the name of the fused result among the sources' (``.../fused/classification``)
FUSED = "fused"
#: vision_msgs' id of the "unlabelled" class: never given to a label
UNLABELED = 65535


class ClassIds:
    """Label -> ``uint16`` class id, stable over a run: ids are given in the order labels first appear."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def assign(self, labels: Sequence[str]) -> dict[str, int]:
        """The ids of ``labels``, giving new labels the next free ids."""
        for label in labels:
            if label not in self._ids:
                if len(self._ids) >= UNLABELED:
                    raise InputError(
                        f"more than {UNLABELED} distinct labels in one run: vision_msgs class ids are uint16; "
                        "restart the node to start the ids over"
                    )
                self._ids[label] = len(self._ids)
        return {label: self._ids[label] for label in labels}

    def __getitem__(self, label: str) -> int:
        return self.assign([label])[label]


@dataclass(frozen=True)
class OutputOptions:
    """What goes into the messages: hypotheses scoring at least ``threshold`` (also ``LabelInfo.threshold``), at
    most ``top_k`` of them, highest first; ``fused_frame_id`` names the frame of the fused classification (empty:
    the frame of the input that triggered it); ``method`` is ``VisionInfo.method``."""

    threshold: float = 0.0
    top_k: int = 5
    fused_frame_id: str = ""
    method: str = "lbedge zero-shot (LanguageBind)"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise InputError(f"threshold is a probability in [0, 1], got {self.threshold}")
        if int(self.top_k) < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}")


def frame_stamp(result: SourceResult) -> tuple[int, str]:
    """(stamp in ns, frame id) of the input a source result classified: the message's header stamp and frame when
    the frame came from ROS, else its device time or its host time."""
    frame = result.frame
    meta = frame.meta if frame is not None else {}
    if "stamp_ns" in meta:
        return int(meta["stamp_ns"]), str(meta.get("frame_id", ""))
    if frame is not None and frame.device_timestamp is not None:
        return int(round(frame.device_timestamp * 1e9)), ""
    return int(round(result.timestamp * 1e9)), ""


class ResultMessages:
    """Builds the vision_msgs messages of results through a :class:`~lbedge.ros2.messages.MessageFactory`."""

    def __init__(self, factory: MessageFactory, options: OutputOptions | None = None, ids: ClassIds | None = None):
        self.factory = factory
        self.options = options or OutputOptions()
        self.ids = ids or ClassIds()

    def classification(self, scores: Mapping[str, float], stamp_ns: int, frame_id: str) -> Any:
        """A Classification of probabilities per label: the top-k at or above the threshold, highest first."""
        kept = sorted(((s, label) for label, s in scores.items() if s >= self.options.threshold), reverse=True)
        kept = kept[: self.options.top_k]
        ids = self.ids.assign([label for _, label in kept])
        f = self.factory
        results = [f.make(OBJECT_HYPOTHESIS, class_id=str(ids[label]), score=float(s)) for s, label in kept]
        return f.make(CLASSIFICATION, header=header(f, stamp_ns, frame_id), results=results)

    def of_source(self, result: SourceResult) -> Any:
        """The Classification of one source's smoothed scores, stamped and framed as its input."""
        stamp, frame_id = frame_stamp(result)
        return self.classification(result.scores, stamp, frame_id)

    def of_result(self, result: Result, *, fused: bool) -> list[tuple[str, Any]]:
        """(source name or :data:`FUSED`, Classification) for a pipeline result: the updated source's, and with
        ``fused`` the fused one (stamped as the update; its frame is ``fused_frame_id`` or the update's)."""
        out = [(result.update.source, self.of_source(result.update))]
        if fused and result.fused_scores:
            stamp, frame_id = frame_stamp(result.update)
            frame_id = self.options.fused_frame_id or frame_id
            out.append((FUSED, self.classification(result.fused_scores, stamp, frame_id)))
        return out

    def label_info(self, labels: Sequence[str], stamp_ns: int, frame_id: str = "") -> Any:
        """The LabelInfo of a label set: each label's stable id, and the threshold."""
        ids = self.ids.assign(labels)
        f = self.factory
        class_map = [f.make(VISION_CLASS, class_id=ids[label], class_name=label) for label in labels]
        return f.make(
            LABEL_INFO,
            header=header(f, stamp_ns, frame_id),
            class_map=class_map,
            threshold=float(self.options.threshold),
        )

    def vision_info(self, labels_version: int, stamp_ns: int, database_location: str, frame_id: str = "") -> Any:
        """The VisionInfo: the method, where the class names are (the LabelInfo topic) and the label set's version."""
        return self.factory.make(
            VISION_INFO,
            header=header(self.factory, stamp_ns, frame_id),
            method=self.options.method,
            database_location=database_location,
            database_version=int(labels_version),
        )


#: DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
#: a source's pipeline state -> diagnostic level
STATE_LEVELS = {"running": OK, "starting": WARN, "stalled": WARN, "reopening": WARN, "ended": ERROR}


def diagnostics(
    factory: MessageFactory,
    stats: Mapping[str, Mapping[str, float]],
    states: Mapping[str, str],
    topics: Mapping[str, str],
    stamp_ns: int,
    *,
    node: str = "lbedge",
    labels_version: int = 0,
) -> Any:
    """A DiagnosticArray with one status per source: level from its state (running OK; starting, stalled and
    reopening WARN; ended ERROR), a one-line message, and its rate, latency, counts and state as values."""
    f = factory
    statuses = []
    for name, st in stats.items():
        state = states.get(name, "running")
        values = {
            "state": state,
            "topic": topics.get(name, ""),
            "fps": f"{st.get('fps', 0.0):g}",
            "latency_ms": f"{st.get('latency_ms', 0.0):g}",
            "preprocess_ms": f"{st.get('preprocess_ms', 0.0):g}",
            "infer_ms": f"{st.get('infer_ms', 0.0):g}",
            "processed": str(int(st.get("processed", 0))),
            "dropped": str(int(st.get("dropped", 0))),
            "skipped": str(int(st.get("skipped", 0))),
            "lost": str(int(st.get("lost", 0))),
            "labels_version": str(labels_version),
        }
        message = f"{state}: {st.get('fps', 0.0):g} FPS, latency {st.get('latency_ms', 0.0):g} ms"
        statuses.append(
            f.make(
                DIAGNOSTIC_STATUS,
                level=f.byte(STATE_LEVELS.get(state, WARN)),
                name=f"{node}: {name}",
                message=message,
                hardware_id=topics.get(name, name),
                values=[f.make(KEY_VALUE, key=k, value=v) for k, v in values.items()],
            )
        )
    return f.make(DIAGNOSTIC_ARRAY, header=header(f, stamp_ns, ""), status=statuses)


#: a watch event's kind -> diagnostic level: an event going on is a warning, its end is OK again
WATCH_LEVELS = {"start": WARN, "end": OK}


def watch_event_status(factory: MessageFactory, event: WatchEvent, *, node: str = "lbedge") -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` with one status for a watch event (docs/watches.md): level WARN when it
    starts, OK when it ends; name ``"<node> watch: <detector>"``, the stream as hardware id, a one-line message, and
    the event's fields (times, peak, threshold, sources, snapshot) as values. Stamped at the event's confirmation (a
    start) or end, on the clock of the frames (a ROS source's header stamps)."""
    f = factory
    t = event.end if event.end is not None else event.confirmed
    values = {k: v for k, v in event.to_dict().items() if k != "snapshot"}
    snap = event.snapshot
    if snap is not None:
        values.update(snapshot_source=snap.source, snapshot_sequence=snap.sequence)
    kv = [
        f.make(KEY_VALUE, key=k, value=",".join(v) if isinstance(v, list) else "" if v is None else str(v))
        for k, v in values.items()
    ]
    status = f.make(
        DIAGNOSTIC_STATUS,
        level=f.byte(WATCH_LEVELS.get(event.kind, WARN)),
        name=f"{node} watch: {event.detector}",
        message=event.describe(),
        hardware_id=event.stream,
        values=kv,
    )
    return f.make(DIAGNOSTIC_ARRAY, header=header(f, int(round(t * 1e9)), ""), status=[status])
