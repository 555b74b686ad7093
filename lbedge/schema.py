"""Bounded JSON reading and typed field checks that collect every problem of a document at once.

Manifests, configs and engine manifests come from folders lbedge does not control. Each is read with
:func:`read_json` (size limit before reading, UTF-8, nesting depth bounded, every parse failure a
:class:`~lbedge.errors.CheckpointError`), then checked field by field with the ``get_*`` helpers: a bad
value is recorded in a :class:`Problems` list under its JSON path (``towers.vision.int8.sha256``) and the
check goes on, so one error can name every problem of the file.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import CheckpointError
from .limits import hint, limits

MAX_JSON_DEPTH = 64  # objects and lists nested deeper than this are refused (lbedge writes a few levels)
MAX_SHOWN = 40  # problems spelled out in one error message; the rest are counted
MAX_KEPT = 1000  # problems kept in memory; beyond, they are only counted
MAX_ENTRIES = 256  # entries of one map or list of file names (a bundle names a handful)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


@dataclass
class Problems:
    """The problems found in one document, each with the JSON path where it was found."""

    items: list[tuple[str, str]] = field(default_factory=list)  # (JSON path, message), the first MAX_KEPT
    count: int = 0

    def add(self, where: str, message: str) -> None:
        """Record ``message`` about the value at JSON path ``where`` ("" for the document itself)."""
        self.count += 1
        if len(self.items) < MAX_KEPT:
            self.items.append((where, message))

    def extend(self, where: str, other: "Problems") -> None:
        """Record the problems of a nested check (paths relative to it) under JSON path ``where``."""
        for path, message in other.items:
            self.add(f"{where}.{path}" if where and path else where or path, message)
        self.count += other.count - len(other.items)

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count

    def lines(self) -> list[str]:
        """Each problem as ``path: message``."""
        return [f"{path}: {message}" if path else message for path, message in self.items]

    def summary(self) -> str:
        """The problems as one line: the first ``MAX_SHOWN`` spelled out, the rest counted."""
        rest = self.count - MAX_SHOWN
        return "; ".join(self.lines()[:MAX_SHOWN]) + (f"; ... and {rest} more" if rest > 0 else "")


def join(path: str, key: str | int) -> str:
    """The JSON path of member ``key`` of the value at ``path``: ``towers.vision``, ``engines[0]``, and
    ``tokenizer["vocab.json"]`` for a key that is not a plain name."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key[:60])}]"


def show(value: Any) -> str:
    """A short description of ``value`` for an error message: JSON-like, cut to a readable length."""
    if isinstance(value, dict):
        return f"an object with {len(value)} field(s)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- typed getters: return the value, or None after recording a problem ------------------------------------


def get_dict(p: Problems, where: str, value: Any) -> dict[str, Any] | None:
    """``value`` when it is a JSON object."""
    if isinstance(value, dict):
        return value
    p.add(where, f"expected an object, got {show(value)}")
    return None


def get_list(p: Problems, where: str, value: Any) -> list[Any] | None:
    """``value`` when it is a JSON list."""
    if isinstance(value, list):
        return value
    p.add(where, f"expected a list, got {show(value)}")
    return None


def get_str(
    p: Problems, where: str, value: Any, *, choices: Sequence[str] | None = None, max_len: int = 4096
) -> str | None:
    """``value`` when it is a string (of at most ``max_len`` characters, one of ``choices`` if given)."""
    if not isinstance(value, str):
        p.add(where, f"expected a string, got {show(value)}")
        return None
    if choices is not None and value not in choices:
        p.add(where, f"expected one of {', '.join(choices)}, got {show(value)}")
        return None
    if len(value) > max_len:
        p.add(where, f"expected at most {max_len} characters, got {len(value)}")
        return None
    return value


def get_bool(p: Problems, where: str, value: Any) -> bool | None:
    """``value`` when it is true or false."""
    if isinstance(value, bool):
        return value
    p.add(where, f"expected true or false, got {show(value)}")
    return None


