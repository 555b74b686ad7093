"""The confinement rule: every file a bundle names lies inside the bundle folder.

A bundle is a folder that may come from anywhere (a download, a USB stick, a colleague). Its manifest names
files by relative path; :func:`bundle_file` is the one place such a name becomes a path. It refuses, before
the target is opened or hashed:

* a name that is not a plain relative path: empty, absolute (``/x``, ``\\\\host\\share``), with a drive letter
  (``C:``), a NUL character, or an empty, ``.`` or ``..`` component (``/`` and ``\\`` both separate);
* a name whose real path (symbolic links followed) is not inside the bundle's real folder.

The one reference allowed to leave the folder is ``text_bundle``, the shared text bundle: see
:func:`text_bundle_folder`. Checkpoint folders only get the lexical rule (:func:`lexical_problem`), since
Hugging Face caches keep checkpoint files as symbolic links into a shared blob folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CheckpointError

MAX_NAME_CHARS = 1024
MAX_TEXT_BUNDLE_UPS = 2  # "../text" (a sibling); "../../text" (lb-mini's students, one level deeper)
_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[\\/]")


def lexical_problem(name: object) -> str | None:
    """Why ``name`` is not a plain relative path inside a folder, or None when it is one."""
    if not isinstance(name, str):
        return f"expected a relative file name, got {type(name).__name__}"
    if not name:
        return "empty file name"
    if len(name) > MAX_NAME_CHARS:
        return f"file name of {len(name)} characters (at most {MAX_NAME_CHARS})"
    if "\x00" in name:
        return "file name contains a NUL character"
    if name[0] in "/\\":
        return f"absolute path {name[:80]!r}"
    if _DRIVE.match(name):
        return f"path with a drive letter {name[:80]!r}"
    parts = _SEPARATORS.split(name)
    if ".." in parts:
        return f"{name[:80]!r} has a '..' component"
    if any(part in ("", ".") for part in parts):
        return f"{name[:80]!r} has an empty or '.' component"
    return None


def real_folder(folder: Path) -> Path:
    """The real path of a bundle folder (symbolic links resolved), or a CheckpointError."""
    try:
        return folder.resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"bundle folder {folder} cannot be resolved ({exc}): check the path") from None


def resolve_inside(root: Path, name: str) -> tuple[Path | None, str | None]:
    """``(real path, None)`` of the lexically plain ``name`` under the real folder ``root`` (links followed), or
    ``(None, why)`` when it is not inside ``root``."""
    try:
        real = root.joinpath(*_SEPARATORS.split(name)).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        return None, f"{name[:80]!r} cannot be resolved ({exc})"
    if real == root or not real.is_relative_to(root):
        return None, f"{name[:80]!r} is a symbolic link (or lies under one) that leads outside the bundle folder"
    return real, None


def path_problem(root: Path, name: object) -> str | None:
    """Why ``name`` is not a file inside the real folder ``root`` (lexically, then with links followed)."""
    problem = lexical_problem(name)
    return problem if problem is not None else resolve_inside(root, name)[1]  # type: ignore[arg-type]


def bundle_file(folder: Path, name: object, *, what: str = "file") -> Path:
    """The real path of file ``name`` of the bundle ``folder``; a CheckpointError when it would leave it.

    Nothing of the target is read: the check is on the name and on the links leading to it.
    """
    root = real_folder(folder)
    real, problem = None, lexical_problem(name)
    if problem is None:
        real, problem = resolve_inside(root, name)  # type: ignore[arg-type]
    if real is None:
        raise CheckpointError(
            f"bundle {folder} names a {what} that lbedge will not read: {problem}. lbedge reads "
            "only files inside a bundle's folder, named by plain relative paths: rebuild the bundle "
            "or re-copy it without links"
        )
    return real


def text_bundle_problem(rel: object) -> str | None:
    """Why ``rel`` is not an acceptable ``text_bundle`` reference, or None.

    Accepted: up to ``MAX_TEXT_BUNDLE_UPS`` leading ``..`` components, then one or more plain folder names
    (``"../text"``, ``"../../text"``, ``"text"``); nothing absolute, no ``..`` after a name.
    """
    if not isinstance(rel, str):
        return f"expected a relative folder path, got {type(rel).__name__}"
    if not rel:
        return None
    parts = _SEPARATORS.split(rel)
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > MAX_TEXT_BUNDLE_UPS:
        return (
            f"{rel[:80]!r} climbs {ups} folders up (at most {MAX_TEXT_BUNDLE_UPS}: the text bundle must be a "
            f"sibling of the bundle or of its parent, or a sub-folder)"
        )
    rest = "/".join(parts[ups:])
    if not rest:
        return f"{rel[:80]!r} names no folder"
    problem = lexical_problem(rest)
    return None if problem is None else f'{problem} (write "../text" or "text")'


def text_bundle_folder(folder: Path, rel: str) -> Path:
    """The real folder of the shared text bundle ``rel`` names, relative to the bundle ``folder``.

    Besides :func:`text_bundle_problem`, the real text folder (links followed) must lie inside the folder that
    the leading ``..`` components reach (the bundle itself, its parent or its grandparent) and must not be the
    bundle itself.
    """
    problem = text_bundle_problem(rel)
    root = real_folder(folder)
    if problem is None:
        parts = _SEPARATORS.split(rel)
        ups = sum(1 for p in parts if p == "..")
        if ups > len(root.parents):
            raise CheckpointError(f"bundle {folder} names a shared text bundle {rel!r} above the file system root")
        anchor = root.parents[ups - 1] if ups else root
        try:
            real = anchor.joinpath(*parts[ups:]).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            problem = f"{rel[:80]!r} cannot be resolved ({exc})"
        else:
            if real == root:
                problem = f"{rel[:80]!r} leads back to the bundle itself"
            elif real == anchor or not real.is_relative_to(anchor):
                problem = f"{rel[:80]!r} is a symbolic link (or lies under one) that leads elsewhere"
            else:
                return real
    raise CheckpointError(
        f"bundle {folder} names an unusable shared text bundle (text_bundle): {problem}. Keep the "
        f'text bundle as a real folder beside the bundle ("../text") and rebuild the bundle with '
        f"`lbedge build` or `share_text`"
    )
