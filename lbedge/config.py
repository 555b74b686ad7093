"""Model and preprocessing configuration, read from an official LanguageBind ``config.json``.

One ``VisionConfig`` describes every LanguageBind vision tower (image, depth, thermal,
audio, video); the modality only changes its input grid, frame handling and the
preprocessing parameters collected in ``PreprocessConfig``. Every preprocessing constant
has exactly one home: the ``PreprocessConfig`` built here from the checkpoint's config.

Everything is validated before anything is allocated: a ``PreprocessConfig`` checks its fields when it is
built (:func:`preprocess_problems`), and :meth:`ModelConfig.from_dict` checks every type and range of a
``config.json`` (bounds: the ``MAX_*`` constants), reports every problem at once, and refuses a model whose
exact parameter count (:func:`count_parameters`) is over ``limits().max_model_params``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import CheckpointError, InputError
from .limits import hint, limits
from .schema import Problems, get_bool, get_dict, get_float, get_int, get_str, join, read_json, show

MODALITIES = ("image", "depth", "thermal", "audio", "video")
INTERPOLATIONS = ("bicubic", "bilinear")
HIDDEN_ACTS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh")    # what lbedge.models.layers implements

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

    def __post_init__(self) -> None:
        problems = preprocess_problems(asdict(self))
        if problems:
            raise InputError(f"invalid preprocessing config: {problems.summary()}. These values come from a "
                             "checkpoint's config.json or a bundle manifest's preprocess section: fix or rebuild it")
        for f in fields(self):                   # plain Python numbers (numpy ones would not serialise to JSON)
            value = getattr(self, f.name)
            if f.name in ("mean", "std"):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
            elif f.name in _PRE_INTS:
                object.__setattr__(self, f.name, int(value))
            elif f.name in _PRE_FLOATS:
                object.__setattr__(self, f.name, float(value))

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
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessConfig":
        """From a manifest's ``preprocess`` section (unknown keys are ignored); an InputError lists every problem."""
        if not isinstance(d, Mapping):
            raise InputError(f"invalid preprocessing config: expected an object, got {show(d)}")
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        if "modality" not in kw:
            raise InputError("invalid preprocessing config: modality is missing")
        return cls(**kw)


# accepted range of each numeric PreprocessConfig field: (lowest, highest), and for floats whether the lowest
# value itself is excluded
_PRE_INTS = {"size": (1, 4096), "sample_rate": (1000, 384_000), "num_mel_bins": (1, 1024),
             "target_length": (1, 16384), "num_frames": (1, 64)}
_PRE_FLOATS = {"depth_scale": (0.0, 1e9, True), "min_depth": (0.0, 1e9, True), "max_depth": (0.0, 1e9, False),
               "audio_mean": (-1e6, 1e6, False), "audio_std": (0.0, 1e6, True),
               "frame_length_ms": (0.0, 1000.0, True), "frame_shift_ms": (0.0, 1000.0, True)}
_PRE_DEFAULTS = {f.name: f.default for f in fields(PreprocessConfig) if f.default is not MISSING}


def preprocess_problems(values: Mapping[str, Any]) -> Problems:
    """Every problem of the PreprocessConfig fields ``values`` (any types), each under its field name."""
    p = Problems()
    get_str(p, "modality", values.get("modality"), choices=MODALITIES)
    get_str(p, "interpolation", values.get("interpolation", "bicubic"), choices=INTERPOLATIONS)
    for name, (lo, hi) in _PRE_INTS.items():
        if name in values:
            get_int(p, name, values[name], lo, hi)
    got = {name: get_float(p, name, values[name], lo, hi, lo_open=open_) if name in values else None
           for name, (lo, hi, open_) in _PRE_FLOATS.items()}
    for name in ("mean", "std"):
        if name in values:
            _check_triple(p, name, values[name], positive=name == "std")
    lo_d, hi_d = got["min_depth"], got["max_depth"]
    if lo_d is not None and hi_d and lo_d >= hi_d:
        p.add("min_depth", f"must be below max_depth ({lo_d:g} >= {hi_d:g}; max_depth 0 means each frame's maximum)")
    rate = values.get("sample_rate")
    if isinstance(rate, numbers.Integral) and not isinstance(rate, bool) and rate > 0:
        for name in ("frame_length_ms", "frame_shift_ms"):
            ms = got[name]
            if ms is not None and int(rate * ms * 0.001) < 1:
                p.add(name, f"{ms:g} ms is less than one sample at {rate} Hz")
    return p


