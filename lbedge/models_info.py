"""A human-readable description of a checkpoint folder (used by ``lbedge info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ModelConfig


def describe(folder: Path, cfg: ModelConfig, load: bool = False) -> dict[str, Any]:
    """Modality, tower sizes and weight file; with ``load``, parameters, logit scale and merged LoRA pairs."""
    from .models.weights import WEIGHT_FILES

    v, t = cfg.vision, cfg.text
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    out: dict[str, Any] = {
        "path": str(folder),
        "modality": cfg.modality,
        "vision": f"ViT width {v.hidden_size}, {v.num_hidden_layers} layers, {v.num_attention_heads} heads, "
        f"patch {v.patch_size}, grid {v.grid[0]}x{v.grid[1]}"
        + (f", {v.num_frames} frames" if v.num_frames > 1 else "")
        + (", temporal attention" if v.add_time_attn else "")
        + (f", 3D tube {v.tube_size}" if v.patch_3d else ""),
        "text": f"width {t.hidden_size}, {t.num_hidden_layers} layers, vocab {t.vocab_size}",
        "embed_dim": cfg.projection_dim,
        "input_shape": list(cfg.preprocess.input_shape),
        "lora": f"r={v.lora_r} alpha={v.lora_alpha:g} (merged at load)" if v.lora_r else "none (full weights)",
        "weights": f"{weights.name} ({weights.stat().st_size / 1e6:.1f} MB)" if weights else "MISSING",
    }
    if load:
        from .checkpoint import load_model

        model = load_model(folder)
        out["parameters"] = sum(p.numel() for p in model.parameters())
        out["logit_scale"] = round(float(model.logit_scale.exp()), 4)
        out["lora_pairs_merged"] = model.lora_pairs_merged
    return out
