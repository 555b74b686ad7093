"""Everything the lbedge ROS 2 node does, without rclpy: sources fed by subscriptions, the pipeline, and the
messages to publish (classifications, label info, diagnostics, the annotated image), handed to a ``publish(key,
message)`` function. The rclpy node (:mod:`lbedge.ros2.node`) only creates the subscriptions, publishers and
timers and forwards to this class, so the logic is tested without ROS.

Output keys are topic names relative to the node (``~/<key>``), except ``diagnostics`` (``/diagnostics``):
``<source>/classification``, ``fused/classification`` (with two sources or more), ``label_info``, ``vision_info``,
``annotated``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Mapping, Sequence

from lbedge.encoder import Encoder
from lbedge.errors import InputError, LBEdgeError
from lbedge.pipeline import Pipeline, Result
from lbedge.sensors.ros_topic import TopicSource
from lbedge.zeroshot import check_labels, check_templates

from .config import LIVE_PARAMETERS, NodeConfig, parse_query
from .messages import MessageFactory, image_message
from .outputs import FUSED, ResultMessages, diagnostics, frame_stamp

log = logging.getLogger(__name__)

LABEL_INFO_KEY = "label_info"
VISION_INFO_KEY = "vision_info"
ANNOTATED_KEY = "annotated"
DIAGNOSTICS_KEY = "diagnostics"
#: the topic people publish new labels on (std_msgs/String, comma-separated), as ROS2-NanoOWL's input_query
INPUT_QUERY_KEY = "input_query"


def classification_key(name: str) -> str:
    """The output key (relative topic) of a source's, or the fused, classification."""
    return f"{name}/classification"


def output_keys(sources: Sequence[str]) -> list[str]:
    """Every output key of a node or recording with these sources."""
    keys = [classification_key(n) for n in sources]
    if len(sources) > 1:
        keys.append(classification_key(FUSED))
    return keys + [LABEL_INFO_KEY, VISION_INFO_KEY]


def load_encoders(config: NodeConfig) -> dict[str, Encoder]:
    """One encoder per model folder of the configuration, by modality (two models of one modality: an error)."""
    from lbedge import load

    encoders: dict[str, Encoder] = {}
    for path in config.models:
        enc = load(path, backend=config.backend, precision=config.precision, device=config.device or None)
        if enc.modality in encoders:
            raise InputError(f"models: two models of modality {enc.modality} ({path}); give one per modality")
        encoders[enc.modality] = enc
    return encoders


