"""The lbedge ROS 2 node's parameters: what they are, their defaults, and their checks, in one place (the node
declares them from here and the tests check them here, without rclpy).

Parameters are flat, as ROS 2 stores them; a source's are ``<source>.<name>`` (in YAML, a mapping under the source's
name). Errors name every problem at once, with the parameter to set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from lbedge.errors import UsageError
from lbedge.pipeline import SYNC_CLOCKS
from lbedge.sensors.ros_messages import (
    AUDIO_DATA,
    AUDIO_DATA_STAMPED,
    COMPRESSED_IMAGE,
    IMAGE,
    AudioFormat,
    DecodeOptions,
    modality_name,
    normalize_type,
)
from lbedge.zeroshot import check_labels, check_templates

from .outputs import FUSED, OutputOptions

#: a source's ``type`` parameter -> message type
MESSAGE_TYPES = {
    "image": IMAGE,
    "compressed": COMPRESSED_IMAGE,
    "audio": AUDIO_DATA,
    "audio_stamped": AUDIO_DATA_STAMPED,
}
SMOOTHING = ("ema", "majority", "none")
RELIABILITY = ("best_effort", "reliable")


class ConfigError(UsageError):
    """The node's parameters are wrong; the message lists every problem."""


@dataclass(frozen=True)
class SourceConfig:
    """One subscribed topic: its ``topic``, message ``type`` (image, compressed, audio, audio_stamped, or a full
    ``pkg/msg/Type``), the ``modality`` its frames are (image, depth, thermal; audio types are audio), the
    ``frame_id`` for messages without one (AudioData), and the PCM format of audio."""

    name: str
    topic: str
    type: str = "image"
    modality: str = ""
    frame_id: str = ""
    sample_rate: int = 16000
    channels: int = 1
    sample_format: str = "S16LE"

    @property
    def msgtype(self) -> str:
        return MESSAGE_TYPES.get(self.type, self.type)

    @property
    def audio(self) -> AudioFormat:
        return AudioFormat(int(self.sample_rate), int(self.channels), self.sample_format)


