"""Bundles: self-contained, relocatable deployment folders, loaded without torch.

A bundle holds ``manifest.json``, the tokenizer files, and per tower and precision an ONNX graph
(``vision.int8.onnx``, ``text.fp32.onnx``...), plus TensorRT engines compiled on the target device
under ``engines/`` with their own manifests. Every file is listed with its sha256; ``load_bundle``
verifies them, so a truncated copy or a swapped file is an error, not silent garbage.

Several bundles bound to one language tower may share it: a *text bundle* (modality ``"text"``, only a
text tower and the tokenizer) beside vision bundles whose manifests name it in ``text_bundle`` (a path
relative to the vision bundle, e.g. ``"../text"``) instead of carrying their own copy. The vision
manifest records the text tower's weight fingerprint, and loading refuses a text bundle whose
fingerprint differs, so a shared text tower can be rebuilt or replaced but never silently swapped.

A bundle may also carry a *baked label set* (:mod:`lbedge.baked`, ``baked_labels`` in the manifest): the text
embeddings of a fixed label set, so a classifier of those labels needs neither text graph nor tokenizer. Such a
bundle may have no text tower at all (``lbedge bake --drop-text``); loading it then reads no text file. The
tokenizer of every bundle is read on first use, not at load.

A bundle may come from anywhere, so nothing in it is trusted: ``manifest.json`` is read within size and
nesting bounds and checked against its schema (:mod:`lbedge.manifest_schema`, every problem listed in one
:class:`CheckpointError`), and every file it names goes through :func:`lbedge.paths.bundle_file`, which
refuses a name that leads outside the bundle folder before the file is opened. The shared text bundle is the
one reference allowed outside (see :func:`lbedge.paths.text_bundle_folder`); its own files stay inside it.
ONNX graphs are scanned for external-data locations, held to the same rule whatever onnxruntime is installed.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import numpy as np

from .baked import BakedLabels, read_baked
from .config import PreprocessConfig, TextConfig
from .cpu import int8_weights_suit
from .deps import available
from .encoder import Encoder
from .engine import EngineManifest, sha256_file
from .errors import CheckpointError, EngineMismatch, InputError
from .manifest_schema import PRECISIONS, SCHEMA_VERSION, manifest_problems  # noqa: F401 (PRECISIONS: public here too)
from .onnx_refs import external_data_locations
from .paths import bundle_file, lexical_problem, real_folder, resolve_inside, text_bundle_folder
from .schema import read_json
from .tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime")
REBUILD = "rebuild the bundle with `lbedge build` (or re-copy it)"


@dataclass
class TowerFile:
    """One graph of one tower at one precision."""

    file: str
    sha256: str
    inputs: dict[str, Any] = field(default_factory=dict)
    extra_files: dict[str, str] = field(default_factory=dict)  # external data: name -> sha256
    agreement: dict[str, Any] | None = None  # vs FP32 on held-out inputs
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The contents of ``manifest.json``."""

    modality: str
    embed_dim: int
    logit_scale: float
    preprocess: dict[str, Any]
    text: dict[str, Any]  # family, context_length, vocab_size, fingerprint
    tokenizer: dict[str, str]  # file -> sha256
    towers: dict[str, dict[str, TowerFile]]  # tower -> precision -> file
    engines: list[dict[str, Any]] = field(default_factory=list)  # {"tower", "precision", "file", "manifest"}
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    text_bundle: str = ""  # relative path of a shared text bundle holding the text tower (see below)
    lbedge_version: str = ""
    schema_version: int = SCHEMA_VERSION
    baked_labels: dict[str, str] = field(default_factory=dict)  # {"file", "sha256"} of a baked label set, or {}

    def to_json(self) -> str:
        def enc(o: Any) -> Any:
            return o.__dict__ if isinstance(o, TowerFile) else o

        fields = {k: v for k, v in self.__dict__.items() if k != "baked_labels" or v}  # older manifests unchanged
        return json.dumps(fields, default=enc, indent=2, sort_keys=True) + "\n"

    @property
    def has_text_tower(self) -> bool:
        """Whether the bundle has a text tower: its own, or a shared text bundle's."""
        return "text" in self.towers or bool(self.text_bundle)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        """Read and validate ``folder/manifest.json``: one CheckpointError lists every problem found."""
        folder = Path(folder)
        if not (folder / "manifest.json").is_file():
            raise CheckpointError(f"no manifest.json in {folder}: not an lbedge bundle (build one with `lbedge build`)")
        path = bundle_file(folder, "manifest.json", what="manifest")
        raw = read_json(path, "bundle manifest", REBUILD)
        if isinstance(raw, dict) and raw.get("schema_version") != SCHEMA_VERSION:
            raise CheckpointError(
                f"{path} has bundle schema {raw.get('schema_version')!r}; this lbedge reads "
                f"schema {SCHEMA_VERSION}: rebuild the bundle or upgrade lbedge"
            )
        problems = manifest_problems(raw, real_folder(folder))
        if problems:
            raise CheckpointError(
                f"{folder / 'manifest.json'} is not a valid bundle manifest ({len(problems)} "
                f"problem(s)): {problems.summary()}. Rebuild the bundle with `lbedge build` "
                "(or re-copy it)"
            )
        raw = dict(raw, towers={t: {p: TowerFile(**f) for p, f in by_p.items()} for t, by_p in raw["towers"].items()})
        return cls(**raw)

    def write(self, folder: Path) -> None:
        (folder / "manifest.json").write_text(self.to_json(), encoding="utf-8")