class NodeCore:
    """The node's work. ``publish(key, message)`` sends a message (see the module docstring for the keys);
    ``factory`` makes the messages (rclpy's classes in the node, rosbags' in tests); ``encoders`` default to the
    configured models; ``clock_ns`` gives the time of messages that are not results (label info, diagnostics).

    Results are published from the pipeline's worker thread; :meth:`publish_diagnostics` and
    :meth:`publish_annotated` are called by timers; :meth:`on_message` by subscriptions.
    """

    def __init__(
        self,
        config: NodeConfig,
        factory: MessageFactory,
        publish: Callable[[str, Any], None],
        *,
        encoders: Mapping[str, Encoder] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        node_name: str = "lbedge",
    ):
        self.config = config
        self.factory = factory
        self._send = publish
        self.clock_ns = clock_ns
        self.node_name = node_name
        self.sources = {
            s.name: TopicSource(
                s.name,
                s.topic,
                s.msgtype,
                config.modality_of(s),
                config.decode_options(s),
                silence_s=config.silence_timeout,
            )
            for s in config.sources
        }
        self.pipeline = Pipeline(
            self.sources,
            encoders if encoders is not None else load_encoders(config),
            config.labels,
            templates=config.templates or None,
            top_k=config.top_k,
            smoothing=config.smoothing,
            ema_alpha=config.ema_alpha,
            majority_window=config.majority_window,
            hysteresis=config.hysteresis,
            sync_tolerance=config.sync_tolerance,
            sync_clock=config.sync_clock,
            stall_timeout=config.stall_timeout,
        )
        self.outputs = ResultMessages(factory, config.output_options)
        #: where LabelInfo is published, as VisionInfo.database_location says (the node sets the resolved name)
        self.label_info_topic = f"~/{LABEL_INFO_KEY}"
        self._fused = len(self.sources) > 1
        self._lock = threading.Lock()
        self._published_version = -1
        self._mosaic = None
        self._last_stamp: tuple[int, str] | None = None
        if config.annotated_rate > 0:
            from lbedge.mosaic import Mosaic

            self._mosaic = Mosaic({n: s.modality for n, s in self.sources.items()}, bars=self.pipeline.top_k)
        self.pipeline.on_result(self._on_result)

    @property
    def keys(self) -> list[str]:
        """Every key this node publishes under."""
        extra = [DIAGNOSTICS_KEY] + ([ANNOTATED_KEY] if self._mosaic is not None else [])
        return output_keys(list(self.sources)) + extra

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Publish the label set (latched) and start the pipeline."""
        self.publish_labels(force=True)
        self.pipeline.start()

    def stop(self) -> None:
        """Stop the pipeline; closing the sources first wakes the readers waiting for messages."""
        for src in self.sources.values():
            src.close()
        self.pipeline.stop()

    # --- inputs ---------------------------------------------------------------------------------------------------
    def on_message(self, source: str, msg: Any, receive_time_ns: int | None = None) -> None:
        """A subscription's message for ``source`` (quick: decoding happens in the pipeline's reader)."""
        self.sources[source].push(msg, receive_time_ns)

    def set_labels(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> Future:
        """Switch to new labels while running (see :meth:`lbedge.Pipeline.set_labels`); the new LabelInfo is
        published once they are in use, before any classification made with them."""
        future = self.pipeline.set_labels(labels, templates)
        future.add_done_callback(self._labels_done)
        return future

    def on_query(self, text: str) -> Future:
        """New labels typed on ``input_query`` (``a person, a forklift``)."""
        return self.set_labels(parse_query(text))

    def on_parameters(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        """Apply parameter changes while running: (accepted, why not). ``labels``, ``templates`` and ``threshold``
        change live; anything else needs a restart and is refused, as is a bad value (nothing changes then)."""
        fixed = sorted(k for k in changes if k not in LIVE_PARAMETERS)
        if fixed:
            return False, f"{', '.join(fixed)} cannot change while the node runs: restart it with the new value"
        try:
            options = self.outputs.options
            if "threshold" in changes:
                options = dataclasses.replace(options, threshold=float(changes["threshold"]))
            labels = templates = None
            if "labels" in changes:
                value = changes["labels"]  # a list, or text as on input_query ("a person, a dog")
                labels = parse_query(value) if isinstance(value, str) else check_labels([str(v) for v in value or []])
            if changes.get("templates"):
                value = changes["templates"]
                templates = check_templates([value] if isinstance(value, str) else list(value))
        except (InputError, TypeError, ValueError) as exc:
            return False, str(exc)
        if options is not self.outputs.options:
            self.outputs.options = options
            self.publish_labels(force=True)
        if labels is not None or templates is not None:
            self.set_labels(labels if labels is not None else self.pipeline.label_set()[1], templates)
        return True, ""

    # --- outputs --------------------------------------------------------------------------------------------------
    def publish_labels(self, *, force: bool = False) -> None:
        """Publish LabelInfo and VisionInfo for the label set in use, when it is newer than the last published."""
        version, labels = self.pipeline.label_set()
        with self._lock:
            if not force and version <= self._published_version:
                return
            self._published_version = max(version, self._published_version)
        now = self.clock_ns()
        self._send(LABEL_INFO_KEY, self.outputs.label_info(labels, now))
        self._send(VISION_INFO_KEY, self.outputs.vision_info(version, now, self.label_info_topic))

    def publish_diagnostics(self) -> None:
        msg = diagnostics(
            self.factory,
            self.pipeline.stats(),
            self.pipeline.source_states(),
            {n: s.topic for n, s in self.sources.items()},
            self.clock_ns(),
            node=self.node_name,
            labels_version=self.pipeline.labels_version,
        )
        self._send(DIAGNOSTICS_KEY, msg)

    def publish_annotated(self) -> None:
        """The mosaic of every source with its labels (bgr8), stamped as the newest result; nothing before one."""
        if self._mosaic is None:
            return
        with self._lock:
            if self._last_stamp is None:
                return
            picture = self._mosaic.render()
            stamp, frame_id = self._last_stamp
        frame_id = self.config.fused_frame_id or frame_id
        self._send(ANNOTATED_KEY, image_message(self.factory, picture, "bgr8", stamp, frame_id))

    def _on_result(self, result: Result) -> None:
        if result.labels_version > self._published_version:
            self.publish_labels()
        for name, msg in self.outputs.of_result(result, fused=self._fused):
            self._send(classification_key(name), msg)
        if self._mosaic is not None:
            with self._lock:
                self._mosaic.update(result)
                self._last_stamp = frame_stamp(result.update)

    def _labels_done(self, future: Future) -> None:
        exc = future.exception()
        if exc is not None:
            log.warning("labels not changed: %s", exc)
            return
        try:
            self.publish_labels()
        except LBEdgeError as err:  # a publisher that failed must not hide that the labels changed
            log.warning("label info not published: %s", err)
