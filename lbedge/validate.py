"""Validate a bundle's reduced-precision graphs against its FP32 graph on real inputs (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .bundle import Manifest, load_bundle
from .errors import InputError
from .zeroshot import PROBE_LABELS

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


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def validate_bundle(path: str | Path, inputs: Sequence, *, labels: Sequence[str] = PROBE_LABELS,
                    backend: str = "onnxruntime", thresholds: dict[str, float] | None = None) -> list[ValidationRow]:
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
    prompts = [f"a photo of a {l}." for l in labels]
    ids, _ = ref.tokenize(prompts)
    usable_text = ids.max() < int(man.text["vocab_size"])
    t_ref = ref.embed_text(prompts) if usable_text else None
    rows = []
    for prec in man.towers["vision"]:
        if prec == "fp32":
            continue
        enc = load_bundle(folder, backend=backend, precision=prec, text_precision="fp32")
        e = enc.embed(x)
        c = _cos(e_ref, e)
        top1 = float(((e_ref @ t_ref.T).argmax(1) == (e @ t_ref.T).argmax(1)).mean()) if t_ref is not None else None
        rows.append(ValidationRow("vision", prec, len(x), float(c.min()), float(c.mean()), top1, th.get(prec, 0.99)))
    for prec in man.towers["text"]:
        if prec == "fp32" or t_ref is None:
            continue
        enc = load_bundle(folder, backend=backend, precision="fp32", text_precision=prec)
        c = _cos(t_ref, enc.embed_text(prompts))
        rows.append(ValidationRow("text", prec, len(prompts), float(c.min()), float(c.mean()), None, th.get(prec, 0.99)))
    return rows