def get_int(p: Problems, where: str, value: Any, lo: int, hi: int, *, integral_float: bool = False) -> int | None:
    """``value`` when it is an integer in ``lo..hi`` (an integral float such as ``112.0`` too, if allowed)."""
    if integral_float and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        p.add(where, f"expected an integer in {lo}..{hi}, got {show(value)}")
        return None
    if not lo <= value <= hi:
        p.add(where, f"expected an integer in {lo}..{hi}, got {value}")
        return None
    return int(value)


def get_float(p: Problems, where: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    """``value`` when it is a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        p.add(where, f"expected a finite number in {bracket}{lo:g}, {hi:g}], got {show(value)}")
        return None
    return float(value)


def get_entries(p: Problems, where: str, value: Any, *, limit: int = MAX_ENTRIES) -> dict[str, Any] | None:
    """``value`` when it is an object of at most ``limit`` entries (each is checked, so their number is bounded)."""
    d = get_dict(p, where, value)
    if d is not None and len(d) > limit:
        p.add(where, f"expected at most {limit} entries, got {len(d)}")
        return None
    return d


def get_hex64(p: Problems, where: str, value: Any) -> str | None:
    """``value`` when it is a sha256 digest: 64 lower-case hex characters."""
    if isinstance(value, str) and _HEX64.fullmatch(value):
        return value
    p.add(where, f"expected 64 hex characters (a sha256), got {show(value)}")
    return None


def unknown_keys(p: Problems, where: str, d: dict[str, Any], known: Iterable[str]) -> None:
    """Record every key of ``d`` not in ``known``."""
    allowed = set(known)
    for key in d:
        if key not in allowed:
            p.add(join(where, key), f"unknown field (expected {', '.join(sorted(allowed))})")


def missing_keys(p: Problems, where: str, d: dict[str, Any], required: Iterable[str]) -> None:
    """Record every key of ``required`` absent from ``d``."""
    for key in required:
        if key not in d:
            p.add(join(where, key), "missing")


# --- bounded JSON files ------------------------------------------------------------------------------------


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects and lists in ``value`` nest deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def read_text(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of ``path`` (a ``what`` such as "tokenizer merges"), refused with a CheckpointError that
    ends with ``fix`` when it is over ``limits().max_json_bytes`` (checked before reading) or not UTF-8."""
    data = _read_bounded(path, what, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} {path} is not UTF-8 text (byte {exc.start}): {fix}") from None


def _read_bounded(path: Path, what: str, fix: str) -> bytes:
    """The bytes of ``path``, refused before reading when the file is over ``limits().max_json_bytes``."""
    cap = limits().max_json_bytes
    try:
        size = path.stat().st_size
        if size > cap:
            raise CheckpointError(
                f"{what} {path} is {size} bytes, over the max_json_bytes limit of {cap:g}: "
                f"{fix} ({hint('max_json_bytes')})"
            )
        with open(path, "rb") as f:
            data = f.read(int(cap) + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}") from None
    if len(data) > cap:
        raise CheckpointError(f"{what} {path} grew past the max_json_bytes limit while being read: {fix}")
    return data


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse the JSON file ``path`` (a ``what`` such as "bundle manifest") within lbedge's bounds.

    Refused with a :class:`CheckpointError` that ends with ``fix``: a file over ``limits().max_json_bytes``
    (before it is read), one that is not UTF-8, not JSON, or nested deeper than ``MAX_JSON_DEPTH``.
    """
    data = _read_bounded(path, what, fix)
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} {path} is not UTF-8 text (byte {exc.start}): {fix}") from None
    except RecursionError:
        raise CheckpointError(f"{what} {path} nests objects or lists too deeply to parse: {fix}") from None
    except ValueError as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON ({exc}): {fix}") from None
    if json_depth_exceeds(raw):
        raise CheckpointError(f"{what} {path} nests objects or lists deeper than {MAX_JSON_DEPTH} levels: {fix}")
    return raw
