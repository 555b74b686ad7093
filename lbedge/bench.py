"""``lbedge bench``: latency percentiles and throughput per backend, precision and batch, plus preprocessing.

Warm-up runs are excluded; thread counts are stated; peak resident memory is read from the OS.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends import batch_limits
from .config import PreprocessConfig
from .preprocess import Preprocessor

log = logging.getLogger(__name__)

#: the prompt the text tower is timed on
SAMPLE_PROMPT = "a photo of a dog."


@dataclass
class BenchRow:
    stage: str  # preprocess | vision | text
    backend: str
    precision: str
    batch: int
    threads: int | None
    iters: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # samples per second at p50

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def time_fn(fn: Callable[[], Any], *, warmup: int, iters: int, min_seconds: float = 0.0) -> np.ndarray:
    """Milliseconds per call of ``fn`` after ``warmup`` calls (warm-up excluded)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < iters or (time.perf_counter() - start) < min_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
        if len(times) >= 10 * iters:
            break
    return np.asarray(times)


def row(stage: str, backend: str, precision: str, batch: int, threads: int | None, ms: np.ndarray) -> BenchRow:
    p50 = float(np.percentile(ms, 50))
    return BenchRow(
        stage,
        backend,
        precision,
        batch,
        threads,
        len(ms),
        p50,
        float(np.percentile(ms, 90)),
        float(np.percentile(ms, 99)),
        float(ms.mean()),
        batch * 1000.0 / p50,
    )


def sample_raw_input(cfg: PreprocessConfig) -> Any:
    """A realistic raw input of the modality: a 720p frame, a 848x480 16-bit depth map, 10 s of audio, 8 frames."""
    rng = np.random.default_rng(0)
    if cfg.modality in ("image", "thermal"):
        return rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    if cfg.modality == "depth":
        return rng.integers(300, 6000, (480, 848), dtype=np.uint16)
    if cfg.modality == "audio":
        return (0.1 * rng.standard_normal(160000).astype(np.float32), 16000)
    return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(cfg.num_frames)]


def bench_preprocess(cfg: PreprocessConfig, *, warmup: int = 2, iters: int = 10) -> BenchRow:
    pre = Preprocessor(cfg)
    x = sample_raw_input(cfg)
    return row("preprocess", "numpy", "fp32", 1, 1, time_fn(lambda: pre(x), warmup=warmup, iters=iters))


