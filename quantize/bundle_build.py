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
from lbedge.bundle import Manifest, TowerFile
from lbedge.engine import sha256_file
from lbedge.errors import CheckpointError, InputError
from lbedge.zeroshot import PROBE_LABELS
from lbedge.preprocess import Preprocessor
from lbedge.config import PreprocessConfig

from . import onnx_utils
from .calibration import InputSet, load_inputs
from .export import ExportConfig, export_tower, ort_outputs
from .fp16 import convert_fp16
from .int8 import Int8Config, quantize_int8

log = logging.getLogger(__name__)



def _tower_entry(folder: Path, files: list[Path], **kw: Any) -> TowerFile:
    main, extra = files[0], files[1:]
    return TowerFile(file=main.name, sha256=sha256_file(main),
                     extra_files={f.name: sha256_file(f) for f in extra}, **kw)


def _probe_ids(folder: Path, man: Manifest, labels: Sequence[str]) -> tuple[np.ndarray, bool]:
    """int32 token ids of the probe prompts, clamped to the text tower's vocabulary, and whether none needed it."""
    from lbedge.tokenizer import load_tokenizer

    tok = load_tokenizer(folder / "tokenizer", family=man.text.get("family", "clip"),
                         context_length=int(man.text["context_length"]))
    ids, _ = tok([f"a photo of a {l}." for l in labels])
    vocab = int(man.text["vocab_size"])
    return np.minimum(ids, vocab - 1).astype(np.int32), bool(ids.max() < vocab)


def _probe_text(folder: Path, man: Manifest, labels: Sequence[str]) -> np.ndarray:
    """Probe-label text embeddings from the bundle's FP32 text graph (none for towers without a real vocabulary)."""
    ids, real = _probe_ids(folder, man, labels)
    if not real:
        return np.zeros((0, man.embed_dim), np.float32)        # tiny test towers: no real vocabulary
    return ort_outputs(folder / man.towers["text"]["fp32"].file, ids)


