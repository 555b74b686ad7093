"""Bake a label set into a bundle (``lbedge bake``, ``lbedge build --labels``): torch-free, on ONNX Runtime.

The labels' prompt-ensembled embeddings are computed once with the bundle's FP32 text graph (the most exact one;
at run time a bundle may use its INT8 text graph) and stored as :data:`lbedge.baked.BAKED_FILE`, named with its
sha256 in the manifest. With ``drop_text`` the bundle then loses its text tower: its own text graphs, text
engines and tokenizer files are deleted, or its reference to a shared text bundle is removed (the text bundle
itself stays, for the bundles that share it). Only the files the manifest names are deleted.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from .baked import BAKED_FILE, make_baked
from .bundle import Manifest, load_bundle, text_source
from .engine import sha256_file
from .errors import CheckpointError, UsageError
from .paths import bundle_file
from .progress import stage
from .zeroshot import ZeroShotClassifier

log = logging.getLogger(__name__)


def bake_bundle(
    path: str | Path,
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    drop_text: bool = False,
    text_from: str | Path | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Store the embeddings of ``labels`` (with ``templates``; default the modality's set) in the bundle at
    ``path``, replacing a set baked before; with ``drop_text`` remove its text tower afterwards.

    ``text_from``: the bundle or text bundle whose text tower embeds the labels, for a bundle that has none
    (baked before with ``drop_text``); it must be the tower the bundle was trained against (same fingerprint).
    """
    folder = Path(path)
    man = Manifest.read(folder)
    if man.modality == "text" or "vision" not in man.towers:
        raise UsageError(f"{folder} is a text bundle: bake labels into the vision bundles that share it")
    fingerprint = man.text.get("fingerprint")
    if not fingerprint:
        raise CheckpointError(
            f"{folder} records no text-tower fingerprint, so baked labels could not be tied to their text tower: "
            "rebuild it with `lbedge build`"
        )
    if not man.has_text_tower and text_from is None:
        raise UsageError(
            f"{folder} has no text tower to embed new labels with (it was baked with --drop-text): give the bundle "
            "or text bundle it was built with, `--text PATH` (text_from=)"
        )
    tfolder, tman = text_source(folder, man, text_from=text_from)
    text_precision = "fp32" if "fp32" in tman.towers["text"] else "auto"
    stage("embedding %d labels with the %s text graph of %s", len(labels), text_precision, tfolder)
    with load_bundle(
        folder,
        backend="onnxruntime",
        text_precision=text_precision,
        text_from=text_from,
        threads=threads,
        baked_labels=False,
    ) as enc:
        clf = ZeroShotClassifier(enc, labels, templates=templates, use_cache=False, use_baked=False, progress=progress)
        used = enc.precision.get("text", text_precision)
    baked = make_baked(clf.labels, clf.templates, clf.text_embeds, fingerprint)
    baked.write(folder / BAKED_FILE)
    man.baked_labels = {"file": BAKED_FILE, "sha256": sha256_file(folder / BAKED_FILE)}
    man.provenance["baked_labels"] = {
        "labels": len(baked.labels),
        "templates": len(baked.templates),
        "text_graph": f"{used} text graph of {tfolder.name}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    doomed = _drop_text_tower(folder, man) if drop_text else []
    man.write(folder)
    for f in doomed:
        f.unlink(missing_ok=True)
    if drop_text and (folder / "tokenizer").is_dir() and not any((folder / "tokenizer").iterdir()):
        (folder / "tokenizer").rmdir()
    return man


def _drop_text_tower(folder: Path, man: Manifest) -> list[Path]:
    """Take the text tower out of ``man`` (own graphs, text engines, tokenizer, shared text bundle reference);
    the files to delete once the new manifest is written, each checked to lie inside the bundle."""
    names: list[str] = []
    for entry in man.towers.pop("text", {}).values():
        names += [entry.file, *entry.extra_files]
    kept = []
    for e in man.engines:
        if e["tower"] == "text":
            names += [e["file"], e["manifest"], str(PurePosixPath(e["file"].replace("\\", "/")).with_suffix(".json"))]
        else:
            kept.append(e)
    man.engines = kept
    names += [f"tokenizer/{name}" for name in man.tokenizer]
    man.tokenizer = {}
    if man.text_bundle:
        log.info("%s no longer names the shared text bundle %s (which stays)", folder, man.text_bundle)
    man.text_bundle = ""
    return [bundle_file(folder, name, what="text tower file") for name in dict.fromkeys(names)]


def baked_summary(folder: str | Path) -> dict[str, Any]:
    """What a bundle's baked label set holds (labels, templates, file size), for the CLI; {} when none."""
    from .bundle import load_baked

    folder = Path(folder)
    man = Manifest.read(folder)
    baked = load_baked(folder, man, verify=True)
    if baked is None:
        return {}
    return {
        **baked.describe(),
        "file": man.baked_labels["file"],
        "bytes": (folder / man.baked_labels["file"]).stat().st_size,
        "text_tower": "kept" if man.has_text_tower else "none (dropped)",
    }
