"""Zero-shot evaluation (``lbedge eval``): top-1 of an encoder on labelled inputs, beside chance level.

Each class is the mean of its prompts' text embeddings (prompt ensembling, as CLIP evaluates); an input is
classified as the class whose embedding is nearest. Works on any :class:`~lbedge.encoder.Encoder` (bundles on
ONNX Runtime or TensorRT without torch, checkpoints on PyTorch), so a bundle's FP32, INT8 and student graphs
are measured by the same code on the same inputs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .encoder import Encoder
from .errors import InputError, LBEdgeError


@dataclass
class EvalResult:
    """Zero-shot top-1 of one model at one precision on one labelled set."""

    model: str
    modality: str
    precision: str
    n: int
    top1: float
    chance: float
    classes: list[str]
    per_class: dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # unreadable inputs (reported, not counted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labelled(manifest: str | Path) -> tuple[list[Path], list[str]]:
    """Files and class labels of a JSONL (``{"file", "label"}`` or ``{"file", "texts"}``: the first text is
    the label) or CSV (``file,label``) manifest; paths are relative to the manifest."""
    path = Path(manifest)
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError, csv.Error) as exc:
        raise InputError(f"cannot read the evaluation manifest {path}: {exc}") from exc
    files, labels = [], []
    for i, row in enumerate(rows):
        label = row.get("label") or (row.get("texts") or [None])[0]
        if not row.get("file") or not label:
            raise InputError(f"{path} row {i + 1} needs a 'file' and a 'label' (or 'texts')")
        files.append(path.parent / row["file"])
        labels.append(str(label))
    if not files:
        raise InputError(f"{path} lists no inputs")
    return files, labels


def class_embeddings(encoder: Encoder, classes: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """``[C, D]``: per class the renormalised mean of its prompts (``template.format(class)``) embeddings."""
    if not templates:
        templates = ("{}",)
    prompts = [t.format(c) for c in classes for t in templates]
    emb = encoder.embed_text(prompts).reshape(len(classes), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def preprocess_files(encoder: Encoder, files: Sequence[Path]) -> tuple[np.ndarray, list[int]]:
    """Preprocessed batch of the readable files and the indices of those kept."""
    arrays, kept = [], []
    for i, f in enumerate(files):
        try:
            arrays.append(encoder.preprocess(str(f))[0])
            kept.append(i)
        except LBEdgeError:  # unreadable or corrupt: counted in EvalResult.skipped
            continue
    if not arrays:
        raise InputError("none of the evaluation inputs could be read")
    return np.stack(arrays), kept


def zero_shot_top1(
    encoder: Encoder,
    batch: np.ndarray,
    labels: Sequence[str],
    *,
    templates: Sequence[str] = ("{}",),
    classes: Sequence[str] | None = None,
    model: str = "",
    precision: str = "",
) -> EvalResult:
    """Top-1 of ``encoder`` on a preprocessed ``batch`` whose true classes are ``labels``."""
    if len(batch) != len(labels):
        raise InputError(f"{len(batch)} inputs but {len(labels)} labels")
    classes = sorted(set(labels)) if classes is None else list(classes)
    unknown = set(labels) - set(classes)
    if unknown:
        raise InputError(f"labels {sorted(unknown)[:5]} are not among the classes")
    pred = (encoder.embed(batch) @ class_embeddings(encoder, classes, templates).T).argmax(1)
    truth = np.array([classes.index(lab) for lab in labels])
    hits = pred == truth
    per_class = {c: float(hits[truth == k].mean()) for k, c in enumerate(classes) if (truth == k).any()}
    return EvalResult(
        model=model or encoder.name,
        modality=encoder.modality,
        precision=precision,
        n=len(labels),
        top1=float(hits.mean()),
        chance=1.0 / len(classes),
        classes=classes,
        per_class=per_class,
    )


def evaluate(
    encoder: Encoder, manifest: str | Path, *, templates: Sequence[str] = ("{}",), model: str = "", precision: str = ""
) -> EvalResult:
    """Zero-shot top-1 of ``encoder`` on a labelled manifest (see :func:`read_labelled`)."""
    files, labels = read_labelled(manifest)
    batch, kept = preprocess_files(encoder, files)
    res = zero_shot_top1(
        encoder,
        batch,
        [labels[i] for i in kept],
        templates=templates,
        classes=sorted(set(labels)),
        model=model,
        precision=precision,
    )
    res.skipped = len(files) - len(kept)
    return res


def format_table(results: Sequence[EvalResult]) -> str:
    """A plain-text table, one row per result."""
    head = f"{'model':<28} {'modality':<8} {'precision':<10} {'n':>5} {'top-1':>7} {'chance':>7}"
    rows = [
        f"{r.model[:28]:<28} {r.modality:<8} {r.precision:<10} {r.n:>5} {100 * r.top1:>6.1f}% {100 * r.chance:>6.1f}%"
        for r in results
    ]
    return "\n".join([head, *rows])


def markdown_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table: one row per modality, one column per model variant and precision (lb-mini's layout:
    ``image`` and ``student/image`` are the teacher and student of one modality)."""
    cols: list[str] = []
    table: dict[str, dict[str, float]] = {}
    chance: dict[str, float] = {}
    for r in results:
        kind = "student " if r.model.startswith("student/") else ""
        col = f"{kind}{r.precision}".strip()
        if col not in cols:
            cols.append(col)
        table.setdefault(r.modality, {})[col] = r.top1
        chance[r.modality] = r.chance
    n = sorted({r.n for r in results})
    head = f"| modality ({'/'.join(map(str, n))} scenes) | chance | " + " | ".join(cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 2)]
    for modality, by_col in table.items():
        cells = [f"{100 * by_col[c]:.1f} %" if c in by_col else "" for c in cols]
        rows.append(f"| {modality} | {100 * chance[modality]:.0f} % | " + " | ".join(cells) + " |")
    return "\n".join(rows)


__all__ = [
    "EvalResult",
    "class_embeddings",
    "evaluate",
    "format_table",
    "markdown_table",
    "read_labelled",
    "zero_shot_top1",
]
