"""lb-mini's evaluation task: zero-shot top-1 on held-out scenes of its world (attribute combinations and prompt
phrasings never seen in training), the default of ``lbedge eval``."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from lbedge import load
from lbedge.bundle import Manifest
from lbedge.evaluate import EvalResult, evaluate

from . import world
from .models import bundle_dirs, ensure_text_bundle


def heldout_templates(modality: str) -> list[str]:
    """The held-out phrasing's prompt templates for ``modality`` (never seen in training), as ``"{}"`` formats."""
    return [t.replace("{a}", "{}") for t in world.HELDOUT_PHRASING.labels[modality]]


def world_version() -> str:
    """A short hash of the world's code: rendered data cached under it is redone when the world changes."""
    return hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:10]


def heldout_set(modality: str, scenes: int, seed: int, root: str | Path) -> Path:
    """Write (once) the world's held-out split for ``modality``: scenes with attribute combinations never
    trained on. Returns its manifest (the first text of each row is the class: ``"a ball"``)."""
    folder = Path(root) / f"heldout-{scenes}-{seed}-{world_version()}"
    manifest = folder / modality / "heldout.jsonl"
    if not manifest.is_file():
        world.write_dataset(folder, 0, 0, seed, n_heldout=scenes, modalities=(modality,))
    return manifest


def evaluate_lb_mini(
    models: Sequence[str | Path],
    *,
    scenes: int = 400,
    seed: int = 1,
    precisions: Sequence[str] | None = None,
    cache: str | Path | None = None,
    say: Callable[[str], None] = lambda s: None,
) -> list[EvalResult]:
    """Zero-shot top-1 of each model (bundle: every vision precision it has, or ``precisions``; checkpoint:
    PyTorch FP32) on ``scenes`` held-out scenes of its modality, with held-out prompt phrasings. FP32 rows use
    the FP32 text tower, the others the text graph the bundle would deploy with.

    ``seed`` 1 differs from the training seed 0, so even the scenes' continuous parameters are new."""
    cache = Path(cache) if cache is not None else Path(tempfile.gettempdir()) / "lbedge-eval"
    results = []
    for path in map(Path, models):
        if (path / "manifest.json").is_file():
            man = Manifest.read(path)
            precs = [p for p in man.towers["vision"] if precisions is None or p in precisions]
            encs = [(p, load(path, precision=p, text_precision="fp32" if p == "fp32" else "auto")) for p in precs]
        else:
            encs = [("fp32 (torch)", load(path))]
        for prec, enc in encs:
            manifest = heldout_set(enc.modality, scenes, seed, cache)
            name = path.name if path.parent.name != "student" else f"student/{path.name}"
            res = evaluate(enc, manifest, templates=heldout_templates(enc.modality), model=name, precision=prec)
            say(f"{name} {prec}: top-1 {100 * res.top1:.1f}% on {res.n} (chance {100 * res.chance:.0f}%)")
            results.append(res)
    return results


def default_models(*, say: Callable[[str], None] = lambda s: None) -> list[Path]:
    """What ``lbedge eval`` measures without arguments: lb-mini's bundles and students (its text bundle built if
    missing)."""
    ensure_text_bundle(say=say)
    return [*bundle_dirs().values(), *bundle_dirs(student=True).values()]


__all__ = ["default_models", "evaluate_lb_mini", "heldout_set", "heldout_templates", "world_version"]
