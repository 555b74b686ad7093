"""Model and preprocessing configuration, read from an official LanguageBind ``config.json``.

One ``VisionConfig`` describes every LanguageBind vision tower (image, depth, thermal,
audio, video); the modality only changes its input grid, frame handling and the
preprocessing parameters collected in ``PreprocessConfig``. Every preprocessing constant
has exactly one home: the ``PreprocessConfig`` built here from the checkpoint's config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError

MODALITIES = ("image", "depth", "thermal", "audio", "video")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything the deterministic inference preprocessing of one modality needs."""

    modality: str
    size: int = 224                      # short side after resize, and crop size
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    interpolation: str = "bicubic"       # image/depth/thermal: bicubic; video: bilinear
    # depth
    depth_scale: float = 1000.0          # input unit -> metres (input in millimetres)
    min_depth: float = 0.01
    max_depth: float = 10.0
    # audio
    sample_rate: int = 16000
    num_mel_bins: int = 112
    target_length: int = 1036
    audio_mean: float = -4.2677393
    audio_std: float = 4.5689974
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    # video
    num_frames: int = 8

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample (without the batch axis)."""
        if self.modality == "audio":
            return (3, self.num_mel_bins, self.target_length)
        if self.modality == "video":
            return (3, self.num_frames, self.size, self.size)
        return (3, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)


@dataclass(frozen=True)
class VisionConfig:
    """One LanguageBind vision tower (a CLIP ViT, optionally with temporal attention)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    # modality extras
    grid: tuple[int, int] = (16, 16)     # patch grid (rows, cols); audio: (mel_bins, target_length) / patch
    num_frames: int = 1                  # video frames per clip
    add_time_attn: bool = False          # LanguageBind_Video temporal attention in every layer
    tube_size: int = 1                   # V1.5 3D "tube" patch embedding (clip_type "vl_new")
    patch_3d: bool = False
    # LoRA (merged at load time)
    lora_r: int = 0
    lora_alpha: float = 16.0

    @property
    def temporal_tokens(self) -> int:
        """Number of per-frame token groups the encoder sees (frames / tube size)."""
        return self.num_frames // self.tube_size if self.patch_3d else self.num_frames

    @property
    def num_positions(self) -> int:
        return self.grid[0] * self.grid[1] + 1


TEXT_FAMILIES = ("clip", "bert")


@dataclass(frozen=True)
class TextConfig:
    """The text tower. ``family="clip"``: LanguageBind's CLIP text transformer (causal, 77 tokens, EOS pooling,
    BPE). ``family="bert"``: a BERT sentence encoder such as all-MiniLM-L6-v2 (bidirectional, post-LN, mean
    pooling over real tokens, WordPiece ``tokenizer.json``), ``max_length`` tokens per prompt."""

    family: str = "clip"
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 0                  # BERT's [PAD]; CLIP pads with EOS (see ``pad_id``)
    type_vocab_size: int = 2               # BERT only
    max_length: int = 77                   # tokens per prompt (CLIP: the full 77 positions)

    @property
    def pad_id(self) -> int:
        """The id that fills a prompt after its last token."""
        return self.eos_token_id if self.family == "clip" else self.pad_token_id

    @property
    def tokenizer_files(self) -> tuple[str, ...]:
        """The files a checkpoint or bundle needs for this family's tokenizer."""
        return ("vocab.json", "merges.txt") if self.family == "clip" else ("tokenizer.json",)


