"""Try a model on files: ``lbedge classify``, ``lbedge embed``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .common import (
    label_options,
    label_progress,
    load_model,
    load_options,
    model_option,
    one_model,
    parse_labels,
    writable_output,
)


@click.command()
@model_option("--checkpoint", "-c")
@label_options
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label (repeatable); default: the modality's set.",
)
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1), help="Labels to show per input.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="Abstain when the top probability is below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input instead of a table.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the prompt embedding cache.")
@load_options
@click.argument("files", nargs=-1, required=True)
def classify(
    model: Path | None,
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    top_k: int,
    threshold: float | None,
    as_json: bool,
    no_cache: bool,
    backend: str,
    precision: str,
    device: str | None,
    threads: int | None,
    files: tuple[str, ...],
) -> None:
    """Classify FILES (images, depth PNGs, thermal frames, audio, video) zero-shot among labels."""
    from ..zeroshot import ZeroShotClassifier

    names = parse_labels(labels, labels_file)
    enc = load_model(one_model(model, None), backend=backend, precision=precision, device=device, threads=threads)
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


@click.command()
@model_option("--checkpoint", "-c")
@click.option("--text", "texts", multiple=True, help="Embed this text instead of files (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Output .npy file [N, D].")
@load_options
@click.argument("files", nargs=-1)
def embed(
    model: Path | None,
    texts: tuple[str, ...],
    output: Path,
    backend: str,
    precision: str,
    device: str | None,
    threads: int | None,
    files: tuple[str, ...],
) -> None:
    """Write L2-normalised embeddings of FILES (or of --text strings) to a .npy file."""
    if bool(files) == bool(texts):
        raise click.UsageError("give either FILES or --text, not both and not neither")
    writable_output(output, "--output")
    enc = load_model(one_model(model, None), backend=backend, precision=precision, device=device, threads=threads)
    e = enc.embed(list(files)) if files else enc.embed_text(list(texts))
    np.save(output, e)
    click.echo(f"wrote {output} {tuple(e.shape)} float32 ({enc.modality if files else 'text'})")
