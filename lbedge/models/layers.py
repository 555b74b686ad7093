"""Transformer building blocks shared by the vision and text towers (torch).

Parameter names follow the official LanguageBind / Hugging Face CLIP state dicts so weights load
by name; attention uses ``scaled_dot_product_attention`` so the same code exports to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation(name: str):
    """CLIP's ``quick_gelu`` (OpenAI ViT-L) or exact ``gelu`` (OpenCLIP ViT-H)."""
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unsupported hidden_act {name!r}: expected quick_gelu or gelu")


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (CLIP layout)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LN transformer layer; with ``frames`` it first mixes each token across time.

    The temporal branch is LanguageBind_Video's: add a learned per-frame embedding, then
    ``x + Attn_t(LN_t(x))`` over the frame axis, then the usual spatial attention and MLP.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str, eps: float, frames: int = 0):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, act)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.frames = frames
        if frames:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, dim))
            self.temporal_attn = Attention(dim, heads)
            self.temporal_layer_norm1 = nn.LayerNorm(dim, eps=eps)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        bt, n, d = x.shape
        t = self.frames
        # [(b t), n, d] -> [(b n), t, d]
        x = x.reshape(-1, t, n, d).transpose(1, 2).reshape(-1, t, d)
        if t != 1:
            x = x + self.temporal_embedding[:, :t]
        x = x + self.temporal_attn(self.temporal_layer_norm1(x))
        return x.reshape(-1, n, t, d).transpose(1, 2).reshape(bt, n, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.frames:
            x = self._temporal(x)
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class TransformerEncoder(nn.Module):
    def __init__(self, layers: int, **kw):
        super().__init__()
        self.layers = nn.ModuleList([TransformerLayer(**kw) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x