def verify_file(folder: Path, name: str, sha256: str) -> Path:
    """The real path of bundle file ``name``, after checking that it lies inside ``folder`` and has ``sha256``."""
    path = bundle_file(folder, name)
    if not path.is_file():
        raise CheckpointError(f"bundle file {name} is missing from {folder}: copy the whole bundle folder")
    got = sha256_file(path)
    if got != sha256:
        raise CheckpointError(
            f"bundle file {path} is corrupt or was replaced (sha256 {got[:12]}... != manifest "
            f"{sha256[:12]}...): rebuild or re-copy the bundle"
        )
    return path


def check_external_data(folder: Path, entry: TowerFile, graph: Path, *, verify: bool) -> None:
    """Refuse an ONNX graph whose external data lies outside the bundle folder or, with ``verify``, is not listed
    (with its sha256) in the manifest's ``extra_files``. Checked by lbedge whatever onnxruntime is installed."""
    root = real_folder(folder)
    base = PurePosixPath(entry.file.replace("\\", "/")).parent
    problems = []
    for location in sorted(external_data_locations(graph)):
        name = str(base / location) if base != PurePosixPath(".") else location
        real, problem = None, lexical_problem(location)
        if problem is None and "\\" in location:  # onnxruntime reads it literally, lbedge as a separator
            problem = "has a backslash"
        if problem is None:
            real, problem = resolve_inside(root, name)
        if real is not None and not real.is_file():
            problem = "missing, or not a regular file"
        if problem is not None:
            problems.append(f"{location[:80]!r}: {problem}")
        elif verify and name not in entry.extra_files:
            problems.append(f"{location[:80]!r} is not listed (with its sha256) in the manifest's extra_files")
    if problems:
        raise CheckpointError(
            f"ONNX graph {entry.file} of bundle {folder} reads external data that lbedge will not "
            f"load ({'; '.join(problems[:10])}): {REBUILD}"
        )


#: preference among a tower's graphs (or engines) when the precision is "auto"
ORDER = {
    ("vision", "tensorrt"): ("int8", "fp16", "fp32"),
    ("vision", "onnxruntime"): ("int8", "fp32", "fp16"),
    ("text", "tensorrt"): ("fp16", "fp32", "int8"),
    ("text", "onnxruntime"): ("int8", "fp32", "fp16"),
}
# on ONNX Runtime fp16 is slow on CPUs, so fp32 comes before it; an int8 text graph exists only when it agreed with
# FP32 to cosine 0.999 (and is the CPU form, which TensorRT does not compile)


def pick_precision(man: Manifest, tower: str, precision: str, backend: str) -> str:
    """The graph of ``tower`` to run on ``backend``: ``precision`` itself (which must exist), or for ``auto``
    the first the bundle has in :data:`ORDER`."""
    have = man.towers.get(tower, {})
    if not have:
        raise CheckpointError(f"bundle has no {tower} tower")
    if precision != "auto":
        if precision not in have:
            raise InputError(f"bundle has no {precision} {tower} graph (has: {', '.join(have)})")
        return precision
    return next(p for p in ORDER[(tower, backend)] if p in have)


