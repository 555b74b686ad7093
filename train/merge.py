"""``lbedge train merge``: fold a run's LoRA into plain weights, save in the official layout, check agreement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lbedge.checkpoint import load_model, save_pretrained
from lbedge.config import ModelConfig
from lbedge.errors import CheckpointError, LBEdgeError
from lbedge.models.towers import LanguageBindModel

from .modality import with_lora_config


class MergeMismatch(LBEdgeError):
    """The merged weights do not reproduce the LoRA model's outputs."""


@dataclass
class MergeReport:
    output: Path
    lora_pairs: int
    min_cosine: float
    max_abs_diff: float


def unmerged_model(checkpoint: Path) -> LanguageBindModel:
    """The peft-wrapped model of a LoRA checkpoint, weights loaded as stored (LoRA not merged)."""
    from safetensors.torch import load_file

    from .bind import wrap_lora

    cfg = ModelConfig.from_json(checkpoint)
    if not cfg.vision.lora_r:
        raise CheckpointError(f"{checkpoint} has no LoRA (lora_r = 0): nothing to merge")
    base = LanguageBindModel(with_lora_config(cfg, 0, cfg.vision.lora_alpha))
    sd = load_file(str(checkpoint / "model.safetensors"))
    targets = sorted({k.split(".lora_A")[0].rsplit(".", 1)[-1] for k in sd if ".lora_A" in k})
    model = wrap_lora(base, cfg.vision.lora_r, cfg.vision.lora_alpha, 0.0, targets)  # video: temporal_attn.*
    model.load_state_dict(sd, strict=True)
    return model.eval()


def merge(
    run: str | Path, output: str | Path, *, probe: np.ndarray | None = None, min_cosine: float = 0.9999
) -> MergeReport:
    """Merge ``run`` (a run folder or its ``last/`` checkpoint) into plain weights at ``output``."""
    src = Path(run)
    if (src / "last").is_dir():
        src = src / "last"
    merged = load_model(src)  # LoRA folded in: W + alpha/r * B @ A
    out = save_pretrained(merged, output, tokenizer_dir=src)
    lora = unmerged_model(src)
    shape = merged.config.preprocess.input_shape
    x = (
        torch.from_numpy(probe)
        if probe is not None
        else torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    )
    with torch.no_grad():
        a = lora.encode_vision(x)
        b = load_model(out).encode_vision(x)
    cos = float(torch.nn.functional.cosine_similarity(a, b).min())
    diff = float((a - b).abs().max())
    if cos < min_cosine:
        raise MergeMismatch(f"merged weights disagree with the LoRA model: min cosine {cos:.6f} < {min_cosine}")
    return MergeReport(Path(out), merged.lora_pairs_merged, cos, diff)
