"""The schema of a bundle's ``manifest.json``, checked before any field is used.

:func:`manifest_problems` walks a parsed manifest and returns every problem with its JSON path
(``towers.vision.int8.sha256: expected 64 hex characters (a sha256), got 12345``): types, required
fields, value ranges, the preprocessing section (through :func:`lbedge.config.preprocess_problems`), and,
given the bundle's real folder, the confinement rule of :mod:`lbedge.paths` for every file the manifest names
(tower graphs, their external data, tokenizer files, engines and engine manifests, the baked label set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import MAX_TEXT_POSITIONS, MAX_VOCAB, MAX_WIDTH, MODALITIES, TEXT_FAMILIES, preprocess_problems
from .paths import lexical_problem, path_problem, text_bundle_problem
from .schema import (
    MAX_ENTRIES,
    Problems,
    get_dict,
    get_entries,
    get_float,
    get_hex64,
    get_int,
    get_list,
    get_str,
    join,
    missing_keys,
    show,
    unknown_keys,
)

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
TOWERS = ("vision", "text")
BUNDLE_MODALITIES = (*MODALITIES, "text")

REQUIRED = ("modality", "embed_dim", "logit_scale", "preprocess", "text", "tokenizer", "towers")
OPTIONAL = ("engines", "provenance", "name", "text_bundle", "lbedge_version", "schema_version", "baked_labels")
TOWER_FILE_REQUIRED = ("file", "sha256")
TOWER_FILE_OPTIONAL = ("inputs", "extra_files", "agreement", "details")
ENGINE_REQUIRED = ("tower", "precision", "file", "manifest")
BAKED_REQUIRED = ("file", "sha256")


def manifest_problems(raw: Any, root: Path | None = None) -> Problems:
    """Every problem of the parsed manifest ``raw``; with ``root`` (the bundle's real folder) every file name
    is also held to the confinement rule, symbolic links followed."""
    p = Problems()
    top = get_dict(p, "", raw)
    if top is None:
        return p
    unknown_keys(p, "", top, REQUIRED + OPTIONAL)
    missing_keys(p, "", top, REQUIRED)
    modality = get_str(p, "modality", top["modality"], choices=BUNDLE_MODALITIES) if "modality" in top else None
    if "embed_dim" in top:
        get_int(p, "embed_dim", top["embed_dim"], 1, MAX_WIDTH)
    if "logit_scale" in top:
        get_float(p, "logit_scale", top["logit_scale"], 0.0, 1e6, lo_open=True)
    if "preprocess" in top:
        _preprocess(p, top["preprocess"], modality)
    if "text" in top:
        _text(p, top["text"])
    if "tokenizer" in top:
        _tokenizer(p, top["tokenizer"], root)
    if "towers" in top:
        _towers(p, top["towers"], root)
    if "engines" in top:
        _engines(p, top["engines"], root)
    for name in ("name", "lbedge_version"):
        if name in top:
            get_str(p, name, top[name])
    if "provenance" in top:
        get_dict(p, "provenance", top["provenance"])
    if "text_bundle" in top and (problem := text_bundle_problem(top["text_bundle"])) is not None:
        p.add("text_bundle", problem)
    if "baked_labels" in top:
        _baked_labels(p, top["baked_labels"], root)
    return p


def _file(p: Problems, where: str, name: Any, root: Path | None) -> None:
    """Record a problem unless ``name`` is a file name inside the bundle (see :mod:`lbedge.paths`)."""
    problem = lexical_problem(name) if root is None else path_problem(root, name)
    if problem is not None:
        p.add(where, problem)


def _preprocess(p: Problems, value: Any, modality: str | None) -> None:
    d = get_dict(p, "preprocess", value)
    if d is None or modality in (None, "text"):
        return  # a text bundle has no preprocessing ({})
    if d.get("modality") != modality:
        got = show(d.get("modality"))
        p.add("preprocess.modality", f"expected {show(modality)} (the bundle's modality), got {got}")
        return
    p.extend("preprocess", preprocess_problems(d))


def _text(p: Problems, value: Any) -> None:
    d = get_dict(p, "text", value)
    if d is None:
        return
    missing_keys(p, "text", d, ("context_length",))
    if "family" in d:
        get_str(p, "text.family", d["family"], choices=TEXT_FAMILIES)
    if "context_length" in d:
        get_int(p, "text.context_length", d["context_length"], 1, MAX_TEXT_POSITIONS)
    if "vocab_size" in d:
        get_int(p, "text.vocab_size", d["vocab_size"], 1, MAX_VOCAB)
    if d.get("fingerprint") is not None:
        get_hex64(p, "text.fingerprint", d["fingerprint"])


def _tokenizer(p: Problems, value: Any, root: Path | None) -> None:
    d = get_entries(p, "tokenizer", value)
    for name, sha in (d or {}).items():
        where = join("tokenizer", name)
        _file(p, where, f"tokenizer/{name}", root)
        get_hex64(p, where, sha)


def _towers(p: Problems, value: Any, root: Path | None) -> None:
    towers = get_dict(p, "towers", value)
    for tower, by_precision in (towers or {}).items():
        where = join("towers", tower)
        if tower not in TOWERS:
            p.add(where, f"unknown tower (expected {', '.join(TOWERS)})")
            continue
        for precision, entry in (get_dict(p, where, by_precision) or {}).items():
            if precision not in PRECISIONS:
                p.add(join(where, precision), f"unknown precision (expected {', '.join(PRECISIONS)})")
                continue
            _tower_file(p, join(where, precision), entry, root)


def _tower_file(p: Problems, where: str, value: Any, root: Path | None) -> None:
    d = get_dict(p, where, value)
    if d is None:
        return
    unknown_keys(p, where, d, TOWER_FILE_REQUIRED + TOWER_FILE_OPTIONAL)
    missing_keys(p, where, d, TOWER_FILE_REQUIRED)
    if "file" in d:
        _file(p, join(where, "file"), d["file"], root)
    if "sha256" in d:
        get_hex64(p, join(where, "sha256"), d["sha256"])
    extra = get_entries(p, join(where, "extra_files"), d.get("extra_files", {})) or {}
    for name, sha in extra.items():
        _file(p, join(join(where, "extra_files"), name), name, root)
        get_hex64(p, join(join(where, "extra_files"), name), sha)
    inputs = get_entries(p, join(where, "inputs"), d.get("inputs", {})) or {}
    for name, shape in inputs.items():
        dims = get_list(p, join(join(where, "inputs"), name), shape)
        if dims is not None and not all(
            isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool) and x >= 0) for x in dims
        ):
            p.add(join(join(where, "inputs"), name), f"expected dimension sizes or names, got {show(dims)}")
    if d.get("agreement") is not None:
        get_dict(p, join(where, "agreement"), d["agreement"])
    get_dict(p, join(where, "details"), d.get("details", {}))


def _baked_labels(p: Problems, value: Any, root: Path | None) -> None:
    """The baked label set (see :mod:`lbedge.baked`): ``{"file", "sha256"}``, the file confined."""
    d = get_dict(p, "baked_labels", value)
    if d is None:
        return
    unknown_keys(p, "baked_labels", d, BAKED_REQUIRED)
    missing_keys(p, "baked_labels", d, BAKED_REQUIRED)
    if "file" in d:
        _file(p, "baked_labels.file", d["file"], root)
    if "sha256" in d:
        get_hex64(p, "baked_labels.sha256", d["sha256"])


def _engines(p: Problems, value: Any, root: Path | None) -> None:
    engines = get_list(p, "engines", value) or []
    if len(engines) > MAX_ENTRIES:
        p.add("engines", f"expected at most {MAX_ENTRIES} entries, got {len(engines)}")
        return
    for i, entry in enumerate(engines):
        where = join("engines", i)
        d = get_dict(p, where, entry)
        if d is None:
            continue
        missing_keys(p, where, d, ENGINE_REQUIRED)
        if "tower" in d:
            get_str(p, join(where, "tower"), d["tower"], choices=TOWERS)
        if "precision" in d:
            get_str(p, join(where, "precision"), d["precision"], choices=PRECISIONS)
        for key in ("file", "manifest"):
            if key in d:
                _file(p, join(where, key), d[key], root)
