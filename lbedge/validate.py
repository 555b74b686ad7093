"""Validate a bundle's reduced-precision graphs against its FP32 graph on real inputs (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .bundle import Manifest, load_bundle
from .errors import InputError
from .zeroshot import PROBE_LABELS, PROBE_TEMPLATE, fill

DEFAULT_MIN_COSINE = {"fp16": 0.999, "int8": 0.99}


@dataclass
class ValidationRow:
    tower: str
    precision: str
    samples: int
    min_cosine: float
    mean_cosine: float
    top1_agreement: float | None
    threshold: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def to_dict(self) -> dict:
        return {**self.__dict__, "passed": self.passed}


@dataclass
class Agreement:
    """How closely two sets of embeddings agree (rows paired)."""

    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: float | None = None  # zero-shot top-1 agreement against text embeddings, if given

    def to_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def agreement(ref: np.ndarray, got: np.ndarray, text_embeds: np.ndarray | None = None) -> Agreement:
    """Max abs difference, min/mean row cosine and (with ``text_embeds``) zero-shot top-1 agreement."""
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    top1 = None
    if text_embeds is not None and len(text_embeds) > 1:
        top1 = float(((ref @ text_embeds.T).argmax(1) == (got @ text_embeds.T).argmax(1)).mean())
    return Agreement(float(np.abs(ref - got).max()), float(cos.min()), float(cos.mean()), top1)


def validate_bundle(
    path: str | Path,
    inputs: Sequence,
    *,
    labels: Sequence[str] = PROBE_LABELS,
    backend: str = "onnxruntime",
    thresholds: dict[str, float] | None = None,
) -> list[ValidationRow]:
    """Agreement of every precision with FP32: embedding cosine and zero-shot top-1 over ``labels``.

    ``inputs``: a preprocessed batch, or anything ``Encoder.preprocess`` accepts (e.g. a list of files).
    """
    folder = Path(path)
    man = Manifest.read(folder)
    th = {**DEFAULT_MIN_COSINE, **(thresholds or {})}
    ref = load_bundle(folder, backend="onnxruntime", precision="fp32", text_precision="fp32")
    x = inputs if ref.is_preprocessed(inputs) else ref.preprocess(list(inputs))
    if len(x) == 0:
        raise InputError("no inputs to validate on")
    e_ref = ref.embed(x)
    prompts = [fill(PROBE_TEMPLATE, label) for label in labels]
    if ref.has_text_tower:
        ids, _ = ref.tokenize(prompts)
        usable_text = ids.max() < int(man.text["vocab_size"])
        t_ref = ref.embed_text(prompts) if usable_text else None
    else:  # a label-baked bundle without a text tower: top-1 agreement over its baked labels
        t_ref = ref.baked.embeddings if ref.baked is not None else None
    rows = []
    for prec in man.towers["vision"]:
        if prec == "fp32":
            continue
        enc = load_bundle(folder, backend=backend, precision=prec, text_precision="fp32")
        a = agreement(e_ref, enc.embed(x), t_ref)
        rows.append(
            ValidationRow("vision", prec, len(x), a.min_cosine, a.mean_cosine, a.top1_agreement, th.get(prec, 0.99))
        )
    for prec in man.towers.get("text", {}):  # a shared text tower is validated in its own bundle
        if prec == "fp32" or t_ref is None:
            continue
        enc = load_bundle(folder, backend=backend, precision="fp32", text_precision=prec)
        a = agreement(t_ref, enc.embed_text(prompts))
        rows.append(ValidationRow("text", prec, len(prompts), a.min_cosine, a.mean_cosine, None, th.get(prec, 0.99)))
    return rows
