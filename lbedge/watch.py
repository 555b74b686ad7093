"""Watches: event detectors defined in text (a TOML watch file), run over pipeline results.

A watch file names detectors; each has prompts (and optional negative prompts), the streams it reads (pipeline
sources by name, ``"*"`` for every source, ``"fused"`` for the fused result), a score threshold (one, and optionally
one per stream from calibration), a minimum duration, a hysteresis and a cooldown::

    [watch]
    name = "lb-mini objects"
    templates = ["a {}"]          # prompt templates (optional; the pipeline's default otherwise)
    labels = ["empty floor"]      # background labels that compete with every detector (optional)

    [detectors.ball]
    prompts = ["ball"]
    negatives = ["ring"]          # labels that compete with this detector's prompts (optional)
    sources = ["rgb", "fused"]    # default ["*"]: every source, each on its own
    threshold = 0.6               # score in (0, 1]
    thresholds = { rgb = 0.55 }   # per-stream thresholds (written by calibration; optional)
    min_duration = 0.5            # seconds above threshold before an event starts
    hysteresis = 0.1              # the event ends below threshold - hysteresis
    cooldown = 1.0                # seconds after an event's end before the next may start

The score of a detector on a result is the total probability of its prompts in the softmax over the pipeline's
label set, which holds every detector's prompts and negatives and the watch's ``labels``: negatives and other
detectors' prompts take probability away. Time is the frames' own (``Frame.device_timestamp`` when the sensor
stamps its frames, else the host capture time), and the fused stream fuses the sources by those times
(:class:`TimeFusion`), so a recording gives the same events however fast it is read.

:class:`WatchEngine` turns results into :class:`WatchEvent` s (a ``"start"`` when an event is confirmed, an
``"end"`` with its end, peak and snapshot); :func:`calibrate` chooses thresholds from recorded scores. Pure logic:
no torch, no sensors; :meth:`lbedge.Pipeline.watch` attaches a watch to a running pipeline.
"""

from __future__ import annotations

import collections
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .errors import InputError, MissingDependency

if TYPE_CHECKING:
    from .frames import Frame
    from .pipeline import Result

#: the stream name of the fused result (the sources fused by their frame times: :class:`TimeFusion`)
FUSED = "fused"
#: a detector's ``sources`` entry for every pipeline source, each on its own
ALL_SOURCES = "*"
#: the clocks event times can be read from
CLOCKS = ("device", "host")
#: the largest watch file read (bytes)
MAX_WATCH_BYTES = 1 << 20

_WATCH_KEYS = {"name", "labels", "templates"}
_DETECTOR_KEYS = {
    "prompts",
    "negatives",
    "sources",
    "threshold",
    "thresholds",
    "min_duration",
    "hysteresis",
    "cooldown",
    "calibration",
}


