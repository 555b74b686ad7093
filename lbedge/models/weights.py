"""Reading LanguageBind weights: safetensors or restricted pickle, peft LoRA merged into plain weights.

LoRA-tuned official checkpoints store the vision encoder wrapped by peft::

    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.weight
    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.lora_A.default.weight   [r, in]
    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.lora_B.default.weight   [out, r]

(newer peft inserts ``.base_layer`` before ``.weight``). ``merge_lora`` folds each pair into its
base weight, ``W + (alpha / r) * B @ A``, and strips the wrapper so the result is a plain state dict.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import torch

from ..errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# buffers the official models save that lbedge recomputes
IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")
_PEFT_WRAPPER = re.compile(r"\.base_model\.model\.")
_LORA = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def find_weights(folder: Path) -> Path:
    """The weight file of a checkpoint folder (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors / .bin file or a sharded index; never an unrestricted unpickle."""
    if path.name.endswith(".index.json"):
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"unreadable shard index {path}: {exc}") from exc
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(read_state_dict(path.parent / shard))
        return out
    if not path.is_file():
        raise CheckpointError(f"weight file missing: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"corrupt or truncated safetensors file {path}: {exc}") from exc
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated zips, bad pickles, disallowed globals
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot load {path} (corrupt, truncated or not a plain tensor state dict; "
                              f"only weights_only loading is allowed): {msg}") from exc
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a flat tensor state dict")
    return dict(sd)


def merge_lora(sd: Mapping[str, torch.Tensor], scaling: float | None) -> tuple[dict[str, torch.Tensor], int]:
    """Fold peft LoRA pairs into their base weights and strip peft's wrapper from key names.

    Returns the plain state dict and the number of merged LoRA pairs. ``scaling`` is ``alpha / r``.
    """
    plain: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        key = _PEFT_WRAPPER.sub(".", key).replace(".base_layer.", ".")
        m = _LORA.match(key)
        if m:
            lora.setdefault(m["base"], {})[m["ab"]] = value
        else:
            plain[key] = value
    for base, pair in lora.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"LoRA weights for {base} are incomplete (have lora_{'/'.join(pair)} only)")
        wkey = base + ".weight"
        if wkey not in plain:
            raise CheckpointError(f"LoRA weights for {base} have no base weight {wkey}")
        if scaling is None:
            raise CheckpointError(f"checkpoint has LoRA weights ({base}) but its config sets lora_r = 0")
        a, b, w = pair["A"].float(), pair["B"].float(), plain[wkey]
        if a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0] or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"LoRA shapes for {base} do not fit: A {tuple(a.shape)}, B {tuple(b.shape)}, "
                                  f"weight {tuple(w.shape)}")
        plain[wkey] = (w.float() + scaling * (b @ a)).to(w.dtype)
    return plain, len(lora)


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``sd`` into ``model``; missing, unexpected or mis-shaped keys are one error naming them."""
    expected = model.state_dict()
    given = {k: v for k, v in sd.items() if not IGNORED_KEYS.search(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}"
                    for k in set(given) & set(expected) if tuple(given[k].shape) != tuple(expected[k].shape))
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:6]) + (f" ... (+{len(items) - 6} more)" if len(items) > 6 else "")
            problems.append(f"{len(items)} {label} key(s): {shown}")
    if problems:
        raise CheckpointError(f"weights in {source} do not match its config.json: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in given.items():
            expected[k].copy_(v.to(expected[k].dtype))
