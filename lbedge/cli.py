"""The ``lbedge`` command line: inspect checkpoints, classify and embed files zero-shot."""

from __future__ import annotations

import functools
import json
import platform
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from ._deps import available
from .errors import LBEdgeError


def _friendly(fn):
    """Turn lbedge errors into one ``error: ...`` line and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except LBEdgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lbedge")
def main() -> None:
    """lbedge: LanguageBind zero-shot perception for the edge.

    Load official LanguageBind checkpoints (image, depth, thermal, audio, video), embed inputs
    and text into the shared language space, and classify them against text labels.
    """


OPTIONAL = ("torch", "onnxruntime", "tensorrt", "soundfile", "sounddevice", "pyrealsense2", "huggingface_hub")


@main.command()
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Official checkpoint folder to describe.")
@click.option("--load", is_flag=True, help="Also load the weights (needs torch): parameters, logit scale, LoRA.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_friendly
def info(checkpoint: Path | None, load: bool, as_json: bool) -> None:
    """Show versions, available backends and optional parts, and describe a checkpoint."""
    import cv2
    import tokenizers

    report: dict = {
        "lbedge": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "numpy": np.__version__, "opencv": cv2.__version__, "tokenizers": tokenizers.__version__,
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
    from .errors import InputError

    if labels_file is not None:
        try:
            items = [l.strip() for l in labels_file.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise InputError(f"cannot read labels file {labels_file}: {exc}") from exc
    elif labels:
        items = [l.strip() for l in labels.split(",")]
    else:
        raise InputError("give the labels with --labels \"a,b,c\" or --labels-file FILE (one per line)")
    return [l for l in items if l]


@main.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path), help="Official checkpoint folder.")
@click.option("--labels", "-l", help='Comma-separated labels, e.g. "person,car,dog".')
@click.option("--labels-file", type=click.Path(path_type=Path), help="File with one label per line.")
@click.option("--template", "templates", multiple=True,
              help='Prompt template with {} for the label (repeatable); default: the modality\'s set.')
@click.option("--top-k", default=3, show_default=True, help="Labels to show per input.")
@click.option("--threshold", type=float, help="Abstain when the top probability is below this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input instead of a table.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the prompt embedding cache.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the PyTorch backend.")
@click.argument("files", nargs=-1, required=True)
@_friendly
def classify(checkpoint: Path, labels: str | None, labels_file: Path | None, templates: tuple[str, ...], top_k: int,
             threshold: float | None, as_json: bool, no_cache: bool, device: str, files: tuple[str, ...]) -> None:
    """Classify FILES (images, depth PNGs, thermal frames, audio, video) zero-shot among labels."""
    from . import from_pretrained
    from .zeroshot import ZeroShotClassifier

    names = _labels(labels, labels_file)
    enc = from_pretrained(checkpoint, device=device)
    clf = ZeroShotClassifier(enc, names, templates=list(templates) or None, top_k=top_k, threshold=threshold,
                             use_cache=not no_cache)
    preds = clf.classify(list(files))
    if as_json:
        for f, p in zip(files, preds):
            click.echo(json.dumps({"file": f, "modality": enc.modality, **p.to_dict()}))
        return
    width = max(len("file"), *(len(f) for f in files))
    click.echo(f"{'file':<{width}}  {'label':<24} score   top-{clf.top_k}")
    for f, p in zip(files, preds):
        rest = ", ".join(f"{l} {s:.3f}" for l, s in zip(p.labels, p.scores))
        click.echo(f"{f:<{width}}  {str(p.label if not p.abstained else '(abstain)'):<24} {p.score:.3f}   {rest}")


@main.command()
@click.option("--checkpoint", "-c", required=True, type=click.Path(path_type=Path), help="Official checkpoint folder.")
@click.option("--text", "texts", multiple=True, help="Embed this text instead of files (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Output .npy file [N, D].")
@click.option("--device", default="cpu", show_default=True, help="torch device for the PyTorch backend.")
@click.argument("files", nargs=-1)
@_friendly
def embed(checkpoint: Path, texts: tuple[str, ...], output: Path, device: str, files: tuple[str, ...]) -> None:
    """Write L2-normalised embeddings of FILES (or of --text strings) to a .npy file."""
    from . import from_pretrained
    from .errors import InputError

    if bool(files) == bool(texts):
        raise InputError("give either FILES or --text, not both and not neither")
    enc = from_pretrained(checkpoint, device=device)
    e = enc.embed(list(files)) if files else enc.embed_text(list(texts))
    np.save(output, e)
    click.echo(f"wrote {output} {tuple(e.shape)} float32 ({enc.modality if files else 'text'})")


@main.command()
@click.argument("name")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Destination folder.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@_friendly
def download(name: str, output: Path, revision: str | None) -> None:
    """Download official checkpoint NAME (image, depth, thermal, audio, audio_ft, video, ...) from the hub."""
    from .hub import download as _download

    path = _download(name, output, revision=revision)
    click.echo(f"downloaded {name} to {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
