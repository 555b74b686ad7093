"""Baked label sets: a fixed label set's prompt-ensembled text embeddings, stored in a bundle.

A robot that always tells the same labels apart needs their text embeddings, not the text tower that makes them.
``lbedge bake`` (:func:`lbedge.bake.bake_bundle`) computes them once and stores them in the bundle as one file,
``labels.npz``, named with its sha256 in the manifest's ``baked_labels``. A :class:`ZeroShotClassifier` asked
for those labels (any of them, in any order) with the same templates takes the stored rows and never loads the
text graph or the tokenizer; a bundle baked with ``--drop-text`` carries neither, and asking it for other
labels raises :class:`NoTextTower`, which names the fix.

The file is a NumPy ``.npz`` archive, uncompressed, of four arrays:

- ``embeddings``: float32 ``[labels, embed_dim]``, each row the L2-normalised mean over the templates of the
  label's normalised prompt embeddings (what :class:`ZeroShotClassifier` computes);
- ``labels``, ``templates``: unicode ``[labels]`` and ``[templates]``;
- ``text_fingerprint``: a unicode scalar, the sha256 of the text tower the embeddings came from.

Like everything in a bundle it may come from anywhere: each array's header (dtype and shape) is checked
against the manifest and the limits before its bytes are read, and no pickled object is ever loaded.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from .errors import CheckpointError, UsageError
from .limits import hint, limits

#: the name of the baked label set inside a bundle
BAKED_FILE = "labels.npz"
MEMBERS = ("embeddings", "labels", "templates", "text_fingerprint")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class NoTextTower(UsageError):
    """A bundle without a text tower was asked for text embeddings it does not store (labels or templates other
    than its baked ones): rebake it, or load it with a text tower."""


@dataclass(frozen=True, eq=False)
class BakedLabels:
    """One baked label set: labels, templates, their embeddings ``[labels, D]`` and the text tower they came from."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    embeddings: np.ndarray
    text_fingerprint: str

    def embeddings_for(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray | None:
        """The stored rows of ``labels`` (a subset of the baked labels, any order) when ``templates`` are exactly
        the baked templates; None otherwise."""
        if tuple(templates) != self.templates:
            return None
        index = {label: i for i, label in enumerate(self.labels)}
        if not all(label in index for label in labels):
            return None
        return self.embeddings[[index[label] for label in labels]].copy()

    def mismatch(self, labels: Sequence[str], templates: Sequence[str]) -> str:
        """Why :meth:`embeddings_for` gives nothing for ``labels`` and ``templates`` ("" when it gives rows)."""
        why, have = [], set(self.labels)
        missing = [label for label in labels if label not in have]
        if missing:
            why.append(f"label(s) {_show(missing)} are not baked")
        if tuple(templates) != self.templates:
            why.append(f"the templates {_show(templates)} differ from the baked ones {_show(self.templates)}")
        return "; ".join(why)

    def describe(self) -> dict[str, Any]:
        """For ``lbedge info``: the labels, the templates and the text tower's fingerprint."""
        return {
            "labels": list(self.labels),
            "templates": list(self.templates),
            "text_fingerprint": self.text_fingerprint,
        }

    def write(self, path: str | os.PathLike) -> None:
        """Write the set to ``path`` (replaced at once: a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    embeddings=np.ascontiguousarray(self.embeddings, dtype="<f4"),
                    labels=np.array(self.labels, dtype=str),
                    templates=np.array(self.templates, dtype=str),
                    text_fingerprint=np.array(self.text_fingerprint, dtype=str),
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def make_baked(
    labels: Sequence[str], templates: Sequence[str], embeddings: np.ndarray, fingerprint: str
) -> BakedLabels:
    """A checked :class:`BakedLabels` (the problems of :func:`baked_problems` raise :class:`UsageError`)."""
    baked = BakedLabels(tuple(labels), tuple(templates), np.asarray(embeddings, np.float32), fingerprint)
    problems = baked_problems(baked, int(baked.embeddings.shape[-1]) if baked.embeddings.ndim == 2 else -1)
    if problems:
        raise UsageError(f"cannot bake this label set: {'; '.join(problems)}")
    return baked


def baked_problems(baked: BakedLabels, embed_dim: int) -> list[str]:
    """What is wrong with a label set's contents (empty when nothing is)."""
    lim, out = limits(), []
    e, n = baked.embeddings, len(baked.labels)
    if not 1 <= n <= lim.max_labels:
        out.append(f"{n} labels (expected 1 to {lim.max_labels}; {hint('max_labels')})")
    if e.shape != (n, embed_dim):
        out.append(f"embeddings of shape {tuple(e.shape)}, expected ({n}, {embed_dim})")
    elif not np.isfinite(e).all():
        out.append("embeddings hold NaN or infinite values")
    elif n and not np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3):
        out.append("embedding rows are not unit vectors")
    for what, items in (("label", baked.labels), ("template", baked.templates)):
        bad = [t for t in items if not isinstance(t, str) or not t.strip() or t != t.strip() or "\x00" in t]
        if bad:
            out.append(f"{what}(s) {_show(bad)} are empty, padded with spaces or hold NUL characters")
        if any(isinstance(t, str) and len(t) > lim.max_label_chars for t in items):
            out.append(f"a {what} is longer than {lim.max_label_chars} characters; {hint('max_label_chars')}")
    if len(set(baked.labels)) != n:
        out.append("duplicate labels")
    if not baked.templates or any(isinstance(t, str) and "{}" not in t for t in baked.templates):
        out.append("every template must hold {} where the label goes")
    if not _HEX64.fullmatch(str(baked.text_fingerprint)):
        out.append("the text fingerprint is not a sha256 (64 lower-case hex characters)")
    return out


