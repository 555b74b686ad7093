"""The LanguageBind towers (torch): one ViT for every vision modality, and the CLIP text transformer (or a BERT
sentence encoder, :mod:`lbedge.models.bert`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, TextConfig, VisionConfig
from .layers import TransformerEncoder


class PatchEmbeddings(nn.Module):
    """Class token + patch embedding + learned positions.

    2D (image, depth, thermal, audio, LanguageBind_Video): a conv per frame. 3D (Video V1.5,
    ``clip_type="vl_new"``): a ``tube_size`` x patch x patch conv over the clip and one class
    token per temporal step.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.cfg = cfg
        if cfg.patch_3d:
            self.patch_embedding = nn.Conv3d(cfg.num_channels, d, (cfg.tube_size, p, p), (cfg.tube_size, p, p),
                                             bias=False)
            self.class_embedding = nn.Parameter(torch.zeros(cfg.temporal_tokens, d))
        else:
            self.patch_embedding = nn.Conv2d(cfg.num_channels, d, p, p, bias=False)
            self.class_embedding = nn.Parameter(torch.zeros(d))
        self.position_embedding = nn.Embedding(cfg.num_positions, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` or ``[B, C, T, H, W]`` -> tokens ``[B * T', 1 + N, D]``."""
        d = self.cfg.hidden_size
        if self.cfg.patch_3d:
            y = self.patch_embedding(x)                                   # [B, D, T', gh, gw]
            b, _, t = y.shape[:3]
            y = y.flatten(3).permute(0, 2, 3, 1)                          # [B, T', N, D]
            cls = self.class_embedding[None, :, None, :].expand(b, t, 1, d)
            y = torch.cat([cls, y], dim=2).reshape(b * t, -1, d)
        else:
            if x.dim() == 5:                                              # [B, C, T, H, W] -> [(B T), C, H, W]
                x = x.transpose(1, 2).flatten(0, 1)
            y = self.patch_embedding(x).flatten(2).transpose(1, 2)       # [B', N, D]
            cls = self.class_embedding.expand(y.shape[0], 1, d)
            y = torch.cat([cls, y], dim=1)
        return y + self.position_embedding.weight


class VisionTransformer(nn.Module):
    """One CLIP ViT for every LanguageBind vision modality; returns the pooled (CLS) feature."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = PatchEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)   # (sic) official name
        self.encoder = TransformerEncoder(cfg.num_hidden_layers, dim=cfg.hidden_size, heads=cfg.num_attention_heads,
                               mlp_dim=cfg.intermediate_size, act=cfg.hidden_act, eps=cfg.layer_norm_eps,
                               frames=cfg.temporal_tokens if cfg.add_time_attn else 0)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b = pixel_values.shape[0]
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        x = self.encoder(x)
        pooled = self.post_layernorm(x[:, 0])
        return pooled.reshape(b, -1, pooled.shape[-1]).mean(1)     # mean over frames (T' = 1 for stills)


class TextTransformer(nn.Module):
    """CLIP's causal text transformer; pools the EOS token (the highest id in each row)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = nn.Module()
        self.embeddings.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embeddings.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.encoder = TransformerEncoder(cfg.num_hidden_layers, dim=cfg.hidden_size, heads=cfg.num_attention_heads,
                               mlp_dim=cfg.intermediate_size, act=cfg.hidden_act, eps=cfg.layer_norm_eps)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        n = cfg.max_position_embeddings
        self.register_buffer("causal_mask", torch.ones(n, n, dtype=torch.bool).tril(), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` int64 or int32 ``[B, n]`` -> pooled EOS features ``[B, D]``."""
        n = input_ids.shape[1]
        x = self.embeddings.token_embedding(input_ids) + self.embeddings.position_embedding.weight[:n]
        x = self.final_layer_norm(self.encoder(x, self.causal_mask[:n, :n]))
        eos = eos_position(input_ids, pooled_token_id(self.cfg))
        return torch.gather(x, 1, eos[:, None, None].expand(-1, 1, x.shape[-1]))[:, 0]


def pooled_token_id(cfg: TextConfig) -> int:
    """The id whose first occurrence the CLIP text tower pools: the end token, which is the highest id of CLIP's
    vocabulary (the official code pools the highest id of each row). A config whose end token lies outside its
    vocabulary (tiny test towers) pools the vocabulary's highest id, as the official code would."""
    return cfg.eos_token_id if 0 <= cfg.eos_token_id < cfg.vocab_size else cfg.vocab_size - 1


def eos_position(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """The position of each row's first end-of-text token, found by an exact integer comparison.

    The official code pools ``argmax(input_ids)``: the end token has the highest id in CLIP's vocabulary and
    padding repeats it, so the first maximum is the first end token; this gives the same position for every
    tokenized prompt. It avoids an ArgMax over ids as floats, which a reduced-precision engine gets wrong (in
    FP16, ids 49406 and 49407 both round to 49408, so the start token would be pooled): the comparison runs on
    int32 ids, and only positions (below 2048, exact in FP16) become floats for the minimum. A row without an
    end token pools its last position."""
    n = input_ids.shape[-1]
    is_eos = input_ids.to(torch.int32) == eos_token_id
    positions = torch.arange(n, dtype=torch.float32, device=input_ids.device)
    first = torch.where(is_eos, positions, torch.full_like(positions, float(n - 1))).amin(dim=-1)
    return first.to(torch.int64)


class LanguageBindModel(nn.Module):
    """A LanguageBind checkpoint: vision tower + text tower + projections + logit scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = VisionTransformer(cfg.vision)
        if cfg.text.family == "bert":
            from .bert import BertTextTransformer
            self.text_model: nn.Module = BertTextTransformer(cfg.text)
        else:
            self.text_model = TextTransformer(cfg.text)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))

    def encode_vision(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        e = self.visual_projection(self.vision_model(pixel_values))
        return F.normalize(e, dim=-1) if normalize else e

    def encode_text(self, input_ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        e = self.text_projection(self.text_model(input_ids))
        return F.normalize(e, dim=-1) if normalize else e


class VisionTower(nn.Module):
    """Vision tower + projection + L2 norm: the graph exported and served for a modality."""

    def __init__(self, model: LanguageBindModel):
        super().__init__()
        self.vision_model, self.visual_projection = model.vision_model, model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual_projection(self.vision_model(pixel_values)), dim=-1)


class TextTower(nn.Module):
    """Text tower + projection + L2 norm."""

    def __init__(self, model: LanguageBindModel):
        super().__init__()
        self.text_model, self.text_projection = model.text_model, model.text_projection

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_model(input_ids)), dim=-1)


def resize_position_embedding(weight: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[1 + g*g, D]`` CLIP position table to ``new_grid`` as LanguageBind does for audio.

    The class position is kept; the square patch grid is interpolated bicubically with antialias
    (``F.interpolate(..., mode="bicubic", antialias=True, align_corners=False)``). Used when a tower
    is initialised from an image tower, e.g. audio's 8 x 74 mel grid from the 16 x 16 image grid.
    """
    cls, grid = weight[:1], weight[1:]
    old = int(math.isqrt(grid.shape[0]))
    if old * old != grid.shape[0]:
        raise ValueError(f"position table with {grid.shape[0]} patch rows is not a square grid")
    if (old, old) == tuple(new_grid):
        return weight
    g = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)
    return torch.cat([cls, g.to(weight.dtype)], dim=0)