#: a source's parameters (after ``<source>.``) and their defaults
SOURCE_PARAMETERS: dict[str, Any] = {
    f.name: "" if f.name == "topic" else f.default for f in dataclasses.fields(SourceConfig) if f.name != "name"
}


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node is told. ``models``: bundle or checkpoint folders, one per modality; ``labels`` and
    ``templates`` (empty: each modality's defaults) can change while the node runs, so can ``threshold``; the
    rest needs a restart."""

    models: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=lambda: ["a person", "an empty room"])
    templates: list[str] = field(default_factory=list)
    sources: list[SourceConfig] = field(default_factory=list)
    threshold: float = 0.0
    top_k: int = 5
    smoothing: str = "ema"
    ema_alpha: float = 0.5
    majority_window: int = 5
    hysteresis: float = 0.1
    sync_tolerance: float = 0.25
    sync_clock: str = "device"
    fused_frame_id: str = ""
    thermal_profile: str = "lepton"
    agc: str = "percentile"
    audio_window: float = 2.0
    audio_hop: float = 1.0
    stall_timeout: float = 10.0
    silence_timeout: float = 30.0
    annotated_rate: float = 5.0
    diagnostics_rate: float = 1.0
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    backend: str = "auto"
    precision: str = "auto"
    device: str = ""

    @property
    def output_options(self) -> OutputOptions:
        return OutputOptions(self.threshold, self.top_k, self.fused_frame_id)

    def decode_options(self, source: SourceConfig) -> DecodeOptions:
        audio = source.audio if source.msgtype in (AUDIO_DATA, AUDIO_DATA_STAMPED) else None
        return DecodeOptions(
            self.thermal_profile, self.agc, audio, self.audio_window, self.audio_hop, frame_id=source.frame_id
        )

    def modality_of(self, source: SourceConfig) -> str:
        if source.msgtype in (AUDIO_DATA, AUDIO_DATA_STAMPED):
            return "audio"
        return modality_name(source.modality)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "NodeConfig":
        """A checked configuration from flat parameter values (missing or None: the default); a ConfigError
        lists every problem."""
        defaults = cls()
        problems: list[str] = []
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name != "sources":
                kw[f.name] = _coerce(f.name, values.get(f.name), getattr(defaults, f.name), problems)
        names = [str(n) for n in (values.get("sources") or []) if str(n).strip()]
        sources = []
        for name in names:
            sv = {
                k: _coerce(f"{name}.{k}", values.get(f"{name}.{k}"), default, problems)
                for k, default in SOURCE_PARAMETERS.items()
            }
            sources.append(SourceConfig(name=name, **sv))
        kw["sources"] = sources
        config = cls(**kw)
        problems += config.problems()
        if problems:
            raise ConfigError("lbedge node parameters: " + "; ".join(problems))
        return config

    def problems(self) -> list[str]:
        """What is wrong with this configuration (empty when nothing is)."""
        out: list[str] = []
        if not self.models:
            out.append("models: give at least one bundle or checkpoint folder (one per modality)")
        try:
            check_labels(self.labels)
        except Exception as exc:  # noqa: BLE001 - collected with the others
            out.append(f"labels: {exc}")
        if self.templates:
            try:
                check_templates(self.templates)
            except Exception as exc:  # noqa: BLE001
                out.append(f"templates: {exc}")
        if not self.sources:
            out.append("sources: name at least one source, e.g. sources: [color], color.topic: /camera/color/image_raw")
        seen: set[str] = set()
        for s in self.sources:
            out += self._source_problems(s, seen)
        checks = [
            (0.0 <= self.threshold <= 1.0, "threshold must be in [0, 1]"),
            (self.top_k >= 1, "top_k must be at least 1"),
            (self.smoothing in SMOOTHING, f"smoothing must be one of {', '.join(SMOOTHING)}"),
            (0.0 < self.ema_alpha <= 1.0, "ema_alpha must be in (0, 1]"),
            (self.majority_window >= 1, "majority_window must be at least 1"),
            (self.sync_tolerance >= 0.0, "sync_tolerance must be >= 0 seconds"),
            (self.sync_clock in SYNC_CLOCKS, f"sync_clock must be one of {', '.join(SYNC_CLOCKS)}"),
            (self.stall_timeout > 0.0, "stall_timeout must be positive seconds"),
            (self.silence_timeout > 0.0, "silence_timeout must be positive seconds"),
            (self.annotated_rate >= 0.0, "annotated_rate must be >= 0 Hz (0: no annotated image)"),
            (self.diagnostics_rate > 0.0, "diagnostics_rate must be positive Hz"),
            (self.qos_reliability in RELIABILITY, f"qos_reliability must be one of {', '.join(RELIABILITY)}"),
            (self.qos_depth >= 1, "qos_depth must be at least 1"),
        ]
        out += [why for ok, why in checks if not ok]
        try:
            DecodeOptions(self.thermal_profile, self.agc, None, self.audio_window, self.audio_hop)
        except Exception as exc:  # noqa: BLE001
            out.append(str(exc))
        return out

    def _source_problems(self, s: SourceConfig, seen: set[str]) -> list[str]:
        out = []
        if not s.name.isidentifier() or s.name == FUSED:
            out.append(f"source name {s.name!r} must be a ROS name (letters, digits, _) and not {FUSED!r}")
        if s.name in seen:
            out.append(f"source {s.name!r} is named twice")
        seen.add(s.name)
        if not s.topic:
            out.append(f"{s.name}.topic: give the topic to subscribe to")
        try:
            msgtype = normalize_type(s.msgtype)
        except Exception as exc:  # noqa: BLE001
            return out + [f"{s.name}.type: {exc}"]
        if msgtype not in MESSAGE_TYPES.values():
            out.append(f"{s.name}.type must be one of {', '.join(MESSAGE_TYPES)}, got {s.type!r}")
        elif msgtype in (IMAGE, COMPRESSED_IMAGE):
            try:
                if modality_name(s.modality or "?") == "audio":
                    out.append(f"{s.name}.modality: an image topic cannot be audio")
            except Exception:  # noqa: BLE001
                out.append(f"{s.name}.modality: give image, depth or thermal for {s.topic or 'its topic'}")
        else:
            try:
                s.audio  # noqa: B018 - checks the format
            except Exception as exc:  # noqa: BLE001
                out.append(f"{s.name}: {exc}")
        return out


def _coerce(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    """A parameter's value as its default's type (an integer given for a float parameter is fine); None or a
    value of the wrong kind gives the default, the latter with a problem noted."""
    if value is None:
        return default
    try:
        if isinstance(default, list):
            if isinstance(value, (str, bytes)):
                raise TypeError("a list is expected")
            return [str(v) for v in value if str(v).strip()]
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, (int, float)) and isinstance(value, (str, bytes, list, tuple)):
            raise TypeError("a number is expected")
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: {value!r} is not usable ({exc})")
        return default


#: every global parameter and its default (what the node declares)
NODE_PARAMETERS: dict[str, Any] = {
    f.name: getattr(NodeConfig(), f.name) for f in dataclasses.fields(NodeConfig) if f.name != "sources"
}
NODE_PARAMETERS["sources"] = []
#: the parameters that may change while the node runs
LIVE_PARAMETERS = ("labels", "templates", "threshold")


def parse_query(text: str) -> list[str]:
    """Labels from a query text, as a person types it on the ``input_query`` topic: comma-separated, optionally
    in brackets (``[a person, a forklift]``); empty items are dropped, the result is checked."""
    return check_labels([t.strip() for t in text.strip().strip("[]()").split(",") if t.strip()], "query labels")
