"""The streaming pipeline: sources -> preprocessing -> inference -> zero-shot results, in threads.

One reader thread per source reads and preprocesses frames (overlapping the model) into a bounded queue:
a live source keeps only its newest frame (a slow model drops frames, it never lags behind the sensor), a
recording is read without drops (the reader waits, paced or not), and frames a source itself could not deliver
(its ``frames_lost``: a damaged file, a gap in a device's frame numbers) are reported as events and in
:meth:`Pipeline.stats`. One worker thread classifies the frames ready at each moment in one batch per modality
(several sources of a modality, or several frames of a recording, up to ``max_batch``; several recordings read as
fast as possible are taken in the time order of their frames' stamps across sources, so that a replay gives the
same results every time), smooths each source's labels over time (EMA or majority with hysteresis, so labels do not
flicker), fuses the latest per-source probabilities whose timestamps lie within ``sync_tolerance`` of each other
(host capture times, or with ``sync_clock="device"`` the sensors' own stamps, e.g. ROS message stamps), and
publishes a :class:`Result` to the iterator and the callbacks.

Labels can change while the pipeline runs (:meth:`Pipeline.set_labels`): the new prompts are embedded in background
threads, then the label set is switched between two batches; every result says which set classified it
(``labels_version``).

Every thread is supervised; what the pipeline promises:

- A source that fails is closed and reopened with exponential backoff while the others go on. A recording
  resumes after the last frame it delivered (it never repeats a frame); see :class:`ReopenPolicy` for when a
  source is given up. A frame that cannot be preprocessed or embedded is skipped, and only that frame.
- A source that delivers no frame for ``stall_timeout`` seconds is reported (and again when it resumes).
- Every failure, reopening, stall and end is an event, in the results and in ``event_log``.
- If the worker itself fails, the pipeline stops and iterating it raises :class:`PipelineError`: no exception
  leaves ``for r in pipeline`` waiting. ``stop()`` may be called from any thread, callbacks included.

The runtime only knows the :class:`~lbedge.frames.Source` protocol; concrete sensors live in ``lbedge.sensors``.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .encoder import Encoder
from .errors import LBEdgeError, SensorError
from .frames import Frame, Source, SourceTraits
from .gate import ChangeGate, GateDecision, GateState, resolve_gates
from .zeroshot import ZeroShotClassifier, check_labels, check_templates

if TYPE_CHECKING:
    from .watch import WatchConfig, WatchEngine, WatchEvent

log = logging.getLogger(__name__)
#: where events are logged (at WARNING, or INFO for recoveries and ends); an application that shows the events
#: itself (``lbedge demo``) silences this logger to print each event once
event_log_channel = logging.getLogger(__name__ + ".events")

#: exceptions a sensor may raise when it goes away for a while (unplugged, stream lost, driver hiccup): retried
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (SensorError, OSError, RuntimeError, TimeoutError)
#: the clocks fusion can compare: the host's capture time, or the sensors' own stamps (``Frame.device_timestamp``)
SYNC_CLOCKS = ("host", "device")


class PipelineError(LBEdgeError):
    """The pipeline could not go on (its worker failed); the message names the cause."""


@dataclass(frozen=True)
class ReopenPolicy:
    """When a failing source is reopened, and when it is given up.

    Failures are counted over the last ``window_s`` seconds, whatever happened between them. A live source that
    fails with a sensor error (unplugged, stream lost: :data:`TRANSIENT_ERRORS`) is reopened for ever unless
    ``max_failures`` is set; any other error (a bug or a configuration problem in the source) and any failure of
    a recording is given up after ``max_failures`` (default ``max_failures_default``) failures in the window.
    Waits between reopenings double from ``backoff[0]`` up to ``backoff[1]`` seconds.
    """

    backoff: tuple[float, float] = (0.5, 8.0)
    max_failures: int | None = None
    max_failures_default: int = 3
    window_s: float = 60.0

    def __post_init__(self) -> None:
        lo, hi = self.backoff
        if not (0 < lo <= hi):
            raise LBEdgeError(f"reopen backoff must be 0 < first <= last seconds, got {self.backoff}")
        if self.max_failures is not None and self.max_failures < 0:
            raise LBEdgeError(f"max_failures must be >= 0 or None, got {self.max_failures}")
        if self.max_failures_default < 0 or not self.window_s > 0:
            raise LBEdgeError("max_failures_default must be >= 0 and window_s positive")

    def limit(self, live: bool, exc: BaseException) -> int | None:
        """How many failures in the window a source may have before it is given up (None: no limit)."""
        if self.max_failures is not None:
            return self.max_failures
        if live and isinstance(exc, TRANSIENT_ERRORS):
            return None
        return self.max_failures_default


@dataclass
class SourceResult:
    source: str
    modality: str
    sequence: int
    timestamp: float
    label: str  # the smoothed label
    scores: dict[str, float]  # smoothed probabilities, highest first (top-k)
    raw_label: str  # this frame's own top label
    latency_ms: float  # capture to result
    infer_ms: float  # the model time of the batch this frame was in
    batch: int = 1  # frames embedded together (sources of one modality, recorded frames)
    preprocess_ms: float = 0.0  # this frame's preprocessing (in its reader thread)
    frame: Frame | None = field(default=None, repr=False)  # the classified frame (for overlays)
    labels_version: int = 0  # the label set this frame was classified with (0: the pipeline's first)
    reused: bool = False  # change gate: the model was skipped, this is the last classified frame's result again
    age_s: float = 0.0  # when reused: seconds since that classified frame (the fusion clock)


@dataclass
class Result:
    """What the pipeline publishes after each classified frame."""

    timestamp: float
    update: SourceResult  # the frame that triggered this result
    sources: dict[str, SourceResult]  # latest result of every source
    fused_label: str | None = None  # late fusion over synchronised sources
    fused_scores: dict[str, float] = field(default_factory=dict)
    fused_sources: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # source failures, reopenings, stalls, ends
    labels_version: int = 0  # the label set of every score in this result (see Pipeline.set_labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": round(self.timestamp, 4),
            "labels_version": self.labels_version,
            "update": {
                **{k: v for k, v in self.update.__dict__.items() if k not in ("frame", "labels_version")},
                "scores": {k: round(v, 4) for k, v in self.update.scores.items()},
            },
            "fused": {
                "label": self.fused_label,
                "sources": self.fused_sources,
                "scores": {k: round(v, 4) for k, v in self.fused_scores.items()},
            },
            "events": self.events,
        }


class Smoother:
    """EMA (or majority over N) of one source's probabilities, with hysteresis on the displayed label."""

    def __init__(self, method: str = "ema", alpha: float = 0.5, window: int = 5, hysteresis: float = 0.1):
        if method not in ("ema", "majority", "none"):
            raise LBEdgeError(f"unknown smoothing {method!r}: ema, majority or none")
        if not 0 < alpha <= 1:
            raise LBEdgeError(f"ema_alpha must be in (0, 1], got {alpha}")
        if window < 1:
            raise LBEdgeError(f"majority_window must be at least 1, got {window}")
        self.method, self.alpha, self.hysteresis = method, alpha, hysteresis
        self.state: np.ndarray | None = None
        self.history: collections.deque[int] = collections.deque(maxlen=window)
        self.current: int | None = None

    def update(self, probs: np.ndarray) -> tuple[int, np.ndarray]:
        if self.method == "none":
            return int(np.argmax(probs)), probs
        self.state = probs if self.state is None else self.alpha * probs + (1 - self.alpha) * self.state
        if self.method == "majority":
            self.history.append(int(np.argmax(probs)))
            counts = np.bincount(np.asarray(self.history), minlength=len(probs))
            best = int(np.argmax(counts))
            if self.current is None or counts[best] > counts[self.current]:
                self.current = best
            return self.current, self.state
        best = int(np.argmax(self.state))
        if self.current is None or self.state[best] >= self.state[self.current] + self.hysteresis:
            self.current = best
        return self.current, self.state