def _engine_for(man: Manifest, folder: Path, tower: str, precision: str) -> Path | None:
    """The engine file compiled for ``tower`` at ``precision``, checked to lie inside the bundle with its
    manifest (the TensorRT backend reads ``<engine>.json`` beside it)."""
    for e in man.engines:
        if e["tower"] == tower and e["precision"] == precision:
            engine = bundle_file(folder, e["file"], what="TensorRT engine")
            bundle_file(folder, e["manifest"], what="engine manifest")
            bundle_file(
                folder, str(PurePosixPath(e["file"].replace("\\", "/")).with_suffix(".json")), what="engine manifest"
            )
            if engine.is_file():
                return engine
    return None


def built_engines(man: Manifest, folder: Path, tower: str) -> dict[str, Path]:
    """Precision -> engine file of the TensorRT engines compiled for ``tower`` that are present in ``folder``."""
    out = {}
    for prec in PRECISIONS:
        engine = _engine_for(man, folder, tower, prec) if prec in man.towers.get(tower, {}) else None
        if engine is not None:
            out[prec] = engine
    return out


@dataclass(frozen=True)
class TowerChoice:
    """How one tower of a bundle runs: on which backend, at which precision, and why."""

    tower: str
    backend: str
    precision: str
    engine: Path | None = None
    reason: str = ""


def choose_tower(man: Manifest, folder: Path, tower: str, backend: str, precision: str) -> TowerChoice:
    """Backend and precision of one tower, from the engines that exist.

    ``tensorrt``: an engine is required (the precision asked for, or the best built one for ``auto``), else
    :class:`EngineMismatch` naming the ``lbedge compile`` command. ``onnxruntime``: the graph asked for, or the
    best one. ``auto``: TensorRT when it is installed and the tower has a suitable engine, else ONNX Runtime,
    saying why in the log when TensorRT is installed (never a silent fallback). Towers are chosen one by one: a
    vision tower may run on TensorRT while a shared text tower without engines runs on ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: choose {', '.join(BACKENDS)}")
    engines = built_engines(man, folder, tower) if backend != "onnxruntime" else {}
    usable = [p for p in ORDER[(tower, "tensorrt")] if p in engines and precision in ("auto", p)]
    if backend == "tensorrt" or (backend == "auto" and usable and available("tensorrt")):
        if not usable:
            which = f"{precision} " if precision != "auto" else ""
            built = f" (built: {', '.join(engines)})" if engines else ""
            flag = f" --precision {precision}" if precision != "auto" else ""
            raise EngineMismatch(
                f"bundle {folder} has no TensorRT engine for its {which}{tower} tower{built}: run "
                f"`lbedge compile {folder}{flag}` on this device"
            )
        prec = usable[0]
        return TowerChoice(tower, "tensorrt", prec, engines[prec], f"TensorRT engine {engines[prec].name}")
    prec = pick_precision(man, tower, precision, "onnxruntime")
    reason = "ONNX Runtime"
    bits = man.towers[tower][prec].details.get("int8", {}).get("weight_bits") if prec == "int8" else None
    if bits is not None:
        suits, why = int8_weights_suit(int(bits))
        if not suits:
            log.warning("%s tower of %s: %s", tower, folder, why)
            reason = f"ONNX Runtime; {why}"
    if backend == "auto" and available("tensorrt"):
        which = "" if precision == "auto" else f"{precision} "
        reason = (
            f"ONNX Runtime: TensorRT is installed but {folder} has no {which}{tower} engine; run "
            f"`lbedge compile {folder}` to build one for this device"
        )
        log.warning("%s tower: %s", tower, reason)
    return TowerChoice(tower, "onnxruntime", prec, None, reason)


def choose_backend(man: Manifest, folder: Path, backend: str) -> str:
    """The vision tower's backend (see :func:`choose_tower`, which chooses each tower on its own)."""
    return choose_tower(man, folder, "vision", backend, "auto").backend