def _check_triple(p: Problems, name: str, value: Any, *, positive: bool) -> None:
    """Record a problem unless ``value`` is three finite numbers (all above 0 with ``positive``)."""
    ok = not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__len__") and len(value) == 3 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in value)
    if not ok:
        what = "positive finite numbers" if positive else "finite numbers"
        got = show(list(value) if isinstance(value, tuple) else value)
        p.add(name, f"expected 3 {what} (one per colour channel), got {got}")


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


def text_config_from_dict(tc: Mapping[str, Any], *, where: str = "text_config",
                          problems: Problems | None = None) -> TextConfig:
    """A ``text_config`` (LanguageBind's CLIP one, or a BERT one with ``model_type: bert``) as a TextConfig.

    Every type and range is checked. With ``problems``, each problem is recorded there (under JSON path
    ``where``) and a best-effort config returned; without, they raise one CheckpointError.
    """
    p = problems if problems is not None else Problems()
    cfg = _text_config(tc, where, p)
    if problems is None and p:
        raise CheckpointError(f"unusable text config ({len(p)} problem(s)): {p.summary()}. Fix config.json or "
                              "re-download the model")
    return cfg


def _text_config(tc: Mapping[str, Any], where: str, p: Problems) -> TextConfig:
    """The TextConfig of ``tc``; problems go to ``p`` (defaults stand in for bad values)."""
    r = _Reader(tc, where, p)
    bert = tc.get("model_type") == "bert"
    d = r.integer("hidden_size", 384 if bert else 512, 1, MAX_WIDTH)
    heads = r.integer("num_attention_heads", 12 if bert else 8, 1, MAX_WIDTH)
    n_pos = r.integer("max_position_embeddings", 512 if bert else 77, 1, MAX_TEXT_POSITIONS)
    common = dict(
        vocab_size=r.integer("vocab_size", 30522 if bert else 49408, 1, MAX_VOCAB), hidden_size=d,
        intermediate_size=r.integer("intermediate_size", 1536 if bert else 2048, 1, MAX_WIDTH),
        num_hidden_layers=r.integer("num_hidden_layers", 6 if bert else 12, 1, MAX_LAYERS),
        num_attention_heads=heads, max_position_embeddings=n_pos,
        layer_norm_eps=r.number("layer_norm_eps", 1e-12 if bert else 1e-5, 0.0, 1.0, lo_open=True),
        hidden_act=r.text("hidden_act", "gelu" if bert else "quick_gelu", HIDDEN_ACTS))
    if r.ok("hidden_size", "num_attention_heads") and d % heads:
        p.add(join(where, "hidden_size"), f"{d} is not divisible by num_attention_heads {heads}")
    if bert:
        return TextConfig(
            family="bert", **common, bos_token_id=r.integer("cls_token_id", 101, 0, MAX_TOKEN_ID),
            eos_token_id=r.integer("sep_token_id", 102, 0, MAX_TOKEN_ID),
            pad_token_id=r.integer("pad_token_id", 0, 0, MAX_TOKEN_ID),
            type_vocab_size=r.integer("type_vocab_size", 2, 1, 1024),
            max_length=min(n_pos, r.integer("max_length", 64, 1, MAX_TEXT_POSITIONS)))
    return TextConfig(**common, bos_token_id=r.integer("bos_token_id", 49406, 0, MAX_TOKEN_ID),
                      eos_token_id=r.integer("eos_token_id", 49407, 0, MAX_TOKEN_ID), max_length=n_pos)


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
        """Read an official LanguageBind ``config.json`` (or a folder holding one), validated."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise CheckpointError(f"no config.json at {path}: point at an official LanguageBind checkpoint folder")
        raw = read_json(path, "checkpoint config", "re-download the checkpoint")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "ModelConfig":
        """Validate an official ``config.json`` dict and build its ModelConfig (nothing is allocated).

        Every type and range is checked (the ``MAX_*`` bounds) and every problem reported in one CheckpointError;
        a model whose parameter count is over ``limits().max_model_params`` is refused.
        """
        if not isinstance(raw, dict) or "vision_config" not in raw or "text_config" not in raw:
            raise CheckpointError(
                f"{source} has no vision_config/text_config: not a LanguageBind checkpoint config")
        p = Problems()
        vc = get_dict(p, "vision_config", raw["vision_config"] or {}) or {}
        tc = get_dict(p, "text_config", raw["text_config"] or {}) or {}
        modality = detect_modality(raw)
        vision = _vision_config(vc, modality, p)
        text = _text_config(tc, "text_config", p)
        pre = _preprocess_config(vc, modality, p)
        top = _Reader(raw, "", p)
        projection_dim = top.integer("projection_dim", 512, 1, MAX_WIDTH)
        logit_scale = top.number("logit_scale_init_value", 2.6592, -100.0, 100.0)
        if p:
            raise CheckpointError(f"{source} is not a usable LanguageBind config ({len(p)} problem(s)): "
                                  f"{p.summary()}. Fix config.json or re-download the checkpoint")
        cfg = cls(modality=modality, vision=vision, text=text, projection_dim=projection_dim,
                  logit_scale_init=logit_scale, preprocess=pre)
        n = count_parameters(cfg)
        cap = limits().max_model_params
        if n > cap:
            raise CheckpointError(f"{source} declares a model of {n:,} parameters, over the max_model_params limit "
                                  f"of {cap:,}: check config.json ({hint('max_model_params')})")
        return cfg

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


def detect_modality(raw: Mapping[str, Any]) -> str:
    """The modality of an official config: from ``model_type``/``architectures``, else its fields."""
    archs = raw.get("architectures")
    names = [str(raw.get("model_type", ""))] + ([str(a) for a in archs] if isinstance(archs, list) else [])
    for name in names:
        low = name.lower()
        for m in MODALITIES:
            if low.startswith("languagebind") and m in low:
                return m
    vc = raw.get("vision_config")
    vc = vc if isinstance(vc, dict) else {}
    if vc.get("num_mel_bins") and vc.get("target_length"):
        return "audio"
    if vc.get("add_time_attn"):
        return "video"
    if vc.get("max_depth"):
        return "depth"
    return "image"


# --- bounds of a config.json, checked before anything is allocated ------------------------------------------

MAX_WIDTH = 16384            # hidden, intermediate and projection sizes
MAX_LAYERS = 256
MAX_IMAGE_SIZE = 4096
MAX_PATCHES = 16384          # patches (tokens) per frame
MAX_FRAMES = 64
MAX_VOCAB = 1_000_000
MAX_TEXT_POSITIONS = 8192
MAX_TOKEN_ID = 10_000_000
MAX_LORA_R = 1024
MAX_CHANNELS = 64


@dataclass
class _Reader:
    """Typed reads of one config object: a bad value is recorded in ``p`` and the default stands in for it."""

    d: Mapping[str, Any]
    where: str
    p: Problems
    bad: set[str] = field(default_factory=set)

    def _got(self, key: str, checked: Any, default: Any) -> Any:
        """``checked`` (a getter's result), or ``default`` with ``key`` marked bad when the getter refused it."""
        if checked is None:
            self.bad.add(key)
            return default
        return checked

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        """An integer in ``lo..hi`` (integral floats such as ``112.0`` too: official configs write them)."""
        value = self.d.get(key)
        if value is None:
            return default
        return self._got(key, get_int(self.p, join(self.where, key), value, lo, hi, integral_float=True), default)

    def number(self, key: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
        """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
        value = self.d.get(key)
        if value is None:
            return default
        return self._got(key, get_float(self.p, join(self.where, key), value, lo, hi, lo_open=lo_open), default)

    def text(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        """A string (one of ``choices`` if given)."""
        value = self.d.get(key)
        if value is None:
            return default
        return self._got(key, get_str(self.p, join(self.where, key), value, choices=choices), default)

    def flag(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self.d.get(key)
        if value is None:
            return default
        return self._got(key, get_bool(self.p, join(self.where, key), value), default)

    def side(self, key: str, default: int, hi: int, *, pair_ok: tuple[int, int] | None = None) -> int:
        """A size given as an integer or, as the official code saves it after building, a square pair
        ``[n, n]``; ``pair_ok`` is one more pair accepted as is (audio's ``[num_mel_bins, target_length]``)."""
        value = self.d.get(key)
        if not isinstance(value, list):
            return self.integer(key, default, 1, hi)
        if pair_ok is not None and len(value) == 2 and tuple(value) == pair_ok:
            return default
        if len(value) == 2 and value[0] == value[1]:
            got = get_int(self.p, join(self.where, key), value[0], 1, hi, integral_float=True)
            return self._got(key, got, default)
        self.bad.add(key)
        self.p.add(join(self.where, key), f"expected an integer or a square pair [n, n], got {value[:4]!r}: "
                                          "lbedge runs square patches and frames only")
        return default

    def ok(self, *keys: str) -> bool:
        """Whether none of ``keys`` held a bad value."""
        return not self.bad.intersection(keys)


def _vision_config(vc: Mapping[str, Any], modality: str, p: Problems) -> VisionConfig:
    """The VisionConfig of ``vision_config``; problems go to ``p`` under ``vision_config.``."""
    r = _Reader(vc, "vision_config", p)
    d = r.integer("hidden_size", 768, 1, MAX_WIDTH)
    heads = r.integer("num_attention_heads", 12, 1, MAX_WIDTH)
    if r.ok("hidden_size", "num_attention_heads") and d % heads:
        p.add("vision_config.hidden_size", f"{d} is not divisible by num_attention_heads {heads}")
    rows, cols, image_size = _input_grid(r, modality)
    patch = r.side("patch_size", 32, MAX_IMAGE_SIZE)
    patches = (rows // patch) * (cols // patch)
    if not r.ok("patch_size", "image_size", "num_mel_bins", "target_length"):
        pass                                               # already reported: no follow-up problems
    elif min(rows, cols) < patch:
        grid = f"image_size {image_size}" if modality != "audio" else f"the mel grid {rows} x {cols}"
        p.add("vision_config.patch_size", f"{patch} is larger than {grid}")
    elif patches > MAX_PATCHES:
        p.add("vision_config.patch_size", f"{patch} cuts the input into {patches:,} patches (at most {MAX_PATCHES:,})")
    video = modality == "video"
    clip_type = r.text("clip_type", "vl")
    patch_3d = video and clip_type == "vl_new"
    num_frames = r.integer("num_frames", 1, 1, MAX_FRAMES) if video else 1
    tube = r.integer("tube_size", 1, 1, MAX_FRAMES) if patch_3d else 1
    if patch_3d and r.ok("num_frames", "tube_size") and num_frames % tube:
        p.add("vision_config.tube_size", f"num_frames {num_frames} is not a multiple of tube_size {tube}")
    add_time_attn = r.flag("add_time_attn", False)
    return VisionConfig(
        hidden_size=d, intermediate_size=r.integer("intermediate_size", 3072, 1, MAX_WIDTH),
        num_hidden_layers=r.integer("num_hidden_layers", 12, 1, MAX_LAYERS), num_attention_heads=heads,
        patch_size=patch, image_size=image_size, num_channels=r.integer("num_channels", 3, 1, MAX_CHANNELS),
        layer_norm_eps=r.number("layer_norm_eps", 1e-5, 0.0, 1.0, lo_open=True),
        hidden_act=r.text("hidden_act", "quick_gelu", HIDDEN_ACTS),
        grid=(max(rows // patch, 1), max(cols // patch, 1)), num_frames=num_frames,
        add_time_attn=add_time_attn and video, tube_size=tube, patch_3d=patch_3d,
        lora_r=0 if vc.get("lora_r", 2) in (None, 0) else r.integer("lora_r", 2, 0, MAX_LORA_R),  # official default 2
        lora_alpha=r.number("lora_alpha", 16.0, -1e6, 1e6),
    )


def _input_grid(r: _Reader, modality: str) -> tuple[int, int, int]:
    """Rows and columns of the tower's input (image side, or audio's mel bins x frames) and its image_size."""
    if modality != "audio":
        side = r.side("image_size", 224, MAX_IMAGE_SIZE)
        return side, side, side
    rows, cols = _mel_grid(r)
    return rows, cols, r.side("image_size", 224, MAX_IMAGE_SIZE, pair_ok=(rows, cols))


def _mel_grid(r: _Reader) -> tuple[int, int]:
    """An audio tower's ``num_mel_bins`` and ``target_length`` (both required)."""
    for key in ("num_mel_bins", "target_length"):
        if r.d.get(key) is None:
            r.bad.add(key)
            r.p.add(join(r.where, key), "missing (an audio tower needs num_mel_bins and target_length)")
    return (r.integer("num_mel_bins", 112, 1, _PRE_INTS["num_mel_bins"][1]),
            r.integer("target_length", 1036, 1, _PRE_INTS["target_length"][1]))


def _preprocess_config(vc: Mapping[str, Any], modality: str, p: Problems) -> PreprocessConfig:
    """The PreprocessConfig of ``vision_config``; problems go to ``p`` (and a default config is returned)."""
    seen = _Reader(vc, "vision_config", Problems())      # fields _vision_config has already checked and reported
    r = _Reader(vc, "vision_config", p)
    kw: dict[str, Any] = {"modality": modality}
    if modality == "audio":
        rows, cols = _mel_grid(seen)
        kw.update(sample_rate=r.integer("audio_sample_rate", 16000, *_PRE_INTS["sample_rate"]), num_mel_bins=rows,
                  target_length=cols, audio_mean=r.number("audio_mean", -4.2677393, -1e6, 1e6),
                  audio_std=r.number("audio_std", 4.5689974, 0.0, 1e6, lo_open=True))
    else:
        kw["size"] = seen.side("image_size", 224, MAX_IMAGE_SIZE)
    if modality == "depth":
        kw["max_depth"] = r.number("max_depth", 10.0, 0.0, 1e9)
    if modality == "video":
        kw.update(num_frames=seen.integer("num_frames", 8, 1, MAX_FRAMES), interpolation="bilinear")
    problems = preprocess_problems({**_PRE_DEFAULTS, **kw})
    if problems:
        p.extend("preprocessing (from vision_config)", problems)
        return PreprocessConfig(modality if modality in MODALITIES else "image")
    return PreprocessConfig(**kw)


# --- the exact parameter count a config implies -------------------------------------------------------------

def _layer_parameters(d: int, mlp: int) -> int:
    """One transformer layer: q/k/v/out projections with biases, two LayerNorms, the two-layer MLP."""
    return 4 * (d * d + d) + 2 * (2 * d) + (d * mlp + mlp) + (mlp * d + d)


def vision_parameters(v: VisionConfig) -> int:
    """Parameters of the vision tower (without its projection)."""
    d, p = v.hidden_size, v.patch_size
    patch = d * v.num_channels * p * p * (v.tube_size if v.patch_3d else 1)
    cls_token = d * (v.temporal_tokens if v.patch_3d else 1)
    embeddings = patch + cls_token + v.num_positions * d
    layer = _layer_parameters(d, v.intermediate_size)
    if v.add_time_attn:           # per layer: temporal embedding, temporal attention and its LayerNorm
        layer += v.temporal_tokens * d + 4 * (d * d + d) + 2 * d
    return embeddings + 2 * (2 * d) + v.num_hidden_layers * layer


def text_parameters(t: TextConfig) -> int:
    """Parameters of the text tower (without its projection): CLIP's causal transformer or a BERT encoder."""
    d = t.hidden_size
    embeddings = (t.vocab_size + t.max_position_embeddings) * d + 2 * d      # + final LayerNorm / embedding LN
    if t.family == "bert":
        embeddings += t.type_vocab_size * d
    return embeddings + t.num_hidden_layers * _layer_parameters(d, t.intermediate_size)


def count_parameters(cfg: ModelConfig) -> int:
    """The exact number of parameters (tensor elements) of the LanguageBindModel ``cfg`` describes: both towers,
    both projections and the logit scale. Computed from the sizes alone, before anything is allocated."""
    projections = (cfg.vision.hidden_size + cfg.text.hidden_size) * cfg.projection_dim
    return vision_parameters(cfg.vision) + text_parameters(cfg.text) + projections + 1
