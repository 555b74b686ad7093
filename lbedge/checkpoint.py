"""Loading official LanguageBind checkpoint folders (config.json, weights, tokenizer) with PyTorch."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .config import ModelConfig, count_parameters
from .deps import require
from .encoder import Encoder, fingerprint_arrays
from .errors import CheckpointError, UsageError
from .tokenizer import Tokenizer, copy_tokenizer_files, load_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from .models.towers import LanguageBindModel

log = logging.getLogger(__name__)


def load_model(path: str | Path) -> "LanguageBindModel":
    """Build the torch model of a checkpoint folder and load its weights (LoRA merged)."""
    require("torch")
    from .models.towers import LanguageBindModel
    from .models.weights import find_weights, load_into, merge_lora, read_state_dict, weight_shapes

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    cfg = ModelConfig.from_json(folder)  # validated: types, ranges, parameter count under the limit
    weights = find_weights(folder)
    pickled = ".safetensors" not in weights.name
    if not pickled:  # safetensors: the headers alone tell, before any tensor is read
        check_weights_hold(cfg, weight_shapes(weights), weights)
    sd = read_state_dict(weights)  # a .bin is read first (its errors say what is wrong with it)
    if pickled:
        check_weights_hold(cfg, {k: tuple(v.shape) for k, v in sd.items()}, weights)
    scaling = cfg.vision.lora_alpha / cfg.vision.lora_r if cfg.vision.lora_r else None
    sd, merged = merge_lora(sd, scaling)
    model = LanguageBindModel(cfg)
    load_into(model, sd, str(weights))
    model.eval().requires_grad_(False)  # an inference model; training re-enables what it tunes
    model.lora_pairs_merged = merged  # type: ignore[attr-defined]
    return model


def check_weights_hold(cfg: ModelConfig, shapes: Mapping[str, tuple[int, ...]], weights: Path) -> None:
    """Refuse a config.json that declares more parameters than the weight tensors ``shapes`` (name -> shape)
    hold, before the model is built; the error names the keys that differ (from a model built on torch's
    ``meta`` device, which allocates nothing). The files may hold more (LoRA adapters, saved buffers)."""
    import torch

    from .models.towers import LanguageBindModel
    from .models.weights import key_problems, plain_shapes

    declared, held = count_parameters(cfg), sum(math.prod(s) for s in shapes.values())
    if declared <= held:
        return
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LanguageBindModel(cfg).state_dict().items()}
    detail = "; ".join(key_problems(expected, plain_shapes(shapes)))
    raise CheckpointError(
        f"{weights.parent / 'config.json'} declares {declared:,} parameters but the weights in "
        f"{weights.name} hold at most {held:,}: config and weights come from different models"
        f"{f' ({detail})' if detail else ''}; re-download the checkpoint or fix config.json"
    )


def text_fingerprint(model: "LanguageBindModel") -> str:
    """sha256 of the text tower and text projection weights (BF16 weights hash apart from their FP32 source:
    their embeddings differ, so cached prompt embeddings must not be shared between them)."""
    import torch

    sd = model.state_dict()
    keys = sorted(k for k in sd if k.startswith(("text_model.", "text_projection.")))
    tag = {k: "bf16:" if sd[k].dtype == torch.bfloat16 else "" for k in keys}
    return fingerprint_arrays([(tag[k] + k, sd[k].detach().float().cpu().numpy()) for k in keys])


#: checkpoint precisions: the torch dtype each runs in
TORCH_PRECISIONS = ("fp32", "bf16")


def _torch_dtype(precision: str, tower: str):
    import torch

    if precision not in TORCH_PRECISIONS:
        raise UsageError(
            f"{tower} precision {precision!r}: a checkpoint runs in {' or '.join(TORCH_PRECISIONS)} on PyTorch; "
            "build a bundle (`lbedge build`) for fp16 or int8"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _warn_emulated_bf16(device: str) -> None:
    from .cpu import bf16_support

    if str(device).startswith("cpu"):
        here = bf16_support()
        if not here.native:
            log.warning("BF16 on this CPU: %s; fp32, or an INT8 bundle, runs faster here", here.reason)


def encoder_from_model(
    model: "LanguageBindModel",
    tokenizer: Tokenizer,
    *,
    name: str = "",
    device: str = "cpu",
    batch_size: int = 8,
    path: str | Path | None = None,
    precision: str = "fp32",
    text_precision: str = "fp32",
) -> Encoder:
    """Wrap a torch ``LanguageBindModel`` as an :class:`Encoder` on the PyTorch backend.

    ``precision`` / ``text_precision``: ``fp32`` or ``bf16`` for the vision and the text tower (BF16 weights
    and activations; embeddings come back as float32). On a CPU without BF16 units BF16 is emulated and slow:
    a warning says so (:func:`lbedge.cpu.bf16_support`)."""
    from .backends.torch_backend import TorchBackend
    from .models.towers import TextTower, VisionTower

    vision_dtype, text_dtype = _torch_dtype(precision, "vision"), _torch_dtype(text_precision, "text")
    if "bf16" in (precision, text_precision):
        _warn_emulated_bf16(device)

    cfg = model.config
    if tokenizer.vocab_size > cfg.text.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the text tower's vocab_size is "
            f"{cfg.text.vocab_size}: tokenizer files and weights come from different models"
        )
    return Encoder(
        modality=cfg.modality,
        preprocess_config=cfg.preprocess,
        vision=TorchBackend(VisionTower(model), ("pixel_values",), "embeds", device=device, dtype=vision_dtype),
        text=TorchBackend(TextTower(model), ("input_ids",), "embeds", device=device, dtype=text_dtype),
        tokenizer=tokenizer,
        logit_scale=float(model.logit_scale.detach().exp()),
        embed_dim=cfg.projection_dim,
        name=name,
        text_fingerprint=lambda: text_fingerprint(model),
        batch_size=batch_size,
        precision={"vision": precision, "text": text_precision},
        backends={"vision": "torch", "text": "torch"},
        path=path,
    )


def from_pretrained(
    path: str | Path,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    precision: str = "fp32",
    text_precision: str = "fp32",
) -> Encoder:
    """Load an official LanguageBind checkpoint folder as an :class:`Encoder` (PyTorch backend).

    The folder holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` (optionally
    sharded) and the tokenizer's ``vocab.json`` and ``merges.txt``. LoRA weights are merged.
    ``precision`` / ``text_precision``: ``fp32`` or ``bf16`` (see :func:`encoder_from_model`).
    """
    _torch_dtype(precision, "vision"), _torch_dtype(text_precision, "text")  # a typo fails before loading
    folder = Path(path)
    model = load_model(folder)
    tok = load_tokenizer(folder, model.config.text)
    return encoder_from_model(
        model,
        tok,
        name=folder.name,
        device=device,
        batch_size=batch_size,
        path=folder,
        precision=precision,
        text_precision=text_precision,
    )


def write_checkpoint(
    state_dict: dict,
    cfg: ModelConfig,
    folder: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    safetensors: bool = True,
) -> Path:
    """Write a state dict and its config as an official-layout checkpoint folder."""
    import json

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    for stale in ("model.safetensors", "pytorch_model.bin"):
        if (folder / stale).exists():
            (folder / stale).unlink()
    if safetensors:
        from safetensors.torch import save_file

        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, folder / "pytorch_model.bin")
    if tokenizer_dir is not None and Path(tokenizer_dir).resolve() != folder.resolve():
        copy_tokenizer_files(tokenizer_dir, folder, cfg.text.tokenizer_files)
    return folder


def save_pretrained(
    model: "LanguageBindModel", folder: str | Path, *, tokenizer_dir: str | Path | None = None, safetensors: bool = True
) -> Path:
    """Write ``model`` as an official-layout checkpoint folder (config.json, weights, tokenizer files).

    The weights are plain (LoRA already merged), so the config records ``lora_r = 0``; the official
    code and :func:`from_pretrained` both load the result.
    """
    import dataclasses

    cfg = model.config
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, lora_r=0))
    return write_checkpoint(model.state_dict(), cfg, folder, tokenizer_dir=tokenizer_dir, safetensors=safetensors)
