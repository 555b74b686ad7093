"""Build bundles: export (FP32), then add FP16 and calibrated INT8 graphs, each validated against FP32.

The steps are separate so the CLI can run them one at a time (``lbedge export``, ``lbedge quantize``) or
together (``lbedge build``). Agreement is measured against the bundle's own FP32 graph on held-out
inputs: embedding cosine and zero-shot top-1 agreement over a set of probe labels.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lbedge import __version__
from lbedge.bundle import Manifest, TowerFile, text_source
from lbedge.config import PreprocessConfig
from lbedge.engine import sha256_file
from lbedge.errors import CheckpointError, InputError
from lbedge.paths import text_bundle_problem
from lbedge.preprocess import Preprocessor
from lbedge.progress import stage
from lbedge.schema import read_json
from lbedge.tokenizer import copy_tokenizer_files
from lbedge.zeroshot import PROBE_LABELS, PROBE_TEMPLATE, fill

from . import onnx_utils
from .calibration import InputSet, load_inputs
from .export import ExportConfig, export_tower, ort_outputs
from .fp16 import convert_fp16
from .int8 import Int8Config, quantize_int8, resolved_method

log = logging.getLogger(__name__)


def _tower_entry(folder: Path, files: list[Path], **kw: Any) -> TowerFile:
    main, extra = files[0], files[1:]
    return TowerFile(
        file=main.name, sha256=sha256_file(main), extra_files={f.name: sha256_file(f) for f in extra}, **kw
    )


def _probe_ids(folder: Path, man: Manifest, labels: Sequence[str]) -> tuple[np.ndarray, bool]:
    """int32 token ids of the probe prompts, clamped to the text tower's vocabulary, and whether none needed it."""
    from lbedge.tokenizer import load_tokenizer

    folder, man = text_source(folder, man)
    tok = load_tokenizer(
        folder / "tokenizer", family=man.text.get("family", "clip"), context_length=int(man.text["context_length"])
    )
    ids, _ = tok([fill(PROBE_TEMPLATE, label) for label in labels])
    vocab = int(man.text["vocab_size"])
    return np.minimum(ids, vocab - 1).astype(np.int32), bool(ids.max() < vocab)