def text_source(folder: Path, man: Manifest, *, text_from: str | Path | None = None) -> tuple[Path, Manifest]:
    """The folder and manifest that hold ``man``'s text tower and tokenizer: the bundle itself, or the shared
    text bundle its manifest names (checked: a text bundle whose tower fingerprint matches).

    ``text_from``: another bundle or text bundle to take the text tower from instead (a label-baked bundle
    without one, see :mod:`lbedge.baked`); its text tower must have the same fingerprint."""
    if text_from is not None:
        return _text_from(folder, man, Path(text_from))
    if not man.text_bundle:
        if "text" not in man.towers:
            raise CheckpointError(
                f"bundle {folder} has no text tower and names no shared text bundle"
                + (" (its labels are baked and its text tower was dropped)" if man.baked_labels else "")
                + ": give one with text_from= (`lbedge bake --text`), or use the bundle it was made from"
            )
        return folder, man
    shared = text_bundle_folder(folder, man.text_bundle)
    if not (shared / "manifest.json").is_file():
        raise CheckpointError(
            f"bundle {folder} shares the text tower of {man.text_bundle!r} ({shared}), which is missing: copy "
            f"the text bundle with it, or rebuild it (`lbedge build-text`; for lb-mini: `make lb-mini-text`)"
        )
    tman = Manifest.read(shared)
    if "text" not in tman.towers:
        raise CheckpointError(f"{shared} is not a text bundle (it has no text tower)")
    want, got = man.text.get("fingerprint"), tman.text.get("fingerprint")
    if want != got:
        raise CheckpointError(
            f"text bundle {shared} holds another text tower (fingerprint {str(got)[:12]}... != "
            f"{str(want)[:12]}... that {folder.name} was trained against): rebuild it from the "
            f"right language model"
        )
    return shared, tman


def _text_from(folder: Path, man: Manifest, other: Path) -> tuple[Path, Manifest]:
    """The text tower of bundle or text bundle ``other``, checked to be the one ``man`` was trained against."""
    if not other.is_dir():
        raise CheckpointError(f"the text tower to use with {folder} was to come from {other}, which is not a folder")
    oman = Manifest.read(other)
    if oman.modality != "text" and not oman.has_text_tower:
        raise CheckpointError(f"{other} has no text tower either: give a bundle or text bundle that has one")
    tfolder, tman = text_source(other, oman) if oman.modality != "text" else (other, oman)
    if "text" not in tman.towers:
        raise CheckpointError(f"{tfolder} is not a text bundle (it has no text tower)")
    want, got = man.text.get("fingerprint"), tman.text.get("fingerprint")
    if want is None or want != got:
        raise CheckpointError(
            f"{tfolder} holds another text tower than the one {folder} was trained against (fingerprint "
            f"{str(got)[:12]}... != {str(want)[:12]}...): give the text bundle or bundle it was built with"
        )
    return tfolder, tman


class LazyTokenizer:
    """A bundle's tokenizer, read from its files on first use: a classifier of baked labels, or one whose
    prompt embeddings are cached, never reads it."""

    def __init__(self, load: Callable[[], Tokenizer]):
        self._load: Callable[[], Tokenizer] | None = load
        self._tok: Tokenizer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer files were read."""
        return self._tok is not None

    def get(self) -> Tokenizer:
        """The tokenizer, read now if it was not yet."""
        with self._lock:
            if self._tok is None:
                assert self._load is not None
                self._tok, self._load = self._load(), None
            return self._tok

    @property
    def vocab_size(self) -> int:
        return self.get().vocab_size

    @property
    def context_length(self) -> int:
        return self.get().context_length

    def encode(self, text: str) -> list[int]:
        return self.get().encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.get().decode(ids)

    def __call__(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.get()(texts)


def load_baked(folder: Path, man: Manifest, *, verify: bool) -> BakedLabels | None:
    """The bundle's baked label set (checked, and with ``verify`` its sha256 too), or None when it has none."""
    if not man.baked_labels:
        return None
    name, sha = man.baked_labels["file"], man.baked_labels["sha256"]
    path = verify_file(folder, name, sha) if verify else bundle_file(folder, name, what="baked label set")
    if not path.is_file():
        raise CheckpointError(f"bundle file {name} is missing from {folder}: copy the whole bundle folder")
    fix = "rebake it (`lbedge bake`), or re-copy the bundle"
    return read_baked(path, embed_dim=man.embed_dim, fingerprint=man.text.get("fingerprint"), fix=fix)