def text_config_from_dict(tc: dict[str, Any]) -> TextConfig:
    """A ``text_config`` (LanguageBind's CLIP one, or a BERT one with ``model_type: bert``) as a TextConfig."""
    if tc.get("model_type") == "bert":
        n_pos = int(tc.get("max_position_embeddings", 512))
        return TextConfig(
            family="bert", vocab_size=int(tc.get("vocab_size", 30522)), hidden_size=int(tc.get("hidden_size", 384)),
            intermediate_size=int(tc.get("intermediate_size", 1536)),
            num_hidden_layers=int(tc.get("num_hidden_layers", 6)),
            num_attention_heads=int(tc.get("num_attention_heads", 12)), max_position_embeddings=n_pos,
            layer_norm_eps=float(tc.get("layer_norm_eps", 1e-12)), hidden_act=str(tc.get("hidden_act", "gelu")),
            bos_token_id=int(tc.get("cls_token_id", 101)), eos_token_id=int(tc.get("sep_token_id", 102)),
            pad_token_id=int(tc.get("pad_token_id", 0)), type_vocab_size=int(tc.get("type_vocab_size", 2)),
            max_length=min(n_pos, int(tc.get("max_length", 64))))
    n_pos = int(tc.get("max_position_embeddings", 77))
    return TextConfig(
        vocab_size=int(tc.get("vocab_size", 49408)),
        hidden_size=int(tc.get("hidden_size", 512)),
        intermediate_size=int(tc.get("intermediate_size", 2048)),
        num_hidden_layers=int(tc.get("num_hidden_layers", 12)),
        num_attention_heads=int(tc.get("num_attention_heads", 8)),
        max_position_embeddings=n_pos,
        layer_norm_eps=float(tc.get("layer_norm_eps", 1e-5)),
        hidden_act=str(tc.get("hidden_act", "quick_gelu")),
        bos_token_id=int(tc.get("bos_token_id", 49406)),
        eos_token_id=int(tc.get("eos_token_id", 49407)),
        max_length=n_pos,
    )


def text_config_to_dict(t: TextConfig, projection_dim: int) -> dict[str, Any]:
    """The ``text_config`` of ``config.json`` (official CLIP layout, or the BERT one)."""
    common = {"vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
              "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
              "max_position_embeddings": t.max_position_embeddings, "layer_norm_eps": t.layer_norm_eps,
              "hidden_act": t.hidden_act, "projection_dim": projection_dim}
    if t.family == "bert":
        return {"model_type": "bert", **common, "cls_token_id": t.bos_token_id, "sep_token_id": t.eos_token_id,
                "pad_token_id": t.pad_token_id, "type_vocab_size": t.type_vocab_size, "max_length": t.max_length}
    return {**common, "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id, "pad_token_id": 1}


@dataclass(frozen=True)
class ModelConfig:
    """A LanguageBind model: one vision tower, the text tower, projections and logit scale."""

    modality: str
    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 768
    logit_scale_init: float = 2.6592
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig("image"))

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        """Read an official LanguageBind ``config.json`` (or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise CheckpointError(f"no config.json at {path}: point at an official LanguageBind checkpoint folder")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc}): re-download the checkpoint") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "ModelConfig":
        if not isinstance(raw, dict) or "vision_config" not in raw or "text_config" not in raw:
            raise CheckpointError(
                f"{source} has no vision_config/text_config: not a LanguageBind checkpoint config")
        vc, tc = raw["vision_config"] or {}, raw["text_config"] or {}
        modality = detect_modality(raw)
        try:
            vision = _vision_config(vc, modality)
            text = text_config_from_dict(tc)
            pre = _preprocess_config(vc, modality)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: unusable value in vision_config/text_config ({exc})") from exc
        for name, tower in (("vision", vision), ("text", text)):
            if tower.hidden_size % tower.num_attention_heads:
                raise CheckpointError(
                    f"{source}: {name} hidden_size {tower.hidden_size} is not divisible by "
                    f"num_attention_heads {tower.num_attention_heads}")
        return cls(
            modality=modality,
            vision=vision,
            text=text,
            projection_dim=int(raw.get("projection_dim", 512)),
            logit_scale_init=float(raw.get("logit_scale_init_value", 2.6592)),
            preprocess=pre,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the official LanguageBind ``config.json`` layout."""
        v, t = self.vision, self.text
        vision = {
            "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
            "patch_size": v.patch_size, "image_size": v.image_size, "num_channels": v.num_channels,
            "layer_norm_eps": v.layer_norm_eps, "hidden_act": v.hidden_act,
            "projection_dim": self.projection_dim,
            "add_time_attn": v.add_time_attn, "num_frames": v.num_frames,
            "lora_r": v.lora_r, "lora_alpha": v.lora_alpha, "lora_dropout": 0.0,
            "force_patch_dropout": 0.0,
        }
        p = self.preprocess
        if self.modality == "audio":
            vision.update(num_mel_bins=p.num_mel_bins, target_length=p.target_length,
                          audio_sample_rate=p.sample_rate, audio_mean=p.audio_mean, audio_std=p.audio_std)
        if self.modality == "depth":
            vision.update(max_depth=p.max_depth)
        if self.modality == "video":
            vision.update(video_decode_backend="decord")
            if v.patch_3d:
                vision.update(clip_type="vl_new", tube_size=v.tube_size)
        arch = "LanguageBind" + self.modality.capitalize()
        return {
            "architectures": [arch], "model_type": arch,
            "projection_dim": self.projection_dim, "logit_scale_init_value": self.logit_scale_init,
            "text_config": text_config_to_dict(t, self.projection_dim),
            "vision_config": vision,
        }