def bench_backend(
    backend: Any,
    x: np.ndarray,
    *,
    stage: str,
    precision: str,
    batches: Sequence[int],
    threads: int | None,
    warmup: int = 2,
    iters: int = 10,
) -> list[BenchRow]:
    name = backend.input_names[0]
    limit, static = batch_limits(backend)
    rows = []
    for b in batches:
        if limit is not None and (b > limit or (static and b != limit)):
            log.warning(
                "%s %s %s: batch %d skipped (the %s backend takes %s %d)",
                stage,
                backend.name,
                precision,
                b,
                backend.name,
                "exactly" if static else "at most",
                limit,
            )
            continue
        xb = np.ascontiguousarray(np.repeat(x[:1], b, axis=0))
        ms = time_fn(lambda xb=xb: backend.run({name: xb}), warmup=warmup, iters=iters)
        rows.append(row(stage, backend.name, precision, b, threads, ms))
    return rows


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmHWM``, ``VmRSS``) in MiB; None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` from /proc/self/status. (``ru_maxrss`` is not used there: the kernel carries the
    parent's high-water mark across fork+exec, so a child started by a big process reports the parent's peak.)
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1024.0 if platform.system() == "Linux" else 1024.0 * 1024.0  # macOS reports bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def bench_bundle(
    path: str | Path,
    *,
    backends: Sequence[str],
    precisions: Sequence[str] | None,
    batches: Sequence[int],
    threads: int | None,
    warmup: int = 2,
    iters: int = 10,
    towers: Sequence[str] = ("vision", "text"),
    isolate: bool = True,
) -> dict[str, Any]:
    """Benchmark every (backend, precision) graph of a bundle. ``isolate``: each graph in a process of its own,
    so the memory reported for it (``graphs``, ``graph_mb``) is its own, not that of every graph loaded before."""
    from .bundle import Manifest

    folder = Path(path)
    man = Manifest.read(folder)
    cfg = PreprocessConfig.from_dict(man.preprocess)
    rows = [bench_preprocess(cfg, warmup=warmup, iters=iters).to_dict()]
    graphs = []
    run = _in_child if isolate else _bench_graph
    for be in backends:
        jobs = (
            [("torch", tower, "fp32") for tower in towers]
            if be == "torch"
            else [
                (be, tower, prec)
                for tower in towers
                for prec in man.towers.get(tower, {})
                if precisions is None or prec in precisions
            ]
        )
        for job in jobs:
            graph_rows, memory = run(str(folder), *job, list(batches), threads, warmup, iters)
            rows += graph_rows
            graphs.append({"backend": job[0], "tower": job[1], "precision": job[2], **memory})
    return {
        "bundle": str(folder),
        "modality": man.modality,
        "machine": machine(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "graphs": graphs,
        "rows": rows,
    }


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux; 0 where unknown)."""
    return _status_mb("VmRSS") or 0.0


def _bench_graph(
    folder: str,
    backend: str,
    tower: str,
    precision: str,
    batches: list[int],
    threads: int | None,
    warmup: int,
    iters: int,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The rows of one graph (one tower at one precision on one backend) and its memory: ``graph_mb``, what
    loading it and running every batch added to the process (peak resident memory over the resident memory
    before it was loaded, with the backend's library already imported; exact in a process of its own, see
    ``isolate``)."""
    import contextlib
    import importlib

    from .bundle import Manifest, load_bundle

    with contextlib.suppress(ImportError):  # the runtime's own libraries are not the graph's memory
        importlib.import_module(backend)
    before = current_rss_mb()
    man = Manifest.read(Path(folder))
    cfg = PreprocessConfig.from_dict(man.preprocess)
    if backend == "torch":
        rows = _bench_torch(man, cfg, batches, threads, warmup, iters, (tower,))
    else:
        kw = {"precision": precision} if tower == "vision" else {"text_precision": precision}
        with load_bundle(folder, backend=backend, threads=threads, **kw) as enc:
            runner = enc.vision if tower == "vision" else enc.text
            if tower == "vision":
                x = enc.preprocess(sample_raw_input(cfg))
            else:
                x = np.minimum(enc.tokenize([SAMPLE_PROMPT])[0], int(man.text["vocab_size"]) - 1)
            kws = dict(stage=tower, precision=precision, batches=batches, threads=threads, warmup=warmup, iters=iters)
            rows = bench_backend(runner, x, **kws)
    memory = {"rss_before_mb": round(before, 1), "graph_mb": round(max(0.0, peak_rss_mb() - before), 1)}
    return [r.to_dict() for r in rows], memory


def _in_child(*args: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """:func:`_bench_graph` in a fresh process (spawned: no memory inherited), so ``graph_mb`` is that graph's
    alone; an error in the child is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_bench_graph, *args).result()


def _bench_torch(
    man: Any,
    cfg: PreprocessConfig,
    batches: Sequence[int],
    threads: int | None,
    warmup: int,
    iters: int,
    towers: Sequence[str],
) -> list[BenchRow]:
    """The PyTorch reference on the bundle's source checkpoint (eager FP32), for comparison."""
    from .errors import CheckpointError

    src = man.provenance.get("source")
    if not src or not Path(src).is_dir():
        raise CheckpointError(f"the torch backend benchmarks the bundle's source checkpoint, which is not here ({src})")
    return _torch_rows(Path(src), cfg, batches, threads, warmup, iters, towers)


def _torch_rows(
    checkpoint: Path,
    cfg: PreprocessConfig,
    batches: Sequence[int],
    threads: int | None,
    warmup: int,
    iters: int,
    towers: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
) -> list[BenchRow]:
    from .checkpoint import from_pretrained

    if threads:
        import torch

        torch.set_num_threads(threads)
    rows = []
    for precision in precisions:
        enc = from_pretrained(checkpoint, precision=precision, text_precision=precision)
        kw = dict(precision=precision, batches=batches, threads=threads, warmup=warmup, iters=iters)
        if "vision" in towers:
            rows += bench_backend(enc.vision, enc.preprocess(sample_raw_input(cfg)), stage="vision", **kw)
        if "text" in towers:
            rows += bench_backend(enc.text, enc.tokenize([SAMPLE_PROMPT])[0], stage="text", **kw)
        enc.close()
    return rows


def bench_checkpoint(
    path: str | Path,
    *,
    batches: Sequence[int],
    threads: int | None,
    warmup: int = 2,
    iters: int = 10,
    towers: Sequence[str] = ("vision", "text"),
    precisions: Sequence[str] = ("fp32",),
) -> dict[str, Any]:
    """Benchmark a checkpoint folder on the PyTorch backend (eager, ``fp32`` and/or ``bf16``), preprocessing
    included."""
    from .config import ModelConfig

    folder = Path(path)
    cfg = ModelConfig.from_json(folder).preprocess
    rows = [bench_preprocess(cfg, warmup=warmup, iters=iters)]
    rows += _torch_rows(folder, cfg, batches, threads, warmup, iters, towers, precisions)
    return {
        "checkpoint": str(folder),
        "modality": cfg.modality,
        "machine": machine(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rows": [r.to_dict() for r in rows],
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'stage':<11}{'backend':<13}{'prec':<6}{'batch':>6}{'threads':>8}{'p50 ms':>10}{'p90 ms':>10}"
        f"{'p99 ms':>10}{'items/s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['stage']:<11}{r['backend']:<13}{r['precision']:<6}{r['batch']:>6}"
            f"{str(r['threads'] or 'auto'):>8}{r['p50_ms']:>10.2f}{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}"
            f"{r['throughput']:>10.1f}"
        )
    return "\n".join(lines)
