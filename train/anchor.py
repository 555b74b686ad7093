"""A new LanguageBind model around a frozen, pretrained language anchor: a BERT sentence encoder (such as
all-MiniLM-L6-v2) as the text tower, an untrained vision tower projecting into its embedding space.

This is how a model is bound from scratch when no CLIP weights exist (lbedge's embedded default, lb-mini):
the text tower and an identity text projection keep the sentence encoder's own embedding space; only the
vision side learns.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lbedge.checkpoint import write_checkpoint
from lbedge.config import ModelConfig, PreprocessConfig, VisionConfig
from lbedge.errors import CheckpointError
from lbedge.models.bert import attach_sentence_encoder, read_bert_folder
from lbedge.models.towers import LanguageBindModel


def anchored_model(
    text_folder: str | Path,
    modality: str,
    vision: VisionConfig,
    preprocess: PreprocessConfig,
    *,
    seed: int = 0,
    logit_scale: float = 2.6592,
) -> LanguageBindModel:
    """A model whose text tower is the sentence encoder in ``text_folder`` (identity projection) and whose
    vision tower (``vision``) starts from a seeded random initialisation."""
    rows, cols = (n // vision.patch_size for n in preprocess.input_shape[-2:])
    if tuple(vision.grid) != (rows, cols):
        raise CheckpointError(
            f"vision grid {vision.grid} does not fit the preprocessed input "
            f"{preprocess.input_shape} with patch {vision.patch_size}: use grid=({rows}, {cols})"
        )
    text_cfg, text_state = read_bert_folder(text_folder)
    cfg = ModelConfig(
        modality=modality,
        vision=vision,
        text=text_cfg,
        projection_dim=text_cfg.hidden_size,
        logit_scale_init=logit_scale,
        preprocess=preprocess,
    )
    torch.manual_seed(seed)
    model = LanguageBindModel(cfg)
    attach_sentence_encoder(model, text_state, text_folder)
    return model


def save_anchored(model: LanguageBindModel, folder: str | Path, text_folder: str | Path) -> Path:
    """Write an anchored model as a checkpoint folder (config.json, model.safetensors, tokenizer.json)."""
    return write_checkpoint(model.state_dict(), model.config, folder, tokenizer_dir=text_folder)
