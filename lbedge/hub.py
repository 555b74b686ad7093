"""Download official LanguageBind checkpoints from the Hugging Face hub (needs ``lbedge[hub]`` and internet)."""

from __future__ import annotations

from pathlib import Path

from .deps import require
from .errors import LBEdgeError

#: official checkpoints: short name -> hub repository
OFFICIAL = {
    "image": "LanguageBind/LanguageBind_Image",
    "depth": "LanguageBind/LanguageBind_Depth",
    "thermal": "LanguageBind/LanguageBind_Thermal",
    "audio": "LanguageBind/LanguageBind_Audio",
    "audio_ft": "LanguageBind/LanguageBind_Audio_FT",
    "video": "LanguageBind/LanguageBind_Video",
    "video_ft": "LanguageBind/LanguageBind_Video_FT",
    "video_v1.5_ft": "LanguageBind/LanguageBind_Video_V1.5_FT",
    "video_huge_v1.5_ft": "LanguageBind/LanguageBind_Video_Huge_V1.5_FT",
}
_FILES = ["config.json", "*.safetensors", "*.bin", "*.json", "vocab.json", "merges.txt"]


class DownloadError(LBEdgeError):
    """A checkpoint could not be downloaded."""


def resolve(name: str) -> str:
    """Hub repository id for a short name (``thermal``), a repo name or a full id."""
    key = name.lower().removeprefix("languagebind/").removeprefix("languagebind_")
    if key in OFFICIAL:
        return OFFICIAL[key]
    for repo in OFFICIAL.values():
        if repo.split("/")[1].lower() == name.lower() or repo.lower() == name.lower():
            return repo
    if "/" in name:
        return name
    raise DownloadError(f"unknown checkpoint {name!r}: choose one of {', '.join(OFFICIAL)}")


def download(name: str, local_dir: str | Path, *, revision: str | None = None) -> Path:
    """Download checkpoint ``name`` into ``local_dir`` and return that folder (official layout)."""
    repo = resolve(name)
    hub = require("huggingface_hub")
    target = Path(local_dir)
    try:
        hub.snapshot_download(repo_id=repo, local_dir=str(target), revision=revision, allow_patterns=_FILES)
    except Exception as exc:  # offline, DNS, HTTP errors, auth: all end the same way for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(
            f"could not download {repo} (offline or hub unreachable?): {first}. Download it on a "
            "machine with internet and copy the folder, then use lbedge.from_pretrained(DIR)"
        ) from exc
    return target
