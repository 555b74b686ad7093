"""Start a tower of one modality from a checkpoint of another (a new modality starts from the image tower)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lbedge.config import ModelConfig
from lbedge.models.towers import LanguageBindModel, resize_position_embedding

MODALITY_FIELDS: dict[str, dict[str, Any]] = {
    "image": {},
    "thermal": {},
    "depth": {"max_depth": 10},
    "audio": {
        "num_mel_bins": 112,
        "target_length": 1036,
        "audio_sample_rate": 16000,
        "audio_mean": -4.2677393,
        "audio_std": 4.5689974,
    },
    "video": {"add_time_attn": True, "num_frames": 8},
}


def convert_modality(
    model: LanguageBindModel, modality: str, fields: dict[str, Any] | None = None
) -> LanguageBindModel:
    """A model of ``modality`` initialised from ``model``: same weights; the audio position table resized
    bicubically to the mel grid (as LanguageBind does); video temporal layers added as an identity (zero
    temporal embedding and zero temporal-attention output), so training starts from the image tower.

    ``fields`` override the modality's ``vision_config`` entries (e.g. ``num_mel_bins`` and ``target_length``
    of a smaller audio input); the defaults are LanguageBind's."""
    if model.config.modality == modality:
        return model
    raw = model.config.to_dict()
    raw["architectures"] = ["LanguageBind" + modality.capitalize()]
    raw["model_type"] = raw["architectures"][0]
    vc = raw["vision_config"]
    for extra in (
        "num_mel_bins",
        "target_length",
        "audio_sample_rate",
        "audio_mean",
        "audio_std",
        "max_depth",
        "add_time_attn",
        "num_frames",
        "clip_type",
        "tube_size",
    ):
        vc.pop(extra, None)
    vc.update(MODALITY_FIELDS[modality])
    vc.update(fields or {})
    vc["lora_r"] = 0
    cfg = ModelConfig.from_dict(raw)
    new = LanguageBindModel(cfg)
    sd = model.state_dict()
    pos_key = "vision_model.embeddings.position_embedding.weight"
    if sd[pos_key].shape[0] != cfg.vision.num_positions:
        sd[pos_key] = resize_position_embedding(sd[pos_key], cfg.vision.grid)
    missing, unexpected = new.load_state_dict(sd, strict=False)
    if unexpected or any("temporal" not in k for k in missing):
        raise ValueError(
            f"cannot start a {modality} tower from a {model.config.modality} one: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    with torch.no_grad():
        for layer in new.vision_model.encoder.layers:
            if layer.frames:
                layer.temporal_embedding.zero_()
                layer.temporal_attn.out_proj.weight.zero_()
                layer.temporal_attn.out_proj.bias.zero_()
                layer.temporal_layer_norm1.load_state_dict(layer.layer_norm1.state_dict())
    return new.eval()


def with_lora_config(cfg: ModelConfig, r: int, alpha: float) -> ModelConfig:
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, lora_r=r, lora_alpha=alpha))