@dataclass(frozen=True)
class Detector:
    """One event detector of a watch (see the module docstring for the meaning of each field)."""

    name: str
    prompts: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    sources: tuple[str, ...] = (ALL_SOURCES,)
    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    min_duration: float = 0.0
    hysteresis: float = 0.05
    cooldown: float = 0.0
    calibration: Mapping[str, Any] = field(default_factory=dict)  # what calibration measured (informational)

    def __post_init__(self) -> None:
        where = f"detector {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError("a detector needs a non-empty name")
        if not self.prompts:
            raise InputError(f"{where}: prompts is empty; give at least one prompt")
        for p in (*self.prompts, *self.negatives):
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"{where}: prompts and negatives must be non-empty strings, got {p!r}")
        both = sorted(set(self.prompts) & set(self.negatives))
        if both:
            raise InputError(f"{where}: {', '.join(map(repr, both))} is both a prompt and a negative")
        if not self.sources or any(not isinstance(s, str) or not s.strip() for s in self.sources):
            raise InputError(f"{where}: sources must be a non-empty list of source names, '*' or 'fused'")
        _check_threshold(where, "threshold", self.threshold)
        for stream, value in self.thresholds.items():
            _check_threshold(where, f"thresholds.{stream}", value)
        for key in ("min_duration", "cooldown"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value < 1e6:
                raise InputError(f"{where}: {key} must be seconds >= 0, got {value!r}")
        if not _is_number(self.hysteresis) or not 0 <= self.hysteresis < min(self.all_thresholds()):
            raise InputError(
                f"{where}: hysteresis must be >= 0 and below every threshold ({min(self.all_thresholds()):g}), "
                f"got {self.hysteresis!r}"
            )

    def all_thresholds(self) -> list[float]:
        """The detector's threshold and its per-stream ones."""
        return [float(self.threshold), *map(float, self.thresholds.values())]

    def threshold_for(self, stream: str) -> float:
        """The threshold on ``stream`` (a source name or :data:`FUSED`)."""
        return float(self.thresholds.get(stream, self.threshold))

    def score(self, probabilities: Mapping[str, float]) -> float:
        """The detector's score: the total probability of its prompts (missing labels count 0)."""
        return float(sum(probabilities.get(p, 0.0) for p in self.prompts))

    def streams(self, sources: Sequence[str]) -> list[str]:
        """The streams this detector reads, given the pipeline's sources (``"*"`` expanded, in order)."""
        out: list[str] = []
        for s in self.sources:
            for name in sources if s == ALL_SOURCES else [s]:
                if name not in out:
                    out.append(name)
        return out


@dataclass(frozen=True)
class WatchConfig:
    """A watch: its detectors, extra background labels and prompt templates (see the module docstring)."""

    detectors: tuple[Detector, ...]
    labels: tuple[str, ...] = ()
    templates: tuple[str, ...] | None = None
    name: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        if not self.detectors:
            raise InputError(f"{self._where()}: no detectors; add at least one [detectors.NAME] table")
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise InputError(f"{self._where()}: detector names must be unique, got {names}")
        for label in self.labels:
            if not isinstance(label, str) or not label.strip():
                raise InputError(f"{self._where()}: labels must be non-empty strings, got {label!r}")
        if self.templates is not None:
            if not self.templates or any(not isinstance(t, str) or "{}" not in t for t in self.templates):
                raise InputError(f"{self._where()}: templates must be a non-empty list of strings with {{}}")
        if len(self.label_set()) < 2:
            raise InputError(
                f"{self._where()}: the watch has one label ({self.label_set()[0]!r}): its probability would always "
                "be 1; add negatives, another detector or background labels so prompts compete"
            )

    def _where(self) -> str:
        return f"watch file {self.path}" if self.path else "watch"

    def label_set(self) -> list[str]:
        """Every label the pipeline must classify against: each detector's prompts and negatives, then the watch's
        labels, without repeats, in order."""
        out: list[str] = []
        for d in self.detectors:
            out.extend(p for p in (*d.prompts, *d.negatives) if p not in out)
        out.extend(p for p in self.labels if p not in out)
        return out

    def detector(self, name: str) -> Detector:
        for d in self.detectors:
            if d.name == name:
                return d
        raise InputError(f"{self._where()} has no detector {name!r}; it has {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def check_sources(self, sources: Sequence[str]) -> None:
        """Fail with one clear error when a detector reads a source the pipeline does not have."""
        known = set(sources) | {FUSED, ALL_SOURCES}
        for d in self.detectors:
            unknown = [s for s in (*d.sources, *d.thresholds) if s not in known]
            if unknown:
                raise InputError(
                    f"{self._where()}: detector {d.name!r} reads source {unknown[0]!r}, but the sources are "
                    f"{', '.join(sources) or 'none'} (or '*' for each, 'fused' for the fused result)"
                )

    def replace_detector(self, detector: Detector) -> "WatchConfig":
        """A copy with the detector of the same name replaced."""
        return replace(self, detectors=tuple(detector if d.name == detector.name else d for d in self.detectors))

    # --- TOML ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, text: str, path: str | Path | None = None) -> "WatchConfig":
        """Parse a watch file's text; every problem is one :class:`~lbedge.errors.InputError` naming it."""
        where = f"watch file {path}" if path else "watch"
        try:
            doc = _toml_loads(text)
        except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise InputError(f"{where} is not valid TOML: {exc}") from None
        unknown = sorted(set(doc) - {"watch", "detectors"})
        if unknown:
            raise InputError(
                f"{where}: unknown top-level key(s) {', '.join(unknown)}; expected [watch] and [detectors.NAME]"
            )
        head = doc.get("watch", {})
        if not isinstance(head, dict):
            raise InputError(f"{where}: [watch] must be a table")
        _no_unknown(where, "[watch]", head, _WATCH_KEYS)
        dets = doc.get("detectors")
        if not isinstance(dets, dict) or not dets:
            raise InputError(f"{where}: no detectors; add at least one [detectors.NAME] table with prompts = [...]")
        detectors = []
        for name, table in dets.items():
            dw = f"{where}: detector {name!r}"
            if not isinstance(table, dict):
                raise InputError(f"{dw} must be a table ([detectors.{name}])")
            _no_unknown(where, f"[detectors.{name}]", table, _DETECTOR_KEYS)
            kw: dict[str, Any] = {}
            for key in ("prompts", "negatives", "sources"):
                if key in table:
                    kw[key] = tuple(_strings(dw, key, table[key]))
            if "prompts" not in kw:
                raise InputError(f'{dw}: no prompts; give prompts = ["..."]')
            for key in ("threshold", "min_duration", "hysteresis", "cooldown"):
                if key in table:
                    if not _is_number(table[key]):
                        raise InputError(f"{dw}: {key} must be a number, got {table[key]!r}")
                    kw[key] = float(table[key])
            if "thresholds" in table:
                th = table["thresholds"]
                if not isinstance(th, dict) or not all(_is_number(v) for v in th.values()):
                    raise InputError(f"{dw}: thresholds must be a table of stream = number, got {th!r}")
                kw["thresholds"] = {str(k): float(v) for k, v in th.items()}
            if "calibration" in table:
                if not isinstance(table["calibration"], dict):
                    raise InputError(f"{dw}: calibration must be a table")
                kw["calibration"] = table["calibration"]
            try:
                detectors.append(Detector(name=str(name), **kw))
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        name = head.get("name", "")
        if not isinstance(name, str):
            raise InputError(f"{where}: [watch] name must be a string")
        labels = tuple(_strings(f"{where}: [watch]", "labels", head["labels"])) if "labels" in head else ()
        templates = None
        if "templates" in head:
            templates = tuple(_strings(f"{where}: [watch]", "templates", head["templates"]))
        return cls(tuple(detectors), labels, templates, name, Path(path) if path else None)

    @classmethod
    def load(cls, path: str | Path) -> "WatchConfig":
        """Read a watch file (one clear error when it is missing, too large or wrong)."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"watch file {p} not found (or not a file)")
        if p.stat().st_size > MAX_WATCH_BYTES:
            raise InputError(f"watch file {p} is larger than {MAX_WATCH_BYTES} bytes: not a watch file?")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"watch file {p} cannot be read as UTF-8 text: {exc}") from None
        return cls.from_toml(text, p)

    def to_toml(self) -> str:
        """The watch as TOML text that :meth:`from_toml` reads back to an equal config."""
        lines = ["[watch]"]
        if self.name:
            lines.append(f"name = {_toml_value(self.name)}")
        if self.templates is not None:
            lines.append(f"templates = {_toml_value(list(self.templates))}")
        if self.labels:
            lines.append(f"labels = {_toml_value(list(self.labels))}")
        for d in self.detectors:
            key = f"detectors.{_toml_key(d.name)}"
            lines += ["", f"[{key}]", f"prompts = {_toml_value(list(d.prompts))}"]
            if d.negatives:
                lines.append(f"negatives = {_toml_value(list(d.negatives))}")
            lines.append(f"sources = {_toml_value(list(d.sources))}")
            lines.append(f"threshold = {_toml_value(d.threshold)}")
            if d.thresholds:
                lines.append(f"thresholds = {_toml_value(dict(d.thresholds))}")
            for k in ("min_duration", "hysteresis", "cooldown"):
                lines.append(f"{k} = {_toml_value(getattr(d, k))}")
            if d.calibration:
                lines += _toml_table(f"{key}.calibration", d.calibration)
        return "\n".join(lines) + "\n"


def load_watch(watch: WatchConfig | str | Path) -> WatchConfig:
    """A :class:`WatchConfig` as given, or read from a watch file."""
    return watch if isinstance(watch, WatchConfig) else WatchConfig.load(watch)


@dataclass
class WatchEvent:
    """An event of one detector on one stream.

    ``kind``: ``"start"`` (sent when the event is confirmed: the score stayed at or above the threshold for
    ``min_duration``) or ``"end"`` (the score fell below threshold - hysteresis, the stream ended, or its time went
    back). ``start``: the time of the first frame at or above the threshold; ``confirmed``: when it became an event;
    ``end``: the time of the frame that ended it (None in a start). ``peak``/``peak_time``: the highest score so far
    and when; ``snapshot``: the frame at the peak. ``sources``: the sources that fired (for the fused stream, the
    fused sources whose own score reached the threshold while it lasted, or every fused source when none did alone).
    """

    detector: str
    stream: str
    kind: str
    start: float
    confirmed: float
    end: float | None
    peak: float
    peak_time: float
    threshold: float
    sources: list[str]
    reason: str = ""  # an end's cause: "below", "end of stream", "time went back"
    snapshot: Frame | None = field(default=None, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None for a start)."""
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (the snapshot as its source, sequence and modality)."""
        snap = self.snapshot
        return {
            "event": self.kind,
            "detector": self.detector,
            "stream": self.stream,
            "start": round(self.start, 4),
            "confirmed": round(self.confirmed, 4),
            "end": None if self.end is None else round(self.end, 4),
            "duration": None if self.duration is None else round(self.duration, 4),
            "peak": round(self.peak, 4),
            "peak_time": round(self.peak_time, 4),
            "threshold": round(self.threshold, 4),
            "sources": list(self.sources),
            "reason": self.reason,
            "snapshot": None
            if snap is None
            else {"source": snap.source, "sequence": snap.sequence, "modality": snap.modality},
        }

    def describe(self) -> str:
        """One line for a terminal."""
        on = f"{self.stream}" + (f" ({', '.join(self.sources)})" if self.stream == FUSED and self.sources else "")
        if self.kind == "start":
            return f"{self.detector} started on {on} at {self.start:.2f} s (confirmed {self.confirmed:.2f} s)"
        return (
            f"{self.detector} ended on {on}: {self.start:.2f}-{self.end:.2f} s, peak {self.peak:.2f} at "
            f"{self.peak_time:.2f} s ({self.reason})"
        )


class _Track:
    """The state of one detector on one stream."""

    def __init__(self) -> None:
        self.last_t: float | None = None
        self.pending_since: float | None = None  # first time above the threshold, not yet an event
        self.pending_peak = (-1.0, 0.0, None)  # (score, time, frame) while pending
        self.active: WatchEvent | None = None
        self.fired: list[str] = []
        self.quiet_until = -math.inf  # cooldown: no new event before this time


class TimeFusion:
    """Late fusion of the sources' probabilities by their frame times, independent of the order results arrive in.

    Results wait until every source has delivered one at the same time or later (a source more than ``skew``
    seconds behind the newest result, or ended, is not waited for); then, for each distinct time ``t`` in order,
    the fused probabilities are the mean of each source's latest probabilities at or before ``t`` within
    ``tolerance`` seconds. On recordings this gives the same fused stream however the sources' frames interleave
    in the pipeline (its own fusion compares whatever each source last delivered). Waiting holds results (and their
    frames) for up to ``skew`` seconds: live sources use ``skew=0`` (fused as they arrive, as the pipeline does).
    """

    def __init__(self, tolerance: float = 0.25, skew: float = 2.0, sources: Sequence[str] = ()):
        self.tolerance, self.skew = float(tolerance), float(skew)
        self.sources = list(sources)  # sources to wait for from the start (others: once they delivered)
        self._first = math.inf  # the earliest time delivered (since the last restart)
        self._queues: dict[str, collections.deque[tuple[float, dict[str, float], Any]]] = {}
        self._last: dict[str, float] = {}  # each source's newest time delivered
        self._latest: dict[str, tuple[float, dict[str, float]]] = {}  # each source's latest fused-in sample
        self._done = -math.inf

    def add(self, source: str, t: float, probs: Mapping[str, float], frame: Any = None) -> list[FusedSample]:
        """Add one source's probabilities at ``t``; returns the fused samples now complete, in time order."""
        if t < self._last.get(source, -math.inf) - self.skew:  # a looped recording, a reopened source: start afresh
            self._queues.clear()
            self._last.clear()
            self._latest.clear()
            self._done, self._first = -math.inf, math.inf
        self._first = min(self._first, t)
        self._queues.setdefault(source, collections.deque()).append((t, dict(probs), frame))
        self._last[source] = max(t, self._last.get(source, -math.inf))
        return self._drain(flush=False)

    def flush(self) -> list[FusedSample]:
        """The end of the stream: fuse everything still waiting."""
        return self._drain(flush=True)

    def _drain(self, flush: bool) -> list[FusedSample]:
        out: list[FusedSample] = []
        while True:
            heads = [q[0][0] for q in self._queues.values() if q]
            if not heads:
                return out
            t0 = min(heads)
            newest = max(self._last.values())
            waiting = [
                s
                for s in [*self._queues, *self.sources]
                if not self._queues.get(s) and newest - self._last.get(s, self._first) <= self.skew and not flush
            ]
            if waiting:
                return out
            frame = None
            for s, q in self._queues.items():
                while q and q[0][0] <= t0 + 1e-9:
                    t, probs, f = q.popleft()
                    self._latest[s] = (t, probs)
                    frame = frame or f
            if t0 < self._done:  # behind what was fused already (a source within skew, late): fused in, no sample
                continue
            self._done = t0
            names = sorted(
                (s for s, (t, _) in self._latest.items() if abs(t - t0) <= self.tolerance),
                key=lambda s: (self.sources.index(s) if s in self.sources else len(self.sources), s),
            )
            labels = set().union(*(self._latest[s][1] for s in names))
            mean = {k: sum(self._latest[s][1].get(k, 0.0) for s in names) / len(names) for k in labels}
            out.append(FusedSample(t0, mean, {s: self._latest[s][1] for s in names}, frame))


@dataclass
class FusedSample:
    """One fused time: the mean probabilities, each fused source's own, and a frame of that time."""

    time: float
    probabilities: dict[str, float]
    sources: dict[str, dict[str, float]]
    frame: Any = None


class WatchEngine:
    """Turns pipeline results into :class:`WatchEvent` s for a :class:`WatchConfig`.

    ``sources``: the pipeline's source names (to expand ``"*"`` and reject unknown names; None: any source seen).
    ``clock``: ``"device"`` (frames' own stamps where they have them, else host time) or ``"host"``.
    ``callback``: called with each event (starts and ends) as it happens. The ``"fused"`` stream is the engine's own
    :class:`TimeFusion` of the sources' results (``fusion_tolerance``, ``fusion_skew``), so that recordings give
    the same fused events however fast they are read. Feed results with :meth:`update` (or scores with
    :meth:`observe`) and call :meth:`close` at the end of the stream: it fuses what waits and ends open events.
    """

    def __init__(
        self,
        watch: WatchConfig | str | Path,
        sources: Sequence[str] | None = None,
        *,
        clock: str = "device",
        callback: Callable[[WatchEvent], None] | None = None,
        fusion_tolerance: float = 0.25,
        fusion_skew: float = 2.0,
    ):
        self.config = load_watch(watch)
        self.fusion = TimeFusion(fusion_tolerance, fusion_skew, list(sources or ()))
        self._fused = any(FUSED in d.sources for d in self.config.detectors)
        #: called with (detector, stream, time, score) for every score computed (calibration records them)
        self.score_hook: Callable[[str, str, float, float], None] | None = None
        if clock not in CLOCKS:
            raise InputError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        self.clock = clock
        self.sources = None if sources is None else list(sources)
        if self.sources is not None:
            self.config.check_sources(self.sources)
        self._callbacks: list[Callable[[WatchEvent], None]] = [callback] if callback else []
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._labels = set(self.config.label_set())
        #: every event sent, starts and ends, in order
        self.history: list[WatchEvent] = []
        #: results skipped because they lacked a detector's labels (e.g. classified before a label switch)
        self.skipped = 0

    def on_event(self, callback: Callable[[WatchEvent], None]) -> None:
        """Call ``callback(event)`` for every start and end."""
        self._callbacks.append(callback)

    @property
    def events(self) -> list[WatchEvent]:
        """The finished events (their ``"end"`` records), in the order they ended."""
        return [e for e in self.history if e.kind == "end"]

    def _streams_of(self, d: Detector, source: str) -> list[str]:
        out = []
        for s in d.sources:
            if s == source or (s == ALL_SOURCES and (self.sources is None or source in self.sources)):
                out.append(source)
        return out[:1]

    def result_time(self, frame: Frame | None, host: float) -> float:
        """The time of a result on this engine's clock."""
        if self.clock == "device" and frame is not None and frame.device_timestamp is not None:
            return float(frame.device_timestamp)
        return float(host)

    def update(self, result: Result) -> list[WatchEvent]:
        """Feed one pipeline result (its updated source's probabilities); returns the events sent."""
        u = result.update
        if not self._labels.issubset(u.scores):
            self.skipped += 1
            return []
        t = self.result_time(u.frame, u.timestamp)
        sent: list[WatchEvent] = []
        for d in self.config.detectors:
            if self._streams_of(d, u.source):
                sent += self._step(d, u.source, t, d.score(u.scores), u.frame, [u.source])
        if self._fused:
            for sample in self.fusion.add(u.source, t, u.scores, u.frame):
                sent += self._fuse(sample)
        return sent

    def _fuse(self, sample: FusedSample) -> list[WatchEvent]:
        sent: list[WatchEvent] = []
        for d in self.config.detectors:
            if FUSED in d.sources:
                thr = d.threshold_for(FUSED)
                fired = [n for n, p in sample.sources.items() if d.score(p) >= thr]
                score = d.score(sample.probabilities)
                sent += self._step(d, FUSED, sample.time, score, sample.frame, fired or list(sample.sources))
        return sent

    def observe(
        self,
        stream: str,
        time: float,
        probabilities: Mapping[str, float],
        *,
        frame: Frame | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[WatchEvent]:
        """Feed one stream's probabilities at ``time`` directly (without a pipeline); returns the events sent."""
        sent: list[WatchEvent] = []
        for d in self.config.detectors:
            if stream == FUSED and FUSED in d.sources or stream != FUSED and self._streams_of(d, stream):
                fired = list(sources) if sources is not None else ([] if stream == FUSED else [stream])
                sent += self._step(d, stream, float(time), d.score(probabilities), frame, fired)
        return sent

    def _step(
        self, d: Detector, stream: str, t: float, score: float, frame: Frame | None, fired: list[str]
    ) -> list[WatchEvent]:
        if self.score_hook is not None:
            self.score_hook(d.name, stream, t, score)
        track = self._tracks.setdefault((d.name, stream), _Track())
        sent: list[WatchEvent] = []
        if track.last_t is not None and t < track.last_t:  # a looped recording, a reopened source: start afresh
            if track.active is not None:
                sent.append(self._end(track, track.last_t, "time went back"))
            self._tracks[(d.name, stream)] = track = _Track()
        track.last_t = t
        thr = d.threshold_for(stream)
        if track.active is not None:
            ev = track.active
            if score < thr - d.hysteresis:
                sent.append(self._end(track, t, "below"))
                track.quiet_until = t + d.cooldown
            else:
                if score > ev.peak:
                    ev.peak, ev.peak_time, ev.snapshot = score, t, frame
                if score >= thr:
                    track.fired += [s for s in fired if s not in track.fired]
            self._send(sent)
            return sent
        if score < thr or t < track.quiet_until:
            track.pending_since = None
            self._send(sent)
            return sent
        if track.pending_since is None:
            track.pending_since, track.pending_peak, track.fired = t, (score, t, frame), list(fired)
        else:
            track.fired += [s for s in fired if s not in track.fired]
            if score > track.pending_peak[0]:
                track.pending_peak = (score, t, frame)
        if t - track.pending_since >= d.min_duration - 1e-9:
            peak, peak_t, snap = track.pending_peak
            track.active = WatchEvent(
                d.name, stream, "start", track.pending_since, t, None, peak, peak_t, thr, list(track.fired), "", snap
            )
            track.pending_since = None
            sent.append(replace(track.active))
        self._send(sent)
        return sent

    def _end(self, track: _Track, t: float, reason: str) -> WatchEvent:
        ev = track.active
        assert ev is not None
        track.active = None
        return replace(ev, kind="end", end=t, reason=reason, sources=list(track.fired))

    def _send(self, events: list[WatchEvent]) -> None:
        for ev in events:
            self.history.append(ev)
            for cb in self._callbacks:
                cb(ev)

    def close(self) -> list[WatchEvent]:
        """End the stream: what waits for fusion is fused, then every open event ends at its stream's last time;
        returns the events sent."""
        sent = []
        for sample in self.fusion.flush():
            sent += self._fuse(sample)
        for track in self._tracks.values():
            if track.active is not None and track.last_t is not None:
                sent.append(self._end(track, track.last_t, "end of stream"))
            track.pending_since = None
        self._send(sent)
        return sent

    def active(self) -> list[WatchEvent]:
        """The events going on now (as their starts, with the peak so far)."""
        return [replace(t.active) for t in self._tracks.values() if t.active is not None]


# --- calibration -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """Ground truth: from ``start`` to ``end`` seconds (the recording's clock), the detectors in ``present`` should
    fire; the others should not."""

    start: float
    end: float
    present: frozenset[str]

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


def load_truth(path: str | Path, detectors: Iterable[str] | None = None) -> list[Interval]:
    """Ground truth from a JSON file: a list of ``{"start": s, "end": s, "present": ["detector", ...]}``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"truth file {p} cannot be read as JSON: {exc}") from None
    if isinstance(doc, dict) and "intervals" in doc:
        doc = doc["intervals"]
    if not isinstance(doc, list):
        raise InputError(f"truth file {p}: expected a list of {{start, end, present}} intervals")
    known = None if detectors is None else set(detectors)
    out = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or set(item) - {"start", "end", "present"} or not {"start", "end"} <= set(item):
            raise InputError(f"truth file {p}, interval {i}: expected {{start, end, present}}, got {item!r}")
        if not (_is_number(item["start"]) and _is_number(item["end"]) and item["start"] < item["end"]):
            raise InputError(f"truth file {p}, interval {i}: start and end must be numbers with start < end")
        present = _strings(f"truth file {p}, interval {i}", "present", item.get("present", []), allow_empty=True)
        if known is not None and set(present) - known:
            raise InputError(
                f"truth file {p}, interval {i}: unknown detector(s) {', '.join(sorted(set(present) - known))}; "
                f"the watch has {', '.join(sorted(known))}"
            )
        out.append(Interval(float(item["start"]), float(item["end"]), frozenset(present)))
    return out


class ScoreRecorder:
    """Collects each detector's score on each of its streams, with times, from pipeline results (for
    :func:`calibrate`)."""

    def __init__(
        self, watch: WatchConfig, sources: Sequence[str] | None = None, *, clock: str = "device", **fusion: float
    ):
        self.engine = WatchEngine(watch, sources, clock=clock, **fusion)  # type: ignore[arg-type]
        self.engine.score_hook = self.add
        self.scores: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def update(self, result: Result) -> None:
        """Record the scores of one result (the fused stream's as soon as its time is complete)."""
        self.engine.update(result)

    def close(self) -> None:
        """The end of the recording: record the fused scores that waited."""
        self.engine.close()

    def add(self, detector: str, stream: str, t: float, score: float) -> None:
        self.scores.setdefault((detector, stream), []).append((float(t), float(score)))


def _quantile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def threshold_for_rate(negatives: Sequence[float], rate: float, floor: float = 0.05) -> float:
    """The lowest threshold (rounded up to 1e-4, at least ``floor``, at most 1) at which at most ``rate`` of the
    negative scores reach it."""
    if not 0 <= rate < 1:
        raise InputError(f"the false-alarm rate must be in [0, 1), got {rate}")
    xs = sorted(negatives, reverse=True)
    if not xs:
        raise InputError("no negative frames to calibrate on")
    allowed = int(math.floor(rate * len(xs) + 1e-9))
    if allowed >= len(xs):
        return floor
    th = math.ceil((xs[allowed] + 1e-4) * 1e4) / 1e4
    return float(min(1.0, max(floor, th)))


def calibrate(
    watch: WatchConfig,
    scores: Mapping[tuple[str, str], Sequence[tuple[float, float]]],
    *,
    false_alarm_rate: float = 0.01,
    truth: Sequence[Interval] | None = None,
    note: str = "",
) -> tuple[WatchConfig, list[dict[str, Any]]]:
    """Choose each detector's threshold on each stream from recorded ``scores`` ((detector, stream) -> [(time,
    score)]): the lowest at which at most ``false_alarm_rate`` of the negative frames reach it.

    Negative frames: without ``truth``, every frame (a recording of the empty scene); with ``truth``, the frames in
    an interval where the detector is not present (frames outside every interval are not used), and the frames
    where it is present are positives, whose frame recall at the threshold is reported. Returns the watch with
    per-stream ``thresholds`` and a ``calibration`` table per detector (what was measured), and one report row per
    (detector, stream). A hysteresis that the new threshold would not leave room for is lowered to half of it.
    """
    rows: list[dict[str, Any]] = []
    out = watch
    for d in watch.detectors:
        new_th: dict[str, float] = dict(d.thresholds)
        measured: dict[str, Any] = {"false_alarm_rate": float(false_alarm_rate)}
        if note:
            measured["data"] = note
        order = list(d.sources)
        streams = sorted(
            (st for name, st in scores if name == d.name),
            key=lambda st: (st == FUSED, order.index(st) if st in order else len(order), st),
        )
        for stream in streams:
            series = scores[(d.name, stream)]
            neg, pos = [], []
            for t, s in series:
                if truth is None:
                    neg.append(s)
                    continue
                cover = [iv for iv in truth if iv.covers(t)]
                if not cover:
                    continue
                (pos if any(d.name in iv.present for iv in cover) else neg).append(s)
            if not neg:
                rows.append(
                    {
                        "detector": d.name,
                        "stream": stream,
                        "negatives": 0,
                        "positives": len(pos),
                        "threshold": d.threshold_for(stream),
                        "note": "no negative frames: threshold kept",
                    }
                )
                continue
            th = threshold_for_rate(neg, false_alarm_rate)
            new_th[stream] = th
            row: dict[str, Any] = {
                "detector": d.name,
                "stream": stream,
                "negatives": len(neg),
                "negative_mean": round(sum(neg) / len(neg), 4),
                "negative_p99": round(_quantile(neg, 0.99), 4),
                "negative_max": round(max(neg), 4),
                "threshold": th,
                "frame_false_alarm_rate": round(sum(s >= th for s in neg) / len(neg), 4),
                "positives": len(pos),
            }
            if len(neg) * false_alarm_rate < 1 and false_alarm_rate > 0:
                row["note"] = f"only {len(neg)} negative frames: too few to measure a rate of {false_alarm_rate:g}"
            if pos:
                row["positive_mean"] = round(sum(pos) / len(pos), 4)
                row["positive_p10"] = round(_quantile(pos, 0.10), 4)
                row["frame_recall"] = round(sum(s >= th for s in pos) / len(pos), 4)
            rows.append(row)
            measured[stream] = {k: v for k, v in row.items() if k not in ("detector", "stream")}
        if not any(name == d.name for name, _ in scores):
            continue
        hyst = d.hysteresis
        lowest = min([d.threshold, *new_th.values()])
        if hyst >= lowest:
            hyst = round(lowest / 2, 4)
        out = out.replace_detector(replace(d, thresholds=new_th, hysteresis=hyst, calibration=measured))
    return out, rows


# --- helpers -----------------------------------------------------------------------------------------------------
def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise MissingDependency("reading watch files on Python 3.10 needs tomli: pip install tomli") from None
    return tomllib.loads(text)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_threshold(where: str, key: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value <= 1:
        raise InputError(f"{where}: {key} is a score in (0, 1], got {value!r}")


def _no_unknown(where: str, table: str, doc: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)} in {table}; allowed: {', '.join(sorted(allowed))}"
        )


def _strings(where: str, key: str, value: Any, *, allow_empty: bool = False) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(f"{where}: {key} must be a list of non-empty strings, got {value!r}")
    if not value and not allow_empty and key == "prompts":
        raise InputError(f"{where}: prompts is empty; give at least one prompt")
    return [v.strip() for v in value]


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise InputError(f"cannot write {value!r} to a watch file")


def _toml_table(key: str, doc: Mapping[str, Any]) -> list[str]:
    lines = ["", f"[{key}]"]
    subs = []
    for k, v in doc.items():
        if isinstance(v, Mapping):
            subs.append((k, v))
        else:
            lines.append(f"{_toml_key(str(k))} = {_toml_value(v)}")
    for k, v in subs:
        lines += _toml_table(f"{key}.{_toml_key(str(k))}", v)
    return lines


__all__ = [
    "ALL_SOURCES",
    "FUSED",
    "Detector",
    "FusedSample",
    "Interval",
    "ScoreRecorder",
    "TimeFusion",
    "WatchConfig",
    "WatchEngine",
    "WatchEvent",
    "calibrate",
    "load_truth",
    "load_watch",
    "threshold_for_rate",
]
