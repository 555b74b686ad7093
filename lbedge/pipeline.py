"""The streaming pipeline: sources -> preprocessing -> inference -> zero-shot results, in threads.

One reader thread per source reads and preprocesses frames (overlapping the model) into a bounded queue:
a live source keeps only its newest frame (a slow model drops frames, it never lags behind the sensor), a
recording is read without drops (the reader waits). One worker thread classifies the frames ready at each
moment in one batch per modality (several sources of a modality, or several frames of a recording, up to
``max_batch``), smooths each source's labels over time (EMA or majority with hysteresis, so labels do not
flicker), fuses the latest per-source probabilities whose timestamps lie within ``sync_tolerance`` of each
other, and publishes a :class:`Result` to the iterator and the callbacks. A source that fails is closed and reopened with exponential backoff while the others go on;
the event appears in the results and the log. ``stop()`` (or leaving the ``with`` block, or Ctrl-C in the
CLI) ends every thread.

The runtime only knows the :class:`~lbedge.frames.Source` protocol; concrete sensors live in ``lbedge.sensors``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .encoder import Encoder
from .errors import LBEdgeError
from .frames import Frame, Source
from .zeroshot import ZeroShotClassifier

log = logging.getLogger(__name__)


@dataclass
class SourceResult:
    source: str
    modality: str
    sequence: int
    timestamp: float
    label: str                       # the smoothed label
    scores: dict[str, float]         # smoothed probabilities, highest first (top-k)
    raw_label: str                   # this frame's own top label
    latency_ms: float                # capture to result
    infer_ms: float                  # the model time of the batch this frame was in
    batch: int = 1                   # frames embedded together (sources of one modality, recorded frames)
    preprocess_ms: float = 0.0       # this frame's preprocessing (in its reader thread)
    frame: Frame | None = field(default=None, repr=False)    # the classified frame (for overlays)


@dataclass
class Result:
    """What the pipeline publishes after each classified frame."""

    timestamp: float
    update: SourceResult                                  # the frame that triggered this result
    sources: dict[str, SourceResult]                      # latest result of every source
    fused_label: str | None = None                        # late fusion over synchronised sources
    fused_scores: dict[str, float] = field(default_factory=dict)
    fused_sources: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)       # source failures, reopenings, ends

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": round(self.timestamp, 4),
                "update": {**{k: v for k, v in self.update.__dict__.items() if k != "frame"},
                           "scores": {k: round(v, 4) for k, v in self.update.scores.items()}},
                "fused": {"label": self.fused_label, "sources": self.fused_sources,
                          "scores": {k: round(v, 4) for k, v in self.fused_scores.items()}},
                "events": self.events}


class Smoother:
    """EMA (or majority over N) of one source's probabilities, with hysteresis on the displayed label."""

    def __init__(self, method: str = "ema", alpha: float = 0.5, window: int = 5, hysteresis: float = 0.1):
        if method not in ("ema", "majority", "none"):
            raise LBEdgeError(f"unknown smoothing {method!r}: ema, majority or none")
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


