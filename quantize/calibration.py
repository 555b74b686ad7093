"""Calibration and validation inputs from real files: a folder (or list) of images, depth or thermal frames,
audio files or videos, preprocessed exactly as at inference."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lbedge.errors import InputError, LBEdgeError
from lbedge.preprocess import FILE_EXTENSIONS, Preprocessor
from lbedge.progress import Counter

log = logging.getLogger(__name__)


@dataclass
class InputSet:
    """Preprocessed inputs with where they came from."""

    arrays: np.ndarray
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sha256: str = ""

    def split(self, holdout: float = 0.25) -> tuple["InputSet", "InputSet"]:
        """Deterministic split: every k-th file is held out (at least one on each side when possible)."""
        n = len(self.files)
        k = max(2, round(1 / holdout)) if holdout > 0 else n + 1
        held = [i for i in range(n) if i % k == k - 1] or ([n - 1] if n > 1 else [])
        keep = [i for i in range(n) if i not in held]

        def pick(idx: list[int], skipped: list) -> InputSet:
            return InputSet(self.arrays[idx], [self.files[i] for i in idx], skipped, self.sha256)

        return pick(keep, self.skipped), pick(held, [])


def list_files(sources: Iterable[str | Path], modality: str) -> list[Path]:
    """Files of ``modality`` in the given folders (recursively, sorted) and files."""
    exts = FILE_EXTENSIONS[modality]
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"calibration source not found: {p}")
    return out


def load_inputs(
    sources: Sequence[str | Path], preprocessor: Preprocessor, *, limit: int | None = None, on_error: str = "skip"
) -> InputSet:
    """Preprocess every usable file; unreadable ones are reported (and skipped, or raise with on_error='raise')."""
    modality = preprocessor.cfg.modality
    files = list_files(sources, modality)
    if limit:
        files = files[:limit]
    arrays, used, skipped = [], [], []
    h = hashlib.sha256()
    counter = Counter(f"preprocessing {modality} inputs", len(files))
    for f in files:
        counter.advance()
        try:
            arrays.append(preprocessor.one(f))
        except LBEdgeError as exc:
            if on_error == "raise":
                raise
            log.info("skipping %s: %s", f, exc)
            skipped.append((f, str(exc)))
            continue
        used.append(f)
        h.update(f.name.encode())
        h.update(f.read_bytes())
    if not arrays:
        raise InputError(
            f"no usable {modality} inputs in {', '.join(map(str, sources))}"
            + (f" ({len(skipped)} unreadable)" if skipped else "")
        )
    return InputSet(np.stack(arrays).astype(np.float32), used, skipped, h.hexdigest())