def export_bundle(checkpoint: str | Path, out: str | Path, *, inputs: np.ndarray | None = None,
                  config: ExportConfig | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Export a checkpoint's vision and text towers to an FP32 bundle at ``out``."""
    from lbedge.checkpoint import load_model, text_fingerprint
    from lbedge.models.weights import find_weights

    ckpt = Path(checkpoint)
    model = load_model(ckpt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer").mkdir(exist_ok=True)
    tok_sha = {}
    for name in model.config.text.tokenizer_files:
        src = ckpt / name
        if not src.is_file():
            raise CheckpointError(f"tokenizer file {name} missing in {ckpt}: a bundle must be self-contained")
        shutil.copyfile(src, out / "tokenizer" / name)
        tok_sha[name] = sha256_file(out / "tokenizer" / name)
    cfg = config or ExportConfig()
    reports = {}
    towers = {}
    for tower in ("vision", "text"):
        x = inputs if (tower == "vision" and inputs is not None) else None
        rep = export_tower(model, tower, out / f"{tower}.fp32.onnx", inputs=x, config=cfg)
        reports[tower] = rep.to_dict()
        towers[tower] = {"fp32": _tower_entry(out, rep.files, agreement=rep.agreement.to_dict(),
                                              details={"export": rep.to_dict()},
                                              inputs={"pixel_values" if tower == "vision" else "input_ids":
                                                      ["batch", *(model.config.preprocess.input_shape if tower ==
                                                                  "vision" else (model.config.text.max_length,))]})}
    weights = find_weights(ckpt)
    man = Manifest(
        modality=model.config.modality, embed_dim=model.config.projection_dim,
        logit_scale=float(model.logit_scale.exp()), preprocess=model.config.preprocess.to_dict(),
        text={"family": model.config.text.family, "context_length": model.config.text.max_length,
              "vocab_size": model.config.text.vocab_size,
              "fingerprint": text_fingerprint(model)},
        tokenizer=tok_sha, towers=towers, name=ckpt.name, lbedge_version=__version__,
        provenance={"source": str(ckpt.resolve()), "source_weights": weights.name,
                    "source_sha256": sha256_file(weights) if weights.is_file() else None,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "opset": cfg.opset})
    man.write(out)
    return man, reports


def _reference(folder: Path, man: Manifest, tower: str, x: np.ndarray) -> np.ndarray:
    return ort_outputs(folder / man.towers[tower]["fp32"].file, x)


def add_fp16(folder: str | Path, *, inputs: np.ndarray | None = None, towers: Sequence[str] = ("vision", "text"),
             labels: Sequence[str] = PROBE_LABELS) -> Manifest:
    """Add FP16 graphs of ``towers`` to a bundle, with their agreement to FP32."""
    folder = Path(folder)
    man = Manifest.read(folder)
    text_e = _probe_text(folder, man, labels)
    for tower in towers:
        files = convert_fp16(folder / man.towers[tower]["fp32"].file, folder / f"{tower}.fp16.onnx")
        if tower == "vision":
            x = inputs if inputs is not None else dummy_vision(man)
        else:
            x = _probe_ids(folder, man, labels)[0]
        agree = onnx_utils.agreement(_reference(folder, man, tower, x), ort_outputs(files[0], x),
                                     text_e if tower == "vision" and len(text_e) else None)
        man.towers[tower]["fp16"] = _tower_entry(folder, files, agreement=agree.to_dict(),
                                                 inputs=man.towers[tower]["fp32"].inputs,
                                                 details={"kept_fp32": "LayerNorm, Softmax, reductions"})
    man.write(folder)
    return man


def dummy_vision(man: Manifest, n: int = 4) -> np.ndarray:
    shape = PreprocessConfig.from_dict(man.preprocess).input_shape
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


def add_int8(folder: str | Path, calib: InputSet, *, holdout: InputSet | None = None,
             config: Int8Config | None = None, labels: Sequence[str] = PROBE_LABELS) -> Manifest:
    """Add a calibrated INT8 (QDQ) vision graph to a bundle, with its agreement to FP32 on held-out inputs."""
    folder = Path(folder)
    man = Manifest.read(folder)
    if holdout is None:
        calib, holdout = calib.split()
    text_e = _probe_text(folder, man, labels)
    ref = _reference(folder, man, "vision", holdout.arrays)
    dst = folder / "vision.int8.onnx"
    report = quantize_int8(folder / man.towers["vision"]["fp32"].file, dst, calib.arrays, holdout=holdout.arrays,
                           reference=ref, text_embeds=text_e if len(text_e) else None, config=config)
    files = onnx_utils.model_files(dst)
    man.towers["vision"]["int8"] = _tower_entry(
        folder, files, agreement=report.agreement.to_dict() if report.agreement else None,
        inputs=man.towers["vision"]["fp32"].inputs,
        details={"int8": report.to_dict(), "calibration_files": len(calib.files),
                 "holdout_files": len(holdout.files),
                 "quantizer": "onnxruntime.quantization." + ("quantize_dynamic" if report.method == "dynamic"
                                                             else "quantize_static QDQ")})
    man.provenance["calibration_sha256"] = calib.sha256
    man.provenance["calibration_skipped"] = [f"{p}: {why}" for p, why in calib.skipped]
    if report.target == "cpu":
        _add_text_int8(folder, man, labels)
    man.write(folder)
    return man


def _add_text_int8(folder: Path, man: Manifest, labels: Sequence[str]) -> None:
    """For ONNX Runtime bundles: an INT8 text graph too, when it agrees with FP32 (cosine >= 0.999)."""
    from .int8 import quantize_text_int8

    ids = _probe_ids(folder, man, [*labels, "person walking a dog on a street at night", "an empty room"])[0]
    kept, agree = quantize_text_int8(folder / man.towers["text"]["fp32"].file, folder / "text.int8.onnx", ids)
    man.towers["text"].pop("int8", None)
    if kept:
        man.towers["text"]["int8"] = _tower_entry(
            folder, onnx_utils.model_files(folder / "text.int8.onnx"), agreement=agree.to_dict(),
            inputs=man.towers["text"]["fp32"].inputs,
            details={"int8": {"target": "cpu", "method": "dynamic"},
                     "quantizer": "onnxruntime.quantization.quantize_dynamic (MatMul, Gather)"})
    else:
        man.provenance["text_int8_skipped"] = (f"INT8 text graph not kept: worst cosine to FP32 "
                                               f"{agree.min_cosine:.4f} < 0.999 on the probe prompts")


def build_bundle(checkpoint: str | Path, out: str | Path, *, precisions: Sequence[str] = ("fp32", "fp16", "int8"),
                 calib: Sequence[str | Path] = (), val: Sequence[str | Path] = (), calib_limit: int | None = 256,
                 export_config: ExportConfig | None = None, int8_config: Int8Config | None = None) -> Manifest:
    """Export, FP16 and INT8 in one go (``lbedge build``)."""
    from lbedge.config import ModelConfig

    bad = set(precisions) - {"fp32", "fp16", "int8"}
    if bad:
        raise InputError(f"unknown precision(s) {sorted(bad)}: choose fp32, fp16, int8")
    pre = Preprocessor(ModelConfig.from_json(checkpoint).preprocess)
    calib_set = load_inputs(calib, pre, limit=calib_limit) if calib else None
    if "int8" in precisions and calib_set is None:
        raise InputError("INT8 needs real calibration inputs: pass --calib DIR (images, frames, audio or videos)")
    val_set = load_inputs(val, pre) if val else None
    if calib_set is not None and val_set is None:
        calib_set, val_set = calib_set.split()
    man, _ = export_bundle(checkpoint, out, inputs=val_set.arrays[:8] if val_set else None, config=export_config)
    if "fp16" in precisions:
        man = add_fp16(out, inputs=val_set.arrays if val_set else None)
    if "int8" in precisions:
        man = add_int8(out, calib_set, holdout=val_set, config=int8_config)
    return man


def summary(man: Manifest) -> list[dict[str, Any]]:
    """One row per tower and precision: file, size and agreement with FP32."""
    rows = []
    for tower, by_p in man.towers.items():
        for prec, tf in by_p.items():
            a = tf.agreement or {}
            rows.append({"tower": tower, "precision": prec, "file": tf.file,
                         "min_cosine": a.get("min_cosine"), "top1_agreement": a.get("top1_agreement")})
    return rows


__all__ = ["PROBE_LABELS", "add_fp16", "add_int8", "build_bundle", "export_bundle", "summary"]