class Pipeline:
    """Classify several sources' frames zero-shot against ``labels``; iterate results or register callbacks.

    ``encoders``: one Encoder per modality (``{"image": enc, "depth": enc2}``), or one Encoder for all sources.
    """

    def __init__(self, sources: Mapping[str, Source], encoders: Mapping[str, Encoder] | Encoder,
                 labels: Sequence[str], *, templates: Sequence[str] | None = None, top_k: int = 3,
                 smoothing: str = "ema", ema_alpha: float = 0.5, majority_window: int = 5, hysteresis: float = 0.1,
                 sync_tolerance: float = 0.25, reopen_backoff: tuple[float, float] = (0.5, 8.0),
                 max_reopen: int | None = None, results_queue: int = 16, max_batch: int = 8):
        if not sources:
            raise LBEdgeError("a pipeline needs at least one source")
        self.sources = dict(sources)
        by_modality = {m: encoders for m in {s.modality for s in self.sources.values()}} \
            if isinstance(encoders, Encoder) else dict(encoders)
        missing = sorted({s.modality for s in self.sources.values()} - set(by_modality))
        if missing:
            raise LBEdgeError(f"no encoder for modality {', '.join(missing)}: pass encoders={{modality: Encoder}}")
        self.classifiers = {m: ZeroShotClassifier(e, labels, templates=templates, top_k=len(labels))
                            for m, e in by_modality.items()}
        self.labels = list(labels)
        self.top_k = top_k
        if max_batch < 1:
            raise LBEdgeError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._smooth = {n: Smoother(smoothing, ema_alpha, majority_window, hysteresis) for n in self.sources}
        self.sync_tolerance = sync_tolerance
        self.backoff, self.max_reopen = reopen_backoff, max_reopen
        self._queues = {n: queue.Queue(maxsize=1 if s.live else max(4, max_batch)) for n, s in self.sources.items()}
        self._results: queue.Queue[Result | None] = queue.Queue(maxsize=results_queue)
        self._callbacks: list[Callable[[Result], None]] = []
        # events not yet attached to a result (bounded: a source failing for hours with no result to carry them)
        self._events: collections.deque[str] = collections.deque(maxlen=100)
        self.event_log: collections.deque[str] = collections.deque(maxlen=1000)   # every event, newest last
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finished: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._latest: dict[str, tuple[SourceResult, np.ndarray]] = {}
        self.dropped = {n: 0 for n in self.sources}
        self.processed = {n: 0 for n in self.sources}
        self._recent = {n: collections.deque(maxlen=100) for n in self.sources}   # (time, latency, pre, infer)
        self.results_dropped = 0
        self._started = False
        self._iterating = False

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "Pipeline":
        if self._started:
            return self
        self._started = True
        for name in self.sources:
            t = threading.Thread(target=self._reader, args=(name,), name=f"lbedge-reader-{name}", daemon=True)
            self._threads.append(t)
        self._threads.append(threading.Thread(target=self._worker, name="lbedge-worker", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread and close every source."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("threads still running after stop(): %s (a source blocked in read)", alive)
        try:
            self._results.put_nowait(None)
        except queue.Full:
            pass

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def on_result(self, callback: Callable[[Result], None]) -> None:
        """Call ``callback(result)`` from the worker thread for every result (keep it quick)."""
        self._callbacks.append(callback)

    def __iter__(self) -> Iterator[Result]:
        """Results as they come; ends when every recording has ended (live sources never end) or on stop()."""
        self._iterating = True
        self.start()
        while True:
            item = self._results.get()
            if item is None:
                return
            yield item

    def stats(self) -> dict[str, dict[str, float]]:
        """Per source, over its last 100 results: FPS, median capture-to-result latency, preprocessing and
        model time (ms), and the running totals of processed and dropped frames."""
        out = {}
        for name, recent in self._recent.items():
            rows = list(recent)
            span = rows[-1][0] - rows[0][0] if len(rows) > 1 else 0.0
            med = (lambda i: round(float(np.median([r[i] for r in rows])), 2)) if rows else (lambda i: 0.0)
            out[name] = {"fps": round((len(rows) - 1) / span, 2) if span > 0 else 0.0, "latency_ms": med(1),
                         "preprocess_ms": med(2), "infer_ms": med(3), "processed": self.processed[name],
                         "dropped": self.dropped[name]}
        return out

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    # --- threads -------------------------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        log.warning(text)
        with self._lock:
            self._events.append(text)
            self.event_log.append(text)

    def _reader(self, name: str) -> None:
        src, q = self.sources[name], self._queues[name]
        failures = 0
        delay = self.backoff[0]
        # a recording read as fast as possible keeps one frame in hand, so that its end is known (and its event
        # attached) before the last frame goes to the worker; paced and live sources never wait on the next frame
        hold_back = not src.live and not getattr(src, "realtime", False)
        held = None
        while not self._stop.is_set():
            try:
                src.open()
                frame = src.read()
            except Exception as exc:  # a sensor may fail in any way: report, back off, reopen
                failures += 1
                self._event(f"source {name} failed: {exc}; reopening in {delay:.1f} s")
                try:
                    src.close()
                except Exception:
                    pass
                if self.max_reopen is not None and failures > self.max_reopen:
                    self._event(f"source {name} gave up after {failures} failures")
                    break
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self.backoff[1])
                continue
            if failures:
                self._event(f"source {name} recovered after {failures} failure(s)")
                failures, delay = 0, self.backoff[0]
            if frame is None:
                self._event(f"source {name} ended")
                break
            try:                                      # preprocess here, overlapping the model in the worker
                t0 = time.monotonic()
                item = (frame, self._preprocess(frame), (time.monotonic() - t0) * 1000)
            except LBEdgeError as exc:
                self._event(f"source {name}: frame {frame.sequence} skipped: {exc}")
                continue
            if src.live:
                try:
                    q.get_nowait()                    # keep only the newest frame of a live sensor
                    self.dropped[name] += 1
                except queue.Empty:
                    pass
                q.put_nowait(item)
            elif hold_back:
                if held is not None:
                    self._put_waiting(q, held)
                held = item
            else:
                self._put_waiting(q, item)
        if held is not None:
            self._put_waiting(q, held)
        try:
            src.close()
        except Exception:
            pass
        with self._lock:
            self._finished.add(name)

    def _put_waiting(self, q: queue.Queue, item: tuple) -> None:
        """Queue a recording's frame, waiting for room (no drops) until the pipeline stops."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _worker(self) -> None:
        names = list(self.sources)
        while not self._stop.is_set():
            batches = self._gather(names)
            for modality, items in batches.items():
                for result in self._classify_batch(modality, items):
                    self._publish(result)
            if not batches:
                with self._lock:
                    done = self._finished == set(names)
                if done and all(q.empty() for q in self._queues.values()):
                    break
                self._stop.wait(0.002)
            names = names[1:] + names[:1]               # rotate: no source always goes first
        try:
            self._results.put(None, timeout=1.0)
        except queue.Full:
            pass

    def _gather(self, names: list[str]) -> dict[str, list[tuple[str, Frame, np.ndarray, float]]]:
        """The frames ready now, grouped by modality, at most ``max_batch`` per modality.

        A live source gives its one newest frame; a recording may give several (in order).
        """
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

    def _preprocess(self, frame: Frame) -> np.ndarray:
        """The model input of a frame (runs in the source's reader thread)."""
        enc = self.classifiers[frame.modality].encoder
        if frame.modality == "audio":
            return enc.preprocess((frame.data, frame.meta["sample_rate"]))
        return enc.preprocess(frame.data)

    def _classify_batch(self, modality: str, items: list[tuple[str, Frame, np.ndarray, float]]) -> list[Result]:
        """Embed the frames of one modality in one batch; one Result per frame, in order."""
        clf = self.classifiers[modality]
        t0 = time.monotonic()
        try:
            logits = clf.logits(clf.encoder.embed(np.concatenate([item[2] for item in items])))
        except LBEdgeError as exc:
            if len(items) > 1:                         # find the unusable frame: the others still count
                return [r for item in items for r in self._classify_batch(modality, [item])]
            name, frame = items[0][:2]
            self._event(f"source {name}: frame {frame.sequence} skipped: {exc}")
            return []
        infer_ms = (time.monotonic() - t0) * 1000
        return [self._result(name, frame, row, infer_ms, len(items), pre_ms)
                for (name, frame, _, pre_ms), row in zip(items, logits)]

    def _result(self, name: str, frame: Frame, logits: np.ndarray, infer_ms: float, batch: int,
                pre_ms: float) -> Result:
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        idx, smoothed = self._smooth[name].update(probs)
        order = np.argsort(-smoothed)[: self.top_k]
        sr = SourceResult(name, frame.modality, frame.sequence, frame.timestamp, self.labels[idx],
                          {self.labels[i]: float(smoothed[i]) for i in order}, self.labels[int(np.argmax(probs))],
                          (time.monotonic() - frame.timestamp) * 1000, infer_ms, batch, pre_ms, frame)
        self.processed[name] += 1
        self._recent[name].append((time.monotonic(), sr.latency_ms, pre_ms, infer_ms))
        self._latest[name] = (sr, smoothed)
        in_sync = [n for n, (r, _) in self._latest.items() if abs(r.timestamp - frame.timestamp) <= self.sync_tolerance]
        fused = np.mean([self._latest[n][1] for n in in_sync], axis=0)
        fo = np.argsort(-fused)[: self.top_k]
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return Result(time.monotonic(), sr, {n: r for n, (r, _) in self._latest.items()},
                      self.labels[int(fo[0])], {self.labels[i]: float(fused[i]) for i in fo}, in_sync, events)

    def _publish(self, result: Result) -> None:
        for cb in self._callbacks:
            try:
                cb(result)
            except Exception as exc:  # a user callback must not kill the pipeline
                log.exception("result callback failed: %s", exc)
        if self._iterating and not any(s.live for s in self.sources.values()):
            while not self._stop.is_set():             # a consumer reads a recording: wait for it, drop nothing
                try:
                    self._results.put(result, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        try:
            self._results.put_nowait(result)
        except queue.Full:                             # live, or nobody iterating: keep the newest results
            try:
                self._results.get_nowait()
                self.results_dropped += 1
            except queue.Empty:
                pass
            self._results.put_nowait(result)