def detect_modality(raw: dict[str, Any]) -> str:
    """The modality of an official config: from ``model_type``/``architectures``, else its fields."""
    names = [str(raw.get("model_type", ""))] + [str(a) for a in raw.get("architectures") or []]
    for name in names:
        low = name.lower()
        for m in MODALITIES:
            if low.startswith("languagebind") and m in low:
                return m
    vc = raw.get("vision_config") or {}
    if vc.get("num_mel_bins") and vc.get("target_length"):
        return "audio"
    if vc.get("add_time_attn"):
        return "video"
    if vc.get("max_depth"):
        return "depth"
    return "image"


def _vision_config(vc: dict[str, Any], modality: str) -> VisionConfig:
    patch = int(vc.get("patch_size", 32))
    image_size = int(vc.get("image_size", 224))
    if modality == "audio":
        rows, cols = int(vc["num_mel_bins"]), int(vc["target_length"])
    else:
        rows = cols = image_size
    patch_3d = modality == "video" and vc.get("clip_type", "vl") == "vl_new"
    num_frames = int(vc.get("num_frames", 1)) if modality == "video" else 1
    tube = int(vc.get("tube_size", 1)) if patch_3d else 1
    if patch_3d and num_frames % tube:
        raise ValueError(f"num_frames {num_frames} is not a multiple of tube_size {tube}")
    return VisionConfig(
        hidden_size=int(vc.get("hidden_size", 768)),
        intermediate_size=int(vc.get("intermediate_size", 3072)),
        num_hidden_layers=int(vc.get("num_hidden_layers", 12)),
        num_attention_heads=int(vc.get("num_attention_heads", 12)),
        patch_size=patch,
        image_size=image_size,
        num_channels=int(vc.get("num_channels", 3)),
        layer_norm_eps=float(vc.get("layer_norm_eps", 1e-5)),
        hidden_act=str(vc.get("hidden_act", "quick_gelu")),
        grid=(rows // patch, cols // patch),
        num_frames=num_frames,
        add_time_attn=bool(vc.get("add_time_attn", False)) and modality == "video",
        tube_size=tube,
        patch_3d=patch_3d,
        lora_r=int(vc.get("lora_r", 2) or 0),          # the official CLIPVisionConfig default is 2
        lora_alpha=float(vc.get("lora_alpha", 16)),
    )


def _preprocess_config(vc: dict[str, Any], modality: str) -> PreprocessConfig:
    kw: dict[str, Any] = {"modality": modality, "size": int(vc.get("image_size", 224))}
    if modality == "depth":
        kw["max_depth"] = float(vc.get("max_depth", 10.0) or 0.0)
    if modality == "audio":
        kw.update(
            sample_rate=int(vc.get("audio_sample_rate", 16000)),
            num_mel_bins=int(vc["num_mel_bins"]),
            target_length=int(vc["target_length"]),
            audio_mean=float(vc.get("audio_mean", -4.2677393)),
            audio_std=float(vc.get("audio_std", 4.5689974)),
        )
    if modality == "video":
        kw.update(num_frames=int(vc.get("num_frames", 8)), interpolation="bilinear")
    return PreprocessConfig(**kw)