class _SourceState:
    """What the pipeline tracks about one source (touched by its reader and the worker)."""

    def __init__(self) -> None:
        self.delivered = 0  # frames read since the source first opened (a recording resumes here)
        self.opened_once = False
        self.is_open = False
        self.needs_resume = False  # a recording reopened after a failure: skip what was delivered
        self.failures: collections.deque[float] = collections.deque()  # times of recent failures
        self.bad_frames = 0  # consecutive frames that could not be preprocessed
        self.skipped = 0  # frames skipped (preprocessing or model), in all
        self.lost_seen = 0  # the source's frames_lost when last looked at
        self.lost_reports = 0  # times a loss was found (the first are reported one by one)
        self.last_frame = time.monotonic()
        self.stalled = False
        self.finished = False


_REPORTED_FIRST = 3  # the first skipped frames of a run are reported one by one...
_REPORT_EVERY = 100  # ...then one event every this many


class Pipeline:
    """Classify several sources' frames zero-shot against ``labels``; iterate results or register callbacks.

    ``encoders``: one Encoder per modality (``{"image": enc, "depth": enc2}``), or one Encoder for all sources.
    ``reopen``: a :class:`ReopenPolicy` (``reopen_backoff`` and ``max_reopen`` set its backoff and
    ``max_failures``). ``stall_timeout``: seconds without a frame before a source is reported stalled (at least
    three frame periods of a source that states its ``fps``). ``max_bad_frames``: consecutive frames of a
    source that fail preprocessing before the source is ended (None: never). ``progress``: called with
    ``(done, total)`` while the label prompts are embedded. ``sync_clock``: the times fusion compares, ``"host"``
    (capture on this host) or ``"device"`` (each frame's ``device_timestamp``, the sensor's or the message's own
    stamp, when every source stamps its frames on one clock: ROS 2 topics, a rosbag2 recording; a frame without one
    is compared by its host time). ``gate``: change-gated inference (:mod:`lbedge.gate`), one
    :class:`~lbedge.gate.ChangeGate` for every source or a mapping source name -> gate (None: off, the default): a
    frame whose input barely changed since the source's last classified frame re-emits that result (marked
    ``reused``) without running the model, until the gate's maximum age (docs/sensors.md, "Change-gated inference").
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        encoders: Mapping[str, Encoder] | Encoder,
        labels: Sequence[str],
        *,
        templates: Sequence[str] | None = None,
        top_k: int = 3,
        smoothing: str = "ema",
        ema_alpha: float = 0.5,
        majority_window: int = 5,
        hysteresis: float = 0.1,
        sync_tolerance: float = 0.25,
        reopen_backoff: tuple[float, float] | None = None,
        max_reopen: int | None = None,
        reopen: ReopenPolicy | None = None,
        stall_timeout: float = 10.0,
        max_bad_frames: int | None = 100,
        results_queue: int = 16,
        max_batch: int = 8,
        progress: Callable[[int, int], None] | None = None,
        sync_clock: str = "host",
        gate: ChangeGate | Mapping[str, ChangeGate | None] | None = None,
    ):
        if not sources:
            raise LBEdgeError("a pipeline needs at least one source")
        if max_batch < 1:
            raise LBEdgeError("max_batch must be at least 1")
        if not stall_timeout > 0:
            raise LBEdgeError(f"stall_timeout must be positive seconds, got {stall_timeout}")
        if max_bad_frames is not None and max_bad_frames < 1:
            raise LBEdgeError(f"max_bad_frames must be at least 1 or None, got {max_bad_frames}")
        if results_queue < 1:
            raise LBEdgeError(f"results_queue must be at least 1, got {results_queue}")
        if sync_clock not in SYNC_CLOCKS:
            raise LBEdgeError(f"sync_clock must be one of {', '.join(SYNC_CLOCKS)}, got {sync_clock!r}")
        self.sources = dict(sources)
        by_modality = (
            {m: encoders for m in {s.modality for s in self.sources.values()}}
            if isinstance(encoders, Encoder)
            else dict(encoders)
        )
        missing = sorted({s.modality for s in self.sources.values()} - set(by_modality))
        if missing:
            raise LBEdgeError(f"no encoder for modality {', '.join(missing)}: pass encoders={{modality: Encoder}}")
        self.classifiers = {
            m: ZeroShotClassifier(e, labels, templates=templates, top_k=len(labels), progress=progress)
            for m, e in by_modality.items()
        }
        self.labels = list(next(iter(self.classifiers.values())).labels)
        self._top_k = int(top_k)
        self.top_k = max(1, min(self._top_k, len(self.labels)))
        self.max_batch = max_batch
        self._smoothing = (smoothing, ema_alpha, majority_window, hysteresis)
        self._smooth = {n: Smoother(*self._smoothing) for n in self.sources}
        self.sync_tolerance = sync_tolerance
        self.sync_clock = sync_clock
        self._templates = None if templates is None else list(templates)
        #: the label set results are classified with now: 0 for the labels given here, then one more per switch
        self.labels_version = 0
        self._labels_requested = 0  # the newest version asked for by set_labels
        # held while a batch is classified, smoothed and fused: a label switch waits for it, never cuts one in two
        self._classify_lock = threading.Lock()
        policy = reopen or ReopenPolicy()
        if reopen_backoff is not None or max_reopen is not None:
            policy = ReopenPolicy(
                tuple(reopen_backoff or policy.backoff),
                max_reopen if max_reopen is not None else policy.max_failures,
                policy.max_failures_default,
                policy.window_s,
            )
        self.reopen = policy
        self.stall_timeout = float(stall_timeout)
        self.max_bad_frames = max_bad_frames
        self._queues = {n: queue.Queue(maxsize=1 if s.live else max(4, max_batch)) for n, s in self.sources.items()}
        # several recordings read as fast as possible are replayed in time order across sources (_gather_in_order),
        # so that a replay gives the same results, fused stream and watch events however its readers are scheduled
        self._in_order = len(self.sources) > 1 and all(
            not s.live and not SourceTraits.of(s).realtime for s in self.sources.values()
        )
        self._heads: dict[str, tuple[float, tuple[Frame, np.ndarray, float]] | None] = {n: None for n in self.sources}
        self._replay_clock = {n: (-math.inf, 0.0) for n in self.sources}  # per source: last time, shift (loops)
        self._results: queue.Queue[Result | None] = queue.Queue(maxsize=results_queue)
        self._callbacks: list[Callable[[Result], None]] = []
        # events not yet attached to a result (bounded: a source failing for hours with no result to carry them)
        self._events: collections.deque[str] = collections.deque(maxlen=100)
        self.event_log: collections.deque[str] = collections.deque(maxlen=1000)  # every event, newest last
        self.event_count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = {n: _SourceState() for n in self.sources}
        self._threads: list[threading.Thread] = []
        self._worker_thread: threading.Thread | None = None
        self._latest: dict[str, tuple[SourceResult, np.ndarray, float]] = {}  # result, smoothed probs, sync time
        self.dropped = {n: 0 for n in self.sources}
        self.processed = {n: 0 for n in self.sources}
        self._recent = {n: collections.deque(maxlen=100) for n in self.sources}  # (time, latency, pre, infer)
        self.results_dropped = 0
        # change gating (lbedge.gate), touched by the worker only: per gated source its state, the logits of its
        # reference frame (by reference id), and the results that re-emitted them instead of running the model
        self._gates = {n: GateState(g) for n, g in resolve_gates(gate, list(self.sources)).items()}
        self._gate_logits: dict[str, tuple[int, np.ndarray]] = {}
        self.reused = {n: 0 for n in self.sources}
        self.error: BaseException | None = None  # what ended the worker, when it failed
        self._started = False
        self._iterating = False
        self._end_sent = False

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "Pipeline":
        if self._started:
            return self
        self._started = True
        for name in self.sources:
            t = threading.Thread(target=self._reader, args=(name,), name=f"lbedge-reader-{name}", daemon=True)
            self._threads.append(t)
        self._worker_thread = threading.Thread(target=self._worker, name="lbedge-worker", daemon=True)
        self._threads.append(self._worker_thread)
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread and close every source. Safe from any thread, result callbacks included."""
        self._stop.set()
        me = threading.current_thread()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive() and t is not me]
        if alive:
            log.warning("threads still running after stop(): %s (a source blocked in read)", alive)
        self._send_end()

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def on_result(self, callback: Callable[[Result], None]) -> None:
        """Call ``callback(result)`` from the worker thread for every result (keep it quick)."""
        self._callbacks.append(callback)

    def watch(
        self,
        watch: "WatchConfig | str",
        callback: "Callable[[WatchEvent], None] | None" = None,
        *,
        timeout: float = 120.0,
    ) -> "WatchEngine":
        """Run a watch (a :class:`~lbedge.watch.WatchConfig` or a watch file's path; docs/watches.md) over this
        pipeline's results and return its :class:`~lbedge.watch.WatchEngine`.

        The watch's prompts missing from the labels are added (:meth:`set_labels`, waiting up to ``timeout`` s for
        the switch), every result then carries every label's probability, and events go to ``callback`` (from the
        worker thread) and ``engine.history``. Call ``engine.close()`` once the pipeline has ended: it ends the
        events still open. Times are the frames' own stamps for recordings, host times for live sources.
        """
        from concurrent import futures

        from .watch import WatchEngine

        live = any(s.live for s in self.sources.values())
        clock = "device" if self.sync_clock == "device" or not live else "host"
        engine = WatchEngine(
            watch,
            list(self.sources),
            clock=clock,
            callback=callback,
            fusion_tolerance=self.sync_tolerance,
            fusion_skew=0.0 if live else 10.0,  # recordings: wait for a slow reader (the same events every time)
        )
        cfg = engine.config
        with self._classify_lock:
            self._top_k = max(self._top_k, 1 << 20)  # detectors read every label's probability
            self.top_k = len(self.labels)
            missing = [p for p in cfg.label_set() if p not in self.labels]
            new_templates = cfg.templates is not None and list(cfg.templates) != self._templates
        if missing or new_templates:
            try:
                self.set_labels([*self.labels, *missing], cfg.templates).result(timeout)
            except (TimeoutError, futures.TimeoutError):  # one class from Python 3.11, two before
                raise LBEdgeError(f"the watch's prompts were not embedded within {timeout:g} s") from None
        self.on_result(engine.update)
        return engine

    # --- labels --------------------------------------------------------------------------------------------
    def set_labels(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> Future:
        """Classify against ``labels`` from now on, without stopping the pipeline; thread-safe, callable from a
        result callback, a ROS parameter callback or any thread, before or while the pipeline runs.

        The labels (and ``templates``; None keeps the pipeline's) are checked here, so a bad label set raises
        :class:`~lbedge.errors.InputError` at once and nothing changes. The new prompts are then embedded in one
        background thread per modality (through the prompt cache), while results go on with the current labels;
        once every modality is ready, the worker switches all of them at once between two batches: no frame is
        lost, and each is classified, smoothed and fused against one label set, which its result names in
        ``labels_version``. Smoothing and fusion start afresh with the new set (their state belongs to the old one).

        Returns a :class:`concurrent.futures.Future` whose result is the new ``labels_version`` once the switch
        happened. It fails with :class:`~lbedge.errors.LBEdgeError` when the prompts could not be embedded (the
        labels stay as they were) or when a newer call switched first (this older set is then never used).
        """
        new = check_labels(labels)
        tpl = check_templates(templates) if templates is not None else self._templates
        with self._lock:
            self._labels_requested += 1
            version = self._labels_requested
        future: Future = Future()
        future.set_running_or_notify_cancel()
        threading.Thread(
            target=self._prepare_labels,
            args=(version, new, tpl, future),
            name=f"lbedge-labels-{version}",
            daemon=True,
        ).start()
        return future

    def label_set(self) -> tuple[int, list[str]]:
        """(``labels_version``, labels) as one consistent pair (never the version of one set with the other's labels;
        it may wait for the batch being classified)."""
        with self._classify_lock:
            return self.labels_version, list(self.labels)

    def _prepare_labels(self, version: int, labels: list[str], templates: list[str] | None, future: Future) -> None:
        """Embed ``labels`` for every modality (one thread each), then switch to them (see :meth:`set_labels`)."""
        ready: dict[str, ZeroShotClassifier] = {}
        failed: list[str] = []

        def embed(modality: str, clf: ZeroShotClassifier) -> None:
            try:
                ready[modality] = ZeroShotClassifier(clf.encoder, labels, templates=templates, top_k=len(labels))
            except Exception as exc:  # noqa: BLE001 - reported through the future, the labels stay as they were
                failed.append(f"{modality}: {_describe(exc)}")

        threads = [
            threading.Thread(target=embed, args=(m, c), name=f"lbedge-labels-{version}-{m}", daemon=True)
            for m, c in self.classifiers.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            self._event(f"labels version {version} not used: embedding failed ({'; '.join(failed)})", logging.ERROR)
            future.set_exception(LBEdgeError(f"the new labels could not be embedded: {'; '.join(failed)}"))
            return
        with self._classify_lock:
            if version <= self.labels_version:
                superseded = self.labels_version
            else:
                superseded = 0
                self.classifiers = ready
                self.labels = list(labels)
                self._templates = templates
                self.top_k = max(1, min(self._top_k, len(self.labels)))
                self._smooth = {n: Smoother(*self._smoothing) for n in self.sources}
                self._latest.clear()
                self.labels_version = version
        if superseded:
            future.set_exception(
                LBEdgeError(f"labels version {version} was superseded by version {superseded}, which switched first")
            )
            return
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
        self._event(f"labels switched to version {version}: {shown}", logging.INFO)
        future.set_result(version)

    def __iter__(self) -> Iterator[Result]:
        """Results as they come; ends when every recording has ended (live sources never end) or on stop().

        Raises :class:`PipelineError` when the worker failed (after the results it published before)."""
        self._iterating = True
        self.start()
        while True:
            try:
                item = self._results.get(timeout=0.25)
            except queue.Empty:
                worker = self._worker_thread
                if worker is not None and not worker.is_alive() and self._results.empty():
                    break  # the worker is gone: never wait for it
                continue
            if item is None:
                break
            yield item
        if self.error is not None:
            raise PipelineError(f"the pipeline stopped: {_describe(self.error)}") from self.error

    def stats(self) -> dict[str, dict[str, float]]:
        """Per source, over its last 100 results: FPS, median capture-to-result latency, preprocessing and
        model time (ms), and the running totals of processed, dropped (a live sensor's frames replaced by newer
        ones), skipped (unusable) and lost frames (frames the source itself never delivered: a recording's damaged
        or missing frames, gaps in a device's frame numbers; the source's ``frames_lost``), and reused (results of
        the change gate that re-emitted the last classified frame's result: model calls skipped; ``processed``
        counts them too)."""
        out = {}
        for name, recent in self._recent.items():
            rows = list(recent)
            span = rows[-1][0] - rows[0][0] if len(rows) > 1 else 0.0

            def med(i: int, rows: list = rows) -> float:
                vals = [r[i] for r in rows if r[i] is not None]  # reused results have no model time
                return round(float(np.median(vals)), 2) if vals else 0.0

            out[name] = {
                "fps": round((len(rows) - 1) / span, 2) if span > 0 else 0.0,
                "latency_ms": med(1),
                "preprocess_ms": med(2),
                "infer_ms": med(3),
                "processed": self.processed[name],
                "dropped": self.dropped[name],
                "skipped": self._state[name].skipped,
                "lost": frames_lost(self.sources[name]),
                "reused": self.reused[name],
            }
        return out

    def source_states(self) -> dict[str, str]:
        """Per source: ``starting`` (not opened yet), ``running``, ``stalled`` (no frame for ``stall_timeout``),
        ``reopening`` (failed, waiting to be reopened) or ``ended`` (a recording's end, or given up)."""
        out = {}
        with self._lock:
            for name, st in self._state.items():
                if st.finished:
                    out[name] = "ended"
                elif not st.opened_once:
                    out[name] = "starting"
                elif not st.is_open:
                    out[name] = "reopening"
                else:
                    out[name] = "stalled" if st.stalled else "running"
        return out

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # --- events --------------------------------------------------------------------------------------------
    def _event(self, text: str, level: int = logging.WARNING) -> None:
        event_log_channel.log(level, text)
        with self._lock:
            self._events.append(text)
            self.event_log.append(text)
            self.event_count += 1

    def events_since(self, count: int) -> list[str]:
        """The events after the first ``count`` (``event_count`` is how many there were in all): what a consumer
        that shows every event once has not shown yet (the oldest may be gone from the bounded log)."""
        with self._lock:
            new = self.event_count - count
            return list(self.event_log)[-new:] if new > 0 else []

    def _send_end(self) -> None:
        """Tell the iterator that nothing more comes (once; never blocks)."""
        with self._lock:
            if self._end_sent:
                return
            self._end_sent = True
        try:
            self._results.put_nowait(None)
        except queue.Full:  # a consumer that is behind sees the end once it catches up
            threading.Thread(target=self._put_end_later, name="lbedge-end", daemon=True).start()

    def _put_end_later(self) -> None:
        while True:
            try:
                self._results.put(None, timeout=0.5)
                return
            except queue.Full:
                if not self._iterating:
                    return

    # --- readers -------------------------------------------------------------------------------------------
    def _reader(self, name: str) -> None:
        """Read, preprocess and queue one source's frames until it ends, is given up, or the pipeline stops."""
        src, state = self.sources[name], self._state[name]
        try:
            self._read_loop(name, src, state)
        except BaseException as exc:  # noqa: BLE001 - a reader must end with an event, whatever happened
            self._event(f"source {name} stopped: internal error: {_describe(exc)}", logging.ERROR)
            log.debug("reader %s failed", name, exc_info=True)
        finally:
            try:
                src.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken device must not fail the pipeline
                log.debug("closing %s: %s", name, exc)
            with self._lock:
                state.finished = True

    def _read_loop(self, name: str, src: Source, state: _SourceState) -> None:
        q = self._queues[name]
        delay = self.reopen.backoff[0]
        # a recording read as fast as possible keeps one frame in hand, so that its end is known (and its event
        # attached) before the last frame goes to the worker; paced and live sources never wait on the next frame
        hold_back = not src.live and not SourceTraits.of(src).realtime
        held = None
        recovering = False
        while not self._stop.is_set():
            try:
                frame = self._next_frame(name, src, state)
            except BaseException as exc:  # noqa: BLE001 - a sensor may fail in any way: report, back off, reopen
                if (
                    isinstance(exc, (KeyboardInterrupt, SystemExit))
                    and threading.current_thread() is threading.main_thread()
                ):
                    raise
                if not self._on_failure(name, src, state, exc, delay):
                    break
                recovering = True
                delay = min(delay * 2, self.reopen.backoff[1])
                continue
            if recovering:
                self._event(
                    f"source {name} recovered (resumed at frame {state.delivered - 1})"
                    if not src.live
                    else f"source {name} recovered",
                    logging.INFO,
                )
                recovering, delay = False, self.reopen.backoff[0]
            if frame is None:
                self._end_event(name, src, state)
                break
            item = self._prepare(name, frame, state)
            if item is None:
                if self.max_bad_frames is not None and state.bad_frames >= self.max_bad_frames:
                    self._event(
                        f"source {name} ended: its last {state.bad_frames} frames could not be used "
                        "(see the events before; a configuration problem?)",
                        logging.ERROR,
                    )
                    break
                continue
            if src.live:
                try:
                    q.get_nowait()  # keep only the newest frame of a live sensor
                    self.dropped[name] += 1
                except queue.Empty:
                    pass
                q.put_nowait(item)
            elif hold_back:
                if held is not None:
                    self._put_waiting(q, held, state)
                held = item
            else:
                self._put_waiting(q, item, state)
        if held is not None:
            self._put_waiting(q, held, state)

    def _end_event(self, name: str, src: Source, state: _SourceState) -> None:
        """The event that a recording ended, with the frames it lost in all (a warning then)."""
        lost = frames_lost(src)
        state.lost_seen = lost
        text = f"source {name} ended" + ("" if state.delivered else " without delivering a frame (empty recording?)")
        if lost:
            text += f"; {lost} of its frames were lost (never delivered)"
        self._event(text, logging.WARNING if lost else logging.INFO)

    def _check_lost(self, name: str, src: Source, state: _SourceState, frame: Frame) -> None:
        """Report frames the source lost since it was last looked at (the first times one by one, then every
        ``_REPORT_EVERY``-th time; the end event and ``stats()`` give the total)."""
        lost = frames_lost(src)
        if lost <= state.lost_seen:
            state.lost_seen = min(state.lost_seen, lost)
            return
        new, state.lost_seen = lost - state.lost_seen, lost
        state.lost_reports += 1
        if state.lost_reports <= _REPORTED_FIRST or state.lost_reports % _REPORT_EVERY == 0:
            self._event(f"source {name}: {new} frame(s) lost before frame {frame.sequence} ({lost} in all)")

    def _next_frame(self, name: str, src: Source, state: _SourceState) -> Frame | None:
        """Open the source if needed (a reopened recording resumes after its last delivered frame) and read."""
        if not state.is_open:
            src.open()
            state.is_open = state.opened_once = True
            state.last_frame = time.monotonic()  # a stall counts from the opening, not from the pipeline's creation
        if state.needs_resume:
            self._resume(src, state)
            state.needs_resume = False
        frame = src.read()
        if frame is not None:
            state.delivered += 1
            state.last_frame = time.monotonic()
            if state.stalled:
                state.stalled = False
                self._event(f"source {name} delivers frames again", logging.INFO)
            self._check_lost(name, src, state, frame)
        return frame

    def _resume(self, src: Source, state: _SourceState) -> None:
        """Position a reopened recording after the frames it already delivered."""
        want = state.delivered
        if SourceTraits.of(src).can_seek:
            got = int(src.seek(want))  # type: ignore[attr-defined]
        else:
            got = 0
            while got < want and not self._stop.is_set() and src.read() is not None:
                got += 1
        if got < want and not self._stop.is_set():
            raise SensorError(f"the recording holds only {got} frames now, {want} were already delivered")

    def _on_failure(self, name: str, src: Source, state: _SourceState, exc: BaseException, delay: float) -> bool:
        """Close a failed source and decide: True to reopen it after ``delay``, False to give it up."""
        now = time.monotonic()
        state.failures.append(now)
        while state.failures and now - state.failures[0] > self.reopen.window_s:
            state.failures.popleft()
        try:
            src.close()
        except Exception as close_exc:  # noqa: BLE001 - the device may be gone
            log.debug("closing %s after a failure: %s", name, close_exc)
        state.is_open = False
        state.needs_resume = not src.live and state.delivered > 0
        limit = self.reopen.limit(src.live, exc)
        count = len(state.failures)
        if limit is not None and count > limit:
            self._event(
                f"source {name} gave up after {count} failures in {self.reopen.window_s:g} s; last: {_describe(exc)}",
                logging.ERROR,
            )
            return False
        self._event(f"source {name} failed: {_describe(exc)}; reopening in {delay:.1f} s")
        return not self._stop.wait(delay)

    def _prepare(self, name: str, frame: Frame, state: _SourceState) -> tuple | None:
        """Preprocess a frame in the reader thread (overlapping the model); None when the frame is unusable."""
        try:
            t0 = time.monotonic()
            x = self._preprocess(frame)
            item = (frame, x, (time.monotonic() - t0) * 1000)
        except Exception as exc:  # noqa: BLE001 - one bad frame costs only itself
            state.bad_frames += 1
            state.skipped += 1
            self._skip_event(name, frame, exc, state.skipped)
            return None
        state.bad_frames = 0
        return item

    def _skip_event(self, name: str, frame: Frame, exc: BaseException, skipped: int) -> None:
        if skipped <= _REPORTED_FIRST or skipped % _REPORT_EVERY == 0:
            more = "" if skipped <= _REPORTED_FIRST else f" ({skipped} frames of {name} skipped so far)"
            self._event(f"source {name}: frame {frame.sequence} skipped: {_describe(exc)}{more}")

    def _put_waiting(self, q: queue.Queue, item: tuple, state: _SourceState) -> None:
        """Queue a recording's frame, waiting for room (no drops) until the pipeline stops."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                state.last_frame = time.monotonic()  # held back by the model or the consumer: not a stall

    # --- the worker ----------------------------------------------------------------------------------------
    def _worker(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - report, stop everything, and let the iterator raise
            self.error = exc
            self._event(f"the pipeline's worker failed: {_describe(exc)}; stopping", logging.ERROR)
            log.debug("worker failed", exc_info=True)
            self._stop.set()
        finally:
            self._send_end()

    def _work(self) -> None:
        names = list(self.sources)
        while not self._stop.is_set():
            batches = self._gather(names)
            for modality, items in batches.items():
                with self._classify_lock:  # one label set for the whole batch (see set_labels)
                    results = self._classify_gated(modality, items)
                for result in results:
                    self._publish(result)
                    if self._stop.is_set():
                        return
            if not batches:
                self._check_stalls()
                with self._lock:
                    done = all(s.finished for s in self._state.values())
                drained = all(q.empty() for q in self._queues.values()) and not any(self._heads.values())
                if done and drained:
                    return
                self._stop.wait(0.002)
            names = names[1:] + names[:1]  # rotate: no source always goes first

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for name, state in self._state.items():
            if state.finished or state.stalled or not state.opened_once:
                continue
            fps = SourceTraits.of(self.sources[name]).fps
            limit = max(self.stall_timeout, 3.0 / fps if fps else 0.0)
            idle = now - state.last_frame
            if idle > limit:
                state.stalled = True
                self._event(f"source {name} stalled: no frame for {idle:.1f} s")

    def _gather(self, names: list[str]) -> dict[str, list[tuple[str, Frame, np.ndarray, float]]]:
        """The frames ready now, grouped by modality, at most ``max_batch`` per modality.

        A live source gives its one newest frame; a recording may give several (in order).
        """
        if self._in_order:
            return self._gather_in_order()
        groups: dict[str, list[tuple[str, Frame, np.ndarray, float]]] = {}
        for name in names:
            src = self.sources[name]
            group = groups.setdefault(src.modality, [])
            for _ in range(1 if src.live else self.max_batch):
                if len(group) >= self.max_batch:
                    break
                try:
                    frame, x, pre_ms = self._queues[name].get_nowait()
                except queue.Empty:
                    break
                group.append((name, frame, x, pre_ms))
        return {m: g for m, g in groups.items() if g}

    def _gather_in_order(self) -> dict[str, list[tuple[str, Frame, np.ndarray, float]]]:
        """Recordings read as fast as possible: the next frames in time order across sources (each frame's own
        stamp, its host time where it has none), up to ``max_batch`` consecutive frames of one modality.

        Nothing is taken while a source's next frame is still being read (a slow opening, a slow decoder): the
        other sources wait for it, held by their bounded queues, unless it ended or is stalled (``stall_timeout``),
        so a replay is processed in the same order whatever the threads' scheduling.
        """
        with self._lock:  # read before the queues: a source that ended has queued all of its frames
            gone = {n for n, st in self._state.items() if st.finished or st.stalled}
        for name, head in self._heads.items():
            if head is None and not self._next_head(name) and name not in gone:
                return {}
        items: list[tuple[str, Frame, np.ndarray, float]] = []
        modality = None
        while len(items) < self.max_batch:
            ready = [(h[0], n) for n, h in self._heads.items() if h is not None]
            if not ready:
                break
            name = min(ready)[1]
            if modality is not None and self.sources[name].modality != modality:
                break
            modality = self.sources[name].modality
            frame, x, pre_ms = self._heads[name][1]  # type: ignore[index]
            items.append((name, frame, x, pre_ms))
            if not self._next_head(name) and name not in gone:
                break  # its next frame may come before the other sources' next ones
        return {modality: items} if items else {}

    def _next_head(self, name: str) -> bool:
        """Take a recording's next queued frame as its head, with the time that orders it; False: none queued."""
        try:
            item = self._queues[name].get_nowait()
        except queue.Empty:
            self._heads[name] = None
            return False
        t = self._source_time(name, item[0])
        last, shift = self._replay_clock[name]
        if t + shift < last:  # the recording started over (looped): its order continues from where it was
            shift = last - t
        self._heads[name] = (t + shift, item)
        self._replay_clock[name] = (t + shift, shift)
        return True

    def _preprocess(self, frame: Frame) -> np.ndarray:
        """The model input of a frame (runs in the source's reader thread)."""
        clf = self.classifiers.get(frame.modality)
        if clf is None:
            raise LBEdgeError(
                f"the source delivered a {frame.modality!r} frame, but the pipeline has no encoder for that modality"
            )
        return clf.encoder.preprocess_frame(frame)

    def _classify_gated(
        self, modality: str, items: list[tuple[str, Frame, np.ndarray, float]], done: dict[int, Any] | None = None
    ) -> list[Result]:
        """Classify one modality's batch, skipping the model for frames their source's change gate lets reuse the
        last result (called under the classify lock, so one label set decides and classifies the whole batch).

        The gate decides each frame in order (a frame sent to the model becomes its source's reference at once, so
        the next frames of the batch compare with it), the frames to classify go to the model in one batch, then
        the results are made in frame order: a reused frame re-emits its reference's logits, which smoothing counts
        as one more observation of the same probabilities and fusion as that source's result at the new frame's
        time. When the model fails on a frame, the frame is skipped and its source's reference forgotten, and the
        source's later frames of the batch are decided again (what the model already gave for them is kept, in
        ``done``: frame id -> output), so the decisions are those of frames classified one by one, whatever the
        batching.
        """
        if not self._gates or not any(item[0] in self._gates for item in items):
            return self._classify_batch(modality, items)
        done = done or {}
        version = self.labels_version
        decisions: list[GateDecision | None] = [
            self._gates[name].check(x, self._source_time(name, frame), version) if name in self._gates else None
            for name, frame, x, _ in items
        ]
        run = [it for it, d in zip(items, decisions) if (d is None or not d.reuse) and id(it[1]) not in done]
        outs = {**done, **dict(zip((id(it[1]) for it in run), self._logits(modality, run) if run else []))}
        results: list[Result] = []
        redone: set[str] = set()
        for k, (item, d) in enumerate(zip(items, decisions)):
            name, frame, _, pre_ms = item
            if name in redone:
                continue
            gate = self._gates.get(name)
            if gate is not None and d is not None and d.reuse:
                ref = self._gate_logits.get(name)
                if ref is not None and ref[0] == d.ref_id:
                    gate.reused(d)
                    self.reused[name] += 1
                    results.append(self._result(name, frame, ref[1], 0.0, 0, pre_ms, reused_age=d.age_s))
                    continue
                redo = items[k:]  # cannot happen (a reference always has its logits): never reuse a wrong result
            else:
                out = outs[id(frame)]
                if not isinstance(out, BaseException):
                    if gate is not None and d is not None:
                        gate.confirm(d)
                        self._gate_logits[name] = (d.ref_id, out[0])
                    results.append(self._result(name, frame, *out, pre_ms))
                    continue
                self._skip_frame(name, frame, out)
                if gate is None:
                    continue
                redo = items[k + 1 :]
            gate.invalidate()  # the source's next frame is classified, and its later frames here decided again
            redone.add(name)
            rest = [it for it in redo if it[0] == name]
            if rest:
                kept = {id(it[1]): outs[id(it[1])] for it in rest if id(it[1]) in outs}
                results.extend(self._classify_gated(modality, rest, kept))
        return results

    def _source_time(self, name: str, frame: Frame) -> float:
        """A recording's own stamps, else the fusion clock (:meth:`_sync_time`): the time change gates age results
        by (so a recording is gated alike, paced or read as fast as possible) and recordings are replayed in."""
        if not self.sources[name].live and frame.device_timestamp is not None:
            return float(frame.device_timestamp)
        return self._sync_time(frame)

    def _classify_batch(self, modality: str, items: list[tuple[str, Frame, np.ndarray, float]]) -> list[Result]:
        """Embed the frames of one modality in one batch; one Result per frame, in order (a frame the model refuses
        is skipped, with an event)."""
        results = []
        for (name, frame, _, pre_ms), out in zip(items, self._logits(modality, items)):
            if isinstance(out, BaseException):
                self._skip_frame(name, frame, out)
            else:
                results.append(self._result(name, frame, *out, pre_ms))
        return results

    def _skip_frame(self, name: str, frame: Frame, exc: BaseException) -> None:
        """Count and report a frame the model could not classify."""
        state = self._state[name]
        state.skipped += 1
        self._skip_event(name, frame, exc, state.skipped)

    def _logits(
        self, modality: str, items: list[tuple[str, Frame, np.ndarray, float]]
    ) -> list[tuple[np.ndarray, float, int] | Exception]:
        """Per frame, in order: its logits, the model time and size of the batch it was embedded in; or, for a frame
        the model could not classify, the exception (a failing batch is retried frame by frame, so that only the
        failing frames are lost; the caller skips them)."""
        clf = self.classifiers[modality]
        t0 = time.monotonic()
        try:
            logits = clf.logits(clf.encoder.embed(np.concatenate([item[2] for item in items])))
            if logits.shape != (len(items), len(self.labels)) or not np.isfinite(logits).all():
                raise LBEdgeError(
                    f"the model gave {'non-finite ' if logits.ndim == 2 else ''}logits of shape "
                    f"{tuple(logits.shape)} for {len(items)} frames and {len(self.labels)} labels"
                )
        except Exception as exc:  # noqa: BLE001 - find the unusable frame: the others still count
            if len(items) > 1:
                return [out for item in items for out in self._logits(modality, [item])]
            return [exc]
        infer_ms = (time.monotonic() - t0) * 1000
        return [(row, infer_ms, len(items)) for row in logits]

    def _result(
        self,
        name: str,
        frame: Frame,
        logits: np.ndarray,
        infer_ms: float,
        batch: int,
        pre_ms: float,
        reused_age: float | None = None,
    ) -> Result:
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        idx, smoothed = self._smooth[name].update(probs)
        order = np.argsort(-smoothed)[: self.top_k]
        sr = SourceResult(
            name,
            frame.modality,
            frame.sequence,
            frame.timestamp,
            self.labels[idx],
            {self.labels[i]: float(smoothed[i]) for i in order},
            self.labels[int(np.argmax(probs))],
            (time.monotonic() - frame.timestamp) * 1000,
            infer_ms,
            batch,
            pre_ms,
            frame,
        )
        sr.labels_version = self.labels_version
        if reused_age is not None:  # change gate: the reference frame's logits again, no model time
            sr.reused, sr.age_s = True, round(reused_age, 4)
        self.processed[name] += 1
        self._recent[name].append(
            (time.monotonic(), sr.latency_ms, pre_ms, None if reused_age is not None else infer_ms)
        )
        at = self._sync_time(frame)
        self._latest[name] = (sr, smoothed, at)
        in_sync, fused = fuse({n: (t, p) for n, (_, p, t) in self._latest.items()}, at, self.sync_tolerance)
        fo = np.argsort(-fused)[: self.top_k]
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return Result(
            time.monotonic(),
            sr,
            {n: r for n, (r, _, _) in self._latest.items()},
            self.labels[int(fo[0])],
            {self.labels[i]: float(fused[i]) for i in fo},
            in_sync,
            events,
            self.labels_version,
        )

    def _sync_time(self, frame: Frame) -> float:
        """The time fusion compares for ``frame``: its host capture time, or its own stamp (``sync_clock``)."""
        if self.sync_clock == "device" and frame.device_timestamp is not None:
            return float(frame.device_timestamp)
        return frame.timestamp

    def _publish(self, result: Result) -> None:
        for cb in self._callbacks:
            try:
                cb(result)
            except Exception as exc:  # noqa: BLE001 - a user callback must not kill the pipeline
                log.error(
                    "result callback %r failed: %s",
                    getattr(cb, "__name__", cb),
                    _describe(exc),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
        if self._stop.is_set():
            return
        if self._iterating and not self.sources[result.update.source].live:
            while not self._stop.is_set():  # a consumer reads a recording: wait for it, drop none of its results
                try:
                    self._results.put(result, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        try:
            self._results.put_nowait(result)
        except queue.Full:
            if self._iterating and not all(s.live for s in self.sources.values()):
                self.results_dropped += 1  # a live result, beside recordings: never push out a recording's
                return
            # live, or nobody iterating: keep the newest results
            try:
                self._results.get_nowait()
                self.results_dropped += 1
            except queue.Empty:
                pass
            try:
                self._results.put_nowait(result)
            except queue.Full:
                self.results_dropped += 1


def fuse(latest: Mapping[str, tuple[float, np.ndarray]], at: float, tolerance: float) -> tuple[list[str], np.ndarray]:
    """Late fusion: the mean of the latest probabilities of the sources whose time lies within ``tolerance``
    seconds of ``at``. ``latest`` maps each source to its newest (time, probabilities), all on one clock and over
    one label set; returns the fused sources (in ``latest``'s order) and their mean probabilities."""
    names = [n for n, (t, _) in latest.items() if abs(t - at) <= tolerance]
    if not names:
        raise LBEdgeError(f"no source has a result within {tolerance} s of {at}: nothing to fuse")
    return names, np.mean([latest[n][1] for n in names], axis=0)


def frames_lost(source: object) -> int:
    """The frames ``source`` says it could not deliver (its ``frames_lost``; 0 when it does not say)."""
    try:
        lost = getattr(source, "frames_lost", 0)
    except Exception:  # noqa: BLE001 - a source's property must not fail the pipeline
        return 0
    return lost if isinstance(lost, int) and not isinstance(lost, bool) and lost > 0 else 0


def _describe(exc: BaseException) -> str:
    """An exception as one line: lbedge's own errors by their message, others with their type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LBEdgeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