def _probe_text(folder: Path, man: Manifest, labels: Sequence[str]) -> np.ndarray:
    """Probe-label text embeddings from the bundle's FP32 text graph (none for towers without a real vocabulary);
    for a label-baked bundle without a text tower, its baked label embeddings."""
    if not man.has_text_tower:
        from lbedge.bundle import load_baked

        baked = load_baked(folder, man, verify=True)
        return baked.embeddings if baked is not None else np.zeros((0, man.embed_dim), np.float32)
    ids, real = _probe_ids(folder, man, labels)
    if not real:
        return np.zeros((0, man.embed_dim), np.float32)  # tiny test towers: no real vocabulary
    tfolder, tman = text_source(folder, man)
    return ort_outputs(tfolder / tman.towers["text"]["fp32"].file, ids)


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    inputs: np.ndarray | None = None,
    config: ExportConfig | None = None,
    text_bundle: str | Path | None = None,
) -> tuple[Manifest, dict[str, Any]]:
    """Export a checkpoint's vision and text towers to an FP32 bundle at ``out``.

    ``text_bundle``: a shared text bundle (see :func:`build_text_bundle`) holding this checkpoint's text tower;
    only the vision tower is exported and the manifest names that bundle (the fingerprints must match)."""
    from lbedge.checkpoint import load_model, text_fingerprint
    from lbedge.models.weights import find_weights

    ckpt = Path(checkpoint)
    model = load_model(ckpt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = text_fingerprint(model)
    shared = ""
    if text_bundle is not None:
        import os

        tman = Manifest.read(Path(text_bundle))
        if tman.text.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{text_bundle} holds another text tower than {ckpt}: its fingerprint differs")
        shared = os.path.relpath(Path(text_bundle).resolve(), out.resolve())
        problem = text_bundle_problem(shared)
        if problem:
            raise InputError(
                f"the text bundle {text_bundle} cannot be shared with {out}: {problem}; put it beside "
                "the vision bundle (or at most two folders up)"
            )
    tok_sha = {} if shared else copy_tokenizer_files(ckpt, out / "tokenizer", model.config.text.tokenizer_files)
    cfg = config or ExportConfig()
    reports = {}
    towers = {}
    for tower in ("vision",) if shared else ("vision", "text"):
        x = inputs if (tower == "vision" and inputs is not None) else None
        stage("exporting the %s tower of %s to ONNX and checking it against PyTorch", tower, ckpt.name)
        rep = export_tower(model, tower, out / f"{tower}.fp32.onnx", inputs=x, config=cfg)
        reports[tower] = rep.to_dict()
        towers[tower] = {
            "fp32": _tower_entry(
                out,
                rep.files,
                agreement=rep.agreement.to_dict(),
                details={"export": rep.to_dict()},
                inputs={
                    "pixel_values" if tower == "vision" else "input_ids": [
                        "batch",
                        *(
                            model.config.preprocess.input_shape
                            if tower == "vision"
                            else (model.config.text.max_length,)
                        ),
                    ]
                },
            )
        }
    weights = find_weights(ckpt)
    man = Manifest(
        modality=model.config.modality,
        embed_dim=model.config.projection_dim,
        logit_scale=float(model.logit_scale.exp()),
        preprocess=model.config.preprocess.to_dict(),
        text={
            "family": model.config.text.family,
            "context_length": model.config.text.max_length,
            "vocab_size": model.config.text.vocab_size,
            "fingerprint": fingerprint,
        },
        tokenizer=tok_sha,
        towers=towers,
        name=ckpt.name,
        lbedge_version=__version__,
        text_bundle=shared,
        provenance={
            "source": str(ckpt.resolve()),
            "source_weights": weights.name,
            "source_sha256": sha256_file(weights) if weights.is_file() else None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "opset": cfg.opset,
        },
    )
    man.write(out)
    return man, reports


def _reference(folder: Path, man: Manifest, tower: str, x: np.ndarray) -> np.ndarray:
    return ort_outputs(folder / man.towers[tower]["fp32"].file, x)


def add_fp16(
    folder: str | Path,
    *,
    inputs: np.ndarray | None = None,
    towers: Sequence[str] = ("vision", "text"),
    labels: Sequence[str] = PROBE_LABELS,
) -> Manifest:
    """Add FP16 graphs of ``towers`` to a bundle, with their agreement to FP32."""
    folder = Path(folder)
    man = Manifest.read(folder)
    text_e = _probe_text(folder, man, labels)
    for tower in [t for t in towers if t in man.towers]:
        stage("converting the %s tower to FP16", tower)
        files = convert_fp16(folder / man.towers[tower]["fp32"].file, folder / f"{tower}.fp16.onnx")
        if tower == "vision":
            x = inputs if inputs is not None else dummy_vision(man)
        else:
            x = _probe_ids(folder, man, labels)[0]
        agree = onnx_utils.agreement(
            _reference(folder, man, tower, x),
            ort_outputs(files[0], x),
            text_e if tower == "vision" and len(text_e) else None,
        )
        man.towers[tower]["fp16"] = _tower_entry(
            folder,
            files,
            agreement=agree.to_dict(),
            inputs=man.towers[tower]["fp32"].inputs,
            details={"kept_fp32": "LayerNorm, Softmax, reductions"},
        )
    man.write(folder)
    return man


def dummy_vision(man: Manifest, n: int = 4) -> np.ndarray:
    shape = PreprocessConfig.from_dict(man.preprocess).input_shape
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


def add_int8(
    folder: str | Path,
    calib: InputSet,
    *,
    holdout: InputSet | None = None,
    config: Int8Config | None = None,
    labels: Sequence[str] = PROBE_LABELS,
) -> Manifest:
    """Add a calibrated INT8 (QDQ) vision graph to a bundle, with its agreement to FP32 on held-out inputs."""
    folder = Path(folder)
    man = Manifest.read(folder)
    if holdout is None:
        calib, holdout = calib.split()
    text_e = _probe_text(folder, man, labels)
    ref = _reference(folder, man, "vision", holdout.arrays)
    dst = folder / "vision.int8.onnx"
    stage(
        "quantizing the vision tower to INT8 (%s target, %d calibration and %d held-out inputs)",
        (config or Int8Config()).target,
        len(calib.files),
        len(holdout.files),
    )
    report = quantize_int8(
        folder / man.towers["vision"]["fp32"].file,
        dst,
        calib.arrays,
        holdout=holdout.arrays,
        reference=ref,
        text_embeds=text_e if len(text_e) else None,
        config=config,
    )
    files = onnx_utils.model_files(dst)
    man.towers["vision"]["int8"] = _tower_entry(
        folder,
        files,
        agreement=report.agreement.to_dict() if report.agreement else None,
        inputs=man.towers["vision"]["fp32"].inputs,
        details={
            "int8": report.to_dict(),
            "calibration_files": len(calib.files),
            "holdout_files": len(holdout.files),
            "quantizer": "onnxruntime.quantization."
            + ("quantize_dynamic" if report.method == "dynamic" else "quantize_static QDQ"),
        },
    )
    man.provenance["calibration_sha256"] = calib.sha256
    man.provenance["calibration_skipped"] = [f"{p}: {why}" for p, why in calib.skipped]
    if report.target == "cpu" and "text" in man.towers:
        _add_text_int8(folder, man, labels)
    man.write(folder)
    return man


def _add_text_int8(folder: Path, man: Manifest, labels: Sequence[str]) -> None:
    """For ONNX Runtime bundles: an INT8 text graph too, when it agrees with FP32 (cosine >= 0.999)."""
    from .int8 import quantize_text_int8

    ids = _probe_ids(folder, man, [*labels, "person walking a dog on a street at night", "an empty room"])[0]
    kept, agree, ops = quantize_text_int8(folder / man.towers["text"]["fp32"].file, folder / "text.int8.onnx", ids)
    man.towers["text"].pop("int8", None)
    if kept:
        man.towers["text"]["int8"] = _tower_entry(
            folder,
            onnx_utils.model_files(folder / "text.int8.onnx"),
            agreement=agree.to_dict(),
            inputs=man.towers["text"]["fp32"].inputs,
            details={
                "int8": {"target": "cpu", "method": "dynamic", "op_types": list(ops)},
                "quantizer": f"onnxruntime.quantization.quantize_dynamic ({', '.join(ops)})",
            },
        )
    else:
        man.provenance["text_int8_skipped"] = (
            f"INT8 text graph not kept: worst cosine to FP32 {agree.min_cosine:.4f} < 0.999 on the probe prompts"
        )


def _copy_tower_files(src: Path, dst: Path, entry: TowerFile) -> None:
    for name in (entry.file, *entry.extra_files):
        shutil.copyfile(src / name, dst / name)


def _text_manifest(man: Manifest, **provenance: Any) -> Manifest:
    return Manifest(
        modality="text",
        embed_dim=man.embed_dim,
        logit_scale=man.logit_scale,
        preprocess={},
        text=dict(man.text),
        tokenizer=dict(man.tokenizer),
        towers={"text": {}},
        name=f"text-{man.text.get('family', 'clip')}",
        lbedge_version=__version__,
        provenance={"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **provenance},
    )


def share_text(
    bundles: Sequence[str | Path], text_dir: str | Path, *, precisions: Sequence[str] | None = None
) -> Manifest:
    """Move the text tower of ``bundles`` (bound to one language tower) into one shared text bundle.

    The first bundle's text graphs (``precisions``; default all) and tokenizer go to ``text_dir`` (or an
    existing text bundle there is reused when its fingerprint matches); every bundle then loses its own copy and
    names ``text_dir`` in ``text_bundle`` (relative path). Bundles bound to another text tower are refused.
    """
    import os

    text_dir = Path(text_dir)
    mans = [(Path(b), Manifest.read(Path(b))) for b in bundles]
    if not mans:
        raise InputError("share_text needs at least one bundle")
    prints = {m.text.get("fingerprint") for _, m in mans}
    if (text_dir / "manifest.json").is_file():
        tman = Manifest.read(text_dir)
        prints.add(tman.text.get("fingerprint"))
    else:
        tman = None
    if len(prints) != 1 or None in prints:
        raise InputError(
            f"these bundles are bound to different text towers ({len(prints)} fingerprints): only "
            f"bundles of one language tower can share it"
        )
    if tman is None:
        src, man = next(((f, m) for f, m in mans if "text" in m.towers), (None, None))
        if src is None or man is None:
            raise InputError(f"no text tower to share: none of the bundles carries one and {text_dir} is empty")
        copy_tokenizer_files(src / "tokenizer", text_dir / "tokenizer", man.tokenizer)
        tman = _text_manifest(man, source=src.name)
        for prec, entry in man.towers["text"].items():
            if precisions is None or prec in precisions:
                _copy_tower_files(src, text_dir, entry)
                tman.towers["text"][prec] = entry
        tman.write(text_dir)
    for folder, man in mans:
        for entry in man.towers.pop("text", {}).values():
            for name in (entry.file, *entry.extra_files):
                (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / "tokenizer", ignore_errors=True)
        man.tokenizer = {}
        man.text_bundle = os.path.relpath(text_dir.resolve(), folder.resolve())
        problem = text_bundle_problem(man.text_bundle)
        if problem:
            raise InputError(f"{text_dir} cannot be shared with {folder}: {problem}")
        man.write(folder)
    return tman


def build_text_bundle(
    source: str | Path, out: str | Path, *, int8: bool = True, config: ExportConfig | None = None
) -> Manifest:
    """A text bundle (FP32 text graph, plus INT8 when it agrees with FP32 to cosine 0.999) from ``source``: a
    LanguageBind checkpoint folder, or a BERT sentence-encoder folder (config.json, model.safetensors,
    tokenizer.json) used as a frozen language anchor, with the identity projection lb-mini is trained against.
    """
    from lbedge.checkpoint import text_fingerprint

    source, out = Path(source), Path(out)
    model, tok_files = _text_model(source)
    out.mkdir(parents=True, exist_ok=True)
    tok_sha = copy_tokenizer_files(source, out / "tokenizer", tok_files)
    rep = export_tower(model, "text", out / "text.fp32.onnx", config=config or ExportConfig())
    cfg = model.config
    base = Manifest(
        modality="text",
        embed_dim=cfg.projection_dim,
        logit_scale=float(model.logit_scale.exp().item()),
        preprocess={},
        text={
            "family": cfg.text.family,
            "context_length": cfg.text.max_length,
            "vocab_size": cfg.text.vocab_size,
            "fingerprint": text_fingerprint(model),
        },
        tokenizer=tok_sha,
        towers={},
    )
    man = _text_manifest(base, source=source.name, opset=(config or ExportConfig()).opset)
    man.towers["text"]["fp32"] = _tower_entry(
        out,
        rep.files,
        agreement=rep.agreement.to_dict(),
        details={"export": rep.to_dict()},
        inputs={"input_ids": ["batch", cfg.text.max_length]},
    )
    man.write(out)
    if int8:
        _add_text_int8(out, man, PROBE_LABELS)
        man.write(out)
    return man


def _text_model(source: Path) -> tuple[Any, tuple[str, ...]]:
    """A torch model whose text side is ``source``'s (a checkpoint, or a BERT folder with identity projection)."""

    from lbedge.checkpoint import load_model
    from lbedge.config import ModelConfig, VisionConfig
    from lbedge.models.bert import attach_sentence_encoder, read_bert_folder
    from lbedge.models.towers import LanguageBindModel

    raw = read_json(source / "config.json", "config.json", "point at a checkpoint or sentence-encoder folder")
    if raw.get("model_type") != "bert":
        model = load_model(source)
        return model, tuple(model.config.text.tokenizer_files)
    text_cfg, state = read_bert_folder(source)
    vision = VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        patch_size=16,
        image_size=32,
        grid=(2, 2),
    )
    cfg = ModelConfig(
        modality="image",
        vision=vision,
        text=text_cfg,
        projection_dim=text_cfg.hidden_size,
        preprocess=PreprocessConfig("image", size=32),
    )
    model = LanguageBindModel(cfg)
    attach_sentence_encoder(model, state, source)
    return model.eval(), tuple(text_cfg.tokenizer_files)


def int8_inputs(config: Int8Config, calib: InputSet | None, val: InputSet | None) -> InputSet:
    """The calibration set INT8 quantization with ``config`` needs: ``calib`` (required by the calibrated
    methods), or none at all for dynamic quantization when held-out inputs (``val``) are given."""
    if calib is not None:
        return calib
    if resolved_method(config) != "dynamic":
        raise InputError(
            f"INT8 ({resolved_method(config)} calibration, {config.target} target) needs real calibration inputs: "
            "pass --calib DIR (images, frames, audio or videos)"
        )
    if val is None:
        raise InputError(
            "dynamic INT8 calibrates nothing, but its agreement with FP32 is checked on real held-out inputs: "
            "pass --val DIR (or --calib DIR, of which one in four files is held out)"
        )
    return InputSet(np.zeros((0, *val.arrays.shape[1:]), dtype=val.arrays.dtype), [], [], "")


def build_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    calib: Sequence[str | Path] = (),
    val: Sequence[str | Path] = (),
    calib_limit: int | None = 256,
    export_config: ExportConfig | None = None,
    int8_config: Int8Config | None = None,
    labels: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    drop_text: bool = False,
) -> Manifest:
    """Export, FP16 and INT8 in one go (``lbedge build``); with ``labels``, then bake their text embeddings into
    the bundle (``templates``, ``drop_text``: see :func:`lbedge.bake.bake_bundle`)."""
    from lbedge.config import ModelConfig
    from lbedge.zeroshot import check_labels, check_templates

    if labels is None and (templates is not None or drop_text):
        raise InputError("templates and drop_text bake labels: give the labels too")
    if labels is not None:  # checked before the long work, not after it
        labels = check_labels(labels)
        templates = check_templates(templates) if templates is not None else None

    bad = set(precisions) - {"fp32", "fp16", "int8"}
    if bad:
        raise InputError(f"unknown precision(s) {sorted(bad)}: choose fp32, fp16, int8")
    pre = Preprocessor(ModelConfig.from_json(checkpoint).preprocess)
    calib_set = load_inputs(calib, pre, limit=calib_limit) if calib else None
    val_set = load_inputs(val, pre) if val else None
    if "int8" in precisions:
        calib_set = int8_inputs(int8_config or Int8Config(), calib_set, val_set)
    if calib_set is not None and val_set is None:
        calib_set, val_set = calib_set.split()
    man, _ = export_bundle(checkpoint, out, inputs=val_set.arrays[:8] if val_set else None, config=export_config)
    if "fp16" in precisions:
        man = add_fp16(out, inputs=val_set.arrays if val_set else None)
    if "int8" in precisions:
        man = add_int8(out, calib_set, holdout=val_set, config=int8_config)
    if labels is not None:
        from lbedge.bake import bake_bundle

        man = bake_bundle(out, labels, templates, drop_text=drop_text)
    return man


def summary(man: Manifest) -> list[dict[str, Any]]:
    """One row per tower and precision: file, size and agreement with FP32."""
    rows = []
    for tower, by_p in man.towers.items():
        for prec, tf in by_p.items():
            a = tf.agreement or {}
            rows.append(
                {
                    "tower": tower,
                    "precision": prec,
                    "file": tf.file,
                    "min_cosine": a.get("min_cosine"),
                    "top1_agreement": a.get("top1_agreement"),
                }
            )
    return rows


__all__ = [
    "PROBE_LABELS",
    "add_fp16",
    "add_int8",
    "build_bundle",
    "build_text_bundle",
    "export_bundle",
    "share_text",
    "summary",
]