def load_bundle(
    path: str | Path,
    *,
    backend: str = "auto",
    precision: str = "auto",
    text_precision: str = "auto",
    providers: list[str] | None = None,
    threads: int | None = None,
    batch_size: int = 8,
    verify: bool = True,
    cuda_graph: bool = False,
    text_from: str | Path | None = None,
    baked_labels: bool = True,
) -> Encoder:
    """Load a bundle as an :class:`Encoder` on ONNX Runtime or TensorRT; torch is never imported.

    ``precision`` picks the vision graph (``int8``, ``fp16``, ``fp32`` or ``auto``); ``verify`` checks every
    file's sha256 against the manifest. ``text_from``: a bundle or text bundle to take the text tower from
    (same fingerprint), for a label-baked bundle that carries none. The text graph is loaded on first use and
    the tokenizer read on first use; a bundle with baked labels and no text tower reads neither.
    ``baked_labels=False`` ignores the bundle's baked label set (to rebake it, or to compare it with the text
    tower).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"bundle folder not found: {folder}")
    man = Manifest.read(folder)
    if man.modality == "text" or "vision" not in man.towers:
        raise CheckpointError(f"{folder} is a text bundle (no vision tower): load the vision bundles that share it")
    baked = load_baked(folder, man, verify=verify) if baked_labels else None
    choices = {"vision": choose_tower(man, folder, "vision", backend, precision)}
    tok: LazyTokenizer | None = None
    if man.has_text_tower or text_from is not None:
        tfolder, tman = text_source(folder, man, text_from=text_from)
        choices["text"] = choose_tower(tman, tfolder, "text", backend, text_precision)
        family = man.text.get("family", "clip")
        check_tokenizer_files(tfolder, tman, family, verify=verify)
        length = int(man.text["context_length"])
        tok = LazyTokenizer(lambda: load_tokenizer(tfolder / "tokenizer", family=family, context_length=length))
    elif baked is None and not man.baked_labels:
        raise CheckpointError(
            f"bundle {folder} has no text tower, names no shared text bundle and has no baked labels, so it "
            f"cannot classify anything: {REBUILD}"
        )
    elif baked is None:
        raise CheckpointError(f"bundle {folder} has no text tower: load it with its baked labels, or give text_from=")
    # without a text tower text_precision names nothing: it is ignored, and any text call names the fix

    def backend_for(tower: str):
        where, wman = (tfolder, tman) if tower == "text" else (folder, man)
        choice = choices[tower]
        prec = choice.precision
        entry = wman.towers[tower][prec]
        graph = bundle_file(where, entry.file, what=f"{prec} {tower} graph")
        if verify:
            verify_file(where, entry.file, entry.sha256)
            for extra, sha in entry.extra_files.items():
                verify_file(where, extra, sha)
        if choice.backend == "tensorrt":
            from .backends.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(choice.engine, onnx_sha256=entry.sha256, cuda_graph=cuda_graph, verify=verify)
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        if not graph.is_file():  # missing, or a pipe or device that onnxruntime would block on
            raise CheckpointError(
                f"bundle file {entry.file} is missing from {where} or not a regular file: copy the whole bundle folder"
            )
        check_external_data(where, entry, graph, verify=verify)
        return OnnxRuntimeBackend(graph, providers=providers, threads=threads)

    return Encoder(
        modality=man.modality,
        preprocess_config=PreprocessConfig.from_dict(man.preprocess),
        vision=backend_for("vision"),
        text=(lambda: backend_for("text")) if tok is not None else None,
        tokenizer=tok,
        logit_scale=man.logit_scale,
        embed_dim=man.embed_dim,
        name=man.name or folder.name,
        text_fingerprint=man.text.get("fingerprint"),
        batch_size=batch_size,
        precision={t: c.precision for t, c in choices.items()},
        backends={t: c.backend for t, c in choices.items()},
        path=folder,
        baked=baked,
    )


def check_tokenizer_files(folder: Path, man: Manifest, family: str, *, verify: bool) -> None:
    """Check the tokenizer files the ``family`` tokenizer will read from ``folder/tokenizer``: inside the bundle
    and, with ``verify``, listed in the manifest with their sha256 and matching it (every listed file is
    verified)."""
    needed = TextConfig(family=family).tokenizer_files
    for name in needed:
        bundle_file(folder, f"tokenizer/{name}", what="tokenizer file")
    if not verify:
        return
    unlisted = [name for name in needed if name not in man.tokenizer]
    if unlisted:
        raise CheckpointError(
            f"bundle {folder} lists no sha256 for tokenizer file(s) {', '.join(unlisted)}, so "
            f"they cannot be verified: {REBUILD}"
        )
    for name, sha in man.tokenizer.items():
        verify_file(folder, f"tokenizer/{name}", sha)


def engine_manifests(folder: Path) -> list[EngineManifest]:
    """The manifests of the TensorRT engines compiled into the bundle ``folder``."""
    man = Manifest.read(folder)
    return [EngineManifest.load(bundle_file(folder, e["manifest"], what="engine manifest")) for e in man.engines]
