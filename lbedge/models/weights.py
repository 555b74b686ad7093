"""Reading LanguageBind weights: safetensors or restricted pickle, peft LoRA merged into plain weights.

LoRA-tuned official checkpoints store the vision encoder wrapped by peft::

    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.weight
    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.lora_A.default.weight   [r, in]
    vision_model.encoder.base_model.model.layers.3.self_attn.q_proj.lora_B.default.weight   [out, r]

(newer peft inserts ``.base_layer`` before ``.weight``). ``merge_lora`` folds each pair into its
base weight, ``W + (alpha / r) * B @ A``, and strips the wrapper so the result is a plain state dict.

:func:`weight_shapes` reads the tensor names and shapes of safetensors weights from their headers alone, so a
config.json that declares a bigger model than its weights hold is refused before the model is built (a ``.bin``
is read first: its size bounds what loading it costs).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from ..limits import limits
from ..paths import lexical_problem
from ..schema import read_json

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# buffers the official models save that lbedge recomputes
IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")
_PEFT_WRAPPER = re.compile(r"\.base_model\.model\.")
_LORA = re.compile(r"^(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
# bytes per element of each safetensors dtype
_ST_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def find_weights(folder: Path) -> Path:
    """The weight file of a checkpoint folder (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


def shard_files(index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names, each a plain name inside the index's folder."""
    raw = read_json(index, "shard index", "re-download the checkpoint")
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"unreadable shard index {index}: expected a weight_map of tensor name -> shard file; "
                              "re-download the checkpoint")
    shards = sorted(set(weight_map.values()))
    bad = [f"{name!r}: {problem}" for name in shards if (problem := lexical_problem(name)) is not None]
    bad += [f"{name!r}: a shard cannot be another index" for name in shards if name.endswith(".index.json")]
    if bad:
        raise CheckpointError(f"shard index {index} names shard files outside its folder ({'; '.join(bad[:5])}): "
                              "re-download the checkpoint")
    return [index.parent / name for name in shards]


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of safetensors weights (a file or a shard index), from the headers alone."""
    if path.name.endswith(".index.json"):
        out: dict[str, tuple[int, ...]] = {}
        for shard in shard_files(path):
            out.update(weight_shapes(shard))
        return out
    if not path.is_file():
        raise CheckpointError(f"weight file missing: {path}")
    return safetensors_shapes(path)


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the header of the safetensors file ``path``, each entry checked against the
    file's size; nothing else of the file is read."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > size - 8 or n > limits().max_json_bytes:
            raise CheckpointError(f"corrupt or truncated safetensors file {path}: its header length is unusable; "
                                  "re-download the checkpoint")
        data = f.read(n)
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"corrupt safetensors file {path}: its header is not JSON; re-download the "
                              "checkpoint") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"corrupt safetensors file {path}: its header is not a JSON object")
    body = size - 8 - n
    return {name: _tensor_shape(path, name, info, body) for name, info in header.items() if name != "__metadata__"}


def _tensor_shape(path: Path, name: str, info: Any, body: int) -> tuple[int, ...]:
    """The shape of one safetensors header entry, after checking that its byte range fits the file."""
    ok = isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
    if ok:
        shape, offsets, dtype = info["shape"], info["data_offsets"], info.get("dtype")
        ok = (all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
              and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
              and 0 <= offsets[0] <= offsets[1] <= body)
    if ok:
        width = _ST_BYTES.get(dtype) if isinstance(dtype, str) else None
        ok = width is None or offsets[1] - offsets[0] == math.prod(shape) * width
    if not ok:
        raise CheckpointError(f"corrupt safetensors file {path}: the header entry of tensor {name[:80]!r} does not "
                              "fit the file; re-download the checkpoint")
    return tuple(shape)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors / .bin file or a sharded index; never an unrestricted unpickle."""
    if path.name.endswith(".index.json"):
        out: dict[str, torch.Tensor] = {}
        for shard in shard_files(path):
            out.update(read_state_dict(shard))
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


def plain_key(key: str) -> str:
    """``key`` without peft's wrapper (``.base_model.model.``, ``.base_layer.``)."""
    return _PEFT_WRAPPER.sub(".", key).replace(".base_layer.", ".")


def plain_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the plain state dict that ``merge_lora`` makes of tensors with these names and shapes
    (wrapper stripped, LoRA pairs dropped: they merge into their base weights)."""
    out = {}
    for key, shape in shapes.items():
        key = plain_key(key)
        if not _LORA.match(key):
            out[key] = shape
    return out


def merge_lora(sd: Mapping[str, torch.Tensor], scaling: float | None) -> tuple[dict[str, torch.Tensor], int]:
    """Fold peft LoRA pairs into their base weights and strip peft's wrapper from key names.

    Returns the plain state dict and the number of merged LoRA pairs. ``scaling`` is ``alpha / r``.
    """
    plain: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        key = plain_key(key)
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


def key_problems(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of the name -> shape maps ``given`` against ``expected``, one
    line per kind (buffers lbedge recomputes are ignored)."""
    given = {k: v for k, v in given.items() if not IGNORED_KEYS.search(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(f"{k} {tuple(given[k])} != {tuple(expected[k])}"
                    for k in set(given) & set(expected) if tuple(given[k]) != tuple(expected[k]))
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:6]) + (f" ... (+{len(items) - 6} more)" if len(items) > 6 else "")
            problems.append(f"{len(items)} {label} key(s): {shown}")
    return problems


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``sd`` into ``model``; missing, unexpected or mis-shaped keys are one error naming them."""
    expected = model.state_dict()
    problems = key_problems({k: tuple(v.shape) for k, v in expected.items()},
                            {k: tuple(v.shape) for k, v in sd.items()})
    if problems:
        raise CheckpointError(f"weights in {source} do not match its config.json: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in sd.items():
            if not IGNORED_KEYS.search(k):
                expected[k].copy_(v.to(expected[k].dtype))
