"""What the commands share: the model vocabulary (``-m/--model`` for a bundle or a checkpoint), labels, outputs
checked before work, ``--json``, batch lists and progress."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import InputError

MODEL_HELP = "A bundle folder (ONNX Runtime / TensorRT, no torch) or an official checkpoint folder (PyTorch)."


def model_option(*aliases: str, multiple: bool = False, help: str = MODEL_HELP) -> Callable:
    """``-m/--model PATH`` (plus older spellings in ``aliases``, e.g. ``--checkpoint``), repeatable with
    ``multiple`` (one model per modality)."""
    names = ("--model", "-m", *aliases)
    return click.option(
        *names, "models" if multiple else "model", multiple=multiple, type=click.Path(path_type=Path), help=help
    )


def one_model(option: Path | None, positional: Path | None, what: str = "MODEL") -> Path:
    """The model named by ``-m`` or by the older positional argument: exactly one of them."""
    if option is not None and positional is not None and Path(option) != Path(positional):
        raise click.UsageError(f"give the model once: -m/--model {option} or {what} {positional}, not both")
    model = option if option is not None else positional
    if model is None:
        raise click.UsageError(f"give the model with -m/--model PATH ({MODEL_HELP.lower()})")
    return Path(model)


def load_options(fn: Callable) -> Callable:
    """How a model given by ``-m`` runs: backend, precision, device, threads (see :func:`lbedge.load`)."""
    for opt in reversed(
        [
            click.option(
                "--backend",
                default="auto",
                show_default=True,
                type=click.Choice(["auto", "tensorrt", "onnxruntime", "torch"]),
                help="auto: TensorRT where engines exist, else ONNX Runtime (bundles); PyTorch (checkpoints).",
            ),
            click.option(
                "--precision",
                "-p",
                "precision",
                default="auto",
                show_default=True,
                type=click.Choice(["auto", "fp32", "fp16", "int8", "bf16"]),
                help="Vision graph of a bundle (auto: the fastest built); a checkpoint: fp32 (auto) or bf16.",
            ),
            click.option(
                "--device",
                type=click.Choice(["cpu", "cuda"]),
                default=None,
                help="cpu or cuda (a torch device, or ONNX Runtime's provider).",
            ),
            click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Inference threads."),
        ]
    ):
        fn = opt(fn)
    return fn


def load_model(
    path: Path, *, backend: str = "auto", precision: str = "auto", device: str | None = None, threads: int | None = None
) -> Any:
    """``lbedge.load`` with the CLI's options (a folder that is neither a bundle nor a checkpoint: an error)."""
    from .. import load

    if not Path(path).is_dir():
        raise click.BadParameter(f"{path} is not a folder: {MODEL_HELP}", param_hint="-m/--model")
    return load(path, backend=backend, precision=precision, device=device, threads=threads)


def label_options(fn: Callable) -> Callable:
    for opt in reversed(
        [
            click.option("--labels", "-l", help='Comma-separated labels, e.g. "person,car,dog".'),
            click.option(
                "--labels-file", type=click.Path(path_type=Path), help="File with one label per line (UTF-8)."
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def parse_labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """The labels of ``--labels a,b,c`` or ``--labels-file`` (one per line, UTF-8), checked."""
    from ..zeroshot import check_labels

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


def json_option(help: str = "Print the result as JSON (paths, sizes, agreement figures).") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


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


def parse_batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, got {text!r}", param_hint="--batch") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"positive batch sizes, got {text!r}", param_hint="--batch")
    return out


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


def bundle_rows(man: Any, folder: Path) -> list[dict[str, Any]]:
    """Every graph of a bundle with its size and agreement to FP32 (what ``--json`` reports)."""
    from ..quantize.bundle_build import summary

    rows = []
    for r in summary(man):
        path = Path(folder) / r["file"]
        rows.append({**r, "bytes": path.stat().st_size if path.is_file() else None})
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        cos = "-" if r["min_cosine"] is None else f"{r['min_cosine']:.5f}"
        top1 = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.3f}"
        size = f"{r['bytes'] / 2**20:.1f} MiB" if r.get("bytes") else ""
        click.echo(
            f"  {r['tower']:<7}{r['precision']:<6}{r['file']:<22}{size:>11}  min cos vs fp32 {cos:<9} "
            f"top-1 agree {top1}"
        )