def read_baked(path: Path, *, embed_dim: int, fingerprint: str | None, fix: str) -> BakedLabels:
    """The label set in ``path``, checked: its archive layout, each array's header before its bytes are read,
    then its contents, and that it came from the text tower ``fingerprint`` (when the bundle records one).

    Every problem raises one :class:`CheckpointError` that ends with ``fix``."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            want = {f"{m}.npy" for m in MEMBERS}
            if set(infos) != want or len(z.infolist()) != len(want):
                raise CheckpointError(
                    f"{path} holds {_show(sorted(infos))}, expected exactly {_show(sorted(want))}: {fix}"
                )
            arrays = {m: _read_member(z, infos[f"{m}.npy"], embed_dim, path, fix) for m in MEMBERS}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable baked label set ({exc}): {fix}") from None
    labels, templates = tuple(str(s) for s in arrays["labels"]), tuple(str(s) for s in arrays["templates"])
    baked = BakedLabels(labels, templates, arrays["embeddings"], str(arrays["text_fingerprint"][()]))
    problems = baked_problems(baked, embed_dim)
    if problems:
        raise CheckpointError(f"{path} is not a valid baked label set ({'; '.join(problems)}): {fix}")
    if fingerprint is not None and baked.text_fingerprint != fingerprint:
        raise CheckpointError(
            f"the labels baked in {path} come from another text tower (fingerprint {baked.text_fingerprint[:12]}... "
            f"!= the bundle's {fingerprint[:12]}...): {fix}"
        )
    return baked


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, embed_dim: int, path: Path, fix: str) -> np.ndarray:
    """One array of the archive, its header checked (dtype, shape, bounds) before its bytes are read."""
    name = info.filename[: -len(".npy")]
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"{path}: {info.filename} is compressed; baked label sets are stored as is: {fix}")
    with z.open(info) as f:
        dtype, shape = _header(f)
        problem = _member_problem(name, dtype, shape, embed_dim)
        if problem:
            raise CheckpointError(f"{path}: {info.filename} {problem}: {fix}")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = f.read(size)
    if len(data) != size:
        raise CheckpointError(f"{path}: {info.filename} is truncated ({len(data)} of {size} bytes): {fix}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(np.float32) if name == "embeddings" else arr.astype(str)


def _header(f: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape from a ``.npy`` header (a Fortran-ordered array is refused)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if fortran:
        raise ValueError("a Fortran-ordered array")
    return np.dtype(dtype), tuple(int(d) for d in shape)


def _member_problem(name: str, dtype: np.dtype, shape: tuple[int, ...], embed_dim: int) -> str:
    """Why the header of array ``name`` is not what a baked label set holds ("" when it is)."""
    lim = limits()
    if name == "embeddings":
        if dtype.kind != "f" or dtype.itemsize != 4:
            return f"has dtype {dtype}, expected float32"
        if len(shape) != 2 or not 1 <= shape[0] <= lim.max_labels or shape[1] != embed_dim:
            return f"has shape {shape}, expected [labels, {embed_dim}] with at most {lim.max_labels} labels"
        return ""
    if dtype.kind != "U":
        return f"has dtype {dtype}, expected unicode text"
    if name == "text_fingerprint":
        return "" if shape == () and dtype.itemsize == 4 * 64 else f"is {dtype} of shape {shape}, expected a sha256"
    if len(shape) != 1 or not 1 <= shape[0] <= lim.max_labels:
        return f"has shape {shape}, expected a list of 1 to {lim.max_labels} strings"
    if dtype.itemsize > 4 * lim.max_label_chars:
        return f"holds strings of up to {dtype.itemsize // 4} characters (limit {lim.max_label_chars})"
    return ""


def no_text_tower(where: str, baked: BakedLabels | None, labels: Sequence[str] = (), templates: Sequence[str] = ()):
    """The :class:`NoTextTower` error for a bundle ``where`` without a text tower, asked for ``labels`` and
    ``templates`` (empty: for text in general); it names what is baked and the two fixes."""
    why = baked.mismatch(labels, templates) if baked is not None and labels else ""
    asked = f"{why}, and" if why else "text embeddings were asked for, but"
    have = ""
    if baked is not None:
        n = len(baked.templates)
        have = f" It classifies only its baked labels {_show(baked.labels)} with its {n} baked template(s)."
    return NoTextTower(
        f"{asked} {where} has no text tower (it was baked with --drop-text).{have} For other labels: rebake "
        f"it (`lbedge bake -m {where} --text BUNDLE_WITH_TEXT_TOWER --labels ...`, or from the bundle it was made "
        "from), load it with a text tower (`lbedge.load_bundle(..., text_from=BUNDLE_WITH_TEXT_TOWER)`), or use a "
        "bundle that has one"
    )


def _show(items: Sequence[Any], n: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(x)[:60] for x in items[:n])
    return f"[{shown}{f', ... ({len(items) - n} more)' if len(items) > n else ''}]"
