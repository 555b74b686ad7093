"""Model and preprocessing configuration, read from an official LanguageBind ``config.json``.

One ``VisionConfig`` describes every LanguageBind vision tower (image, depth, thermal,
audio, video); the modality only changes its input grid, frame handling and the
preprocessing parameters collected in ``PreprocessConfig``. Every preprocessing constant
has exactly one home: the ``PreprocessConfig`` built here from the checkpoint's config.

Everything is validated before anything is allocated: a ``PreprocessConfig`` checks its fields when it is
built (:func:`preprocess_problems`), and :meth:`ModelConfig.from_dict` checks every type and range of a
``config.json`` (bounds: the ``MAX_*`` constants), reports every problem at once, and refuses a model whose
exact parameter count (:func:`count_parameters`) is over ``limits().max_model_params``.

Each official ``config.json`` key is declared once, in the key tables (:class:`ConfigKey` rows: ``MODEL_KEYS``,
``VISION_KEYS``, ``PREPROCESS_KEYS``, ``TEXT_KEYS``): the field it fills, its type and range, and what a
config.json without it means (the default of the official LanguageBind / Hugging Face config class). The parser
reads and :meth:`ModelConfig.to_dict` writes through them, and the dataclass defaults are those defaults
(``tests/test_config_validation.py`` checks it).
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
HIDDEN_ACTS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh")  # what lbedge.models.layers implements

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything the deterministic inference preprocessing of one modality needs."""

    modality: str
    size: int = 224  # short side after resize, and crop size
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    interpolation: str = "bicubic"  # image/depth/thermal: bicubic; video: bilinear
    # depth
    depth_scale: float = 1000.0  # input unit -> metres (input in millimetres)
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
    # video: LanguageBind_Video's 8 frames per clip (a config.json without num_frames means the official 1)
    num_frames: int = 8

    def __post_init__(self) -> None:
        problems = preprocess_problems(asdict(self))
        if problems:
            raise InputError(
                f"invalid preprocessing config: {problems.summary()}. These values come from a "
                "checkpoint's config.json or a bundle manifest's preprocess section: fix or rebuild it"
            )
        for f in fields(self):  # plain Python numbers (numpy ones would not serialise to JSON)
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
_PRE_INTS = {
    "size": (1, 4096),
    "sample_rate": (1000, 384_000),
    "num_mel_bins": (1, 1024),
    "target_length": (1, 16384),
    "num_frames": (1, 64),
}
_PRE_FLOATS = {
    "depth_scale": (0.0, 1e9, True),
    "min_depth": (0.0, 1e9, True),
    "max_depth": (0.0, 1e9, False),
    "audio_mean": (-1e6, 1e6, False),
    "audio_std": (0.0, 1e6, True),
    "frame_length_ms": (0.0, 1000.0, True),
    "frame_shift_ms": (0.0, 1000.0, True),
}
_PRE_DEFAULTS = {f.name: f.default for f in fields(PreprocessConfig) if f.default is not MISSING}


def preprocess_problems(values: Mapping[str, Any]) -> Problems:
    """Every problem of the PreprocessConfig fields ``values`` (any types), each under its field name."""
    p = Problems()
    get_str(p, "modality", values.get("modality"), choices=MODALITIES)
    get_str(p, "interpolation", values.get("interpolation", "bicubic"), choices=INTERPOLATIONS)
    for name, (lo, hi) in _PRE_INTS.items():
        if name in values:
            get_int(p, name, values[name], lo, hi)
    got = {
        name: get_float(p, name, values[name], lo, hi, lo_open=open_) if name in values else None
        for name, (lo, hi, open_) in _PRE_FLOATS.items()
    }
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
    ok = (
        not isinstance(value, (str, bytes, Mapping))
        and hasattr(value, "__len__")
        and len(value) == 3
        and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
            for v in value
        )
    )
    if not ok:
        what = "positive finite numbers" if positive else "finite numbers"
        got = show(list(value) if isinstance(value, tuple) else value)
        p.add(name, f"expected 3 {what} (one per colour channel), got {got}")


@dataclass(frozen=True)
class VisionConfig:
    """One LanguageBind vision tower (a CLIP ViT, optionally with temporal attention).

    The defaults are the official config class's (``VISION_KEYS``): a ViT-B/32 at 224 pixels, except ``lora_r``.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 32
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    # modality extras
    grid: tuple[int, int] = (7, 7)  # patch grid (rows, cols); audio: (mel_bins, target_length) / patch
    num_frames: int = 1  # video frames per clip
    add_time_attn: bool = False  # LanguageBind_Video temporal attention in every layer
    tube_size: int = 1  # V1.5 3D "tube" patch embedding (clip_type "vl_new")
    patch_3d: bool = False
    # LoRA adapters in the checkpoint file (merged at load time). A tower built in code has none; a config.json
    # without lora_r means the official 2
    lora_r: int = 0
    lora_alpha: float = 16.0

    @property
    def temporal_tokens(self) -> int:
        """Number of per-frame token groups the encoder sees (frames / tube size)."""
        return self.num_frames // self.tube_size if self.patch_3d else self.num_frames

    @property
    def num_positions(self) -> int:
        return self.grid[0] * self.grid[1] + 1


@dataclass(frozen=True)
class TextConfig:
    """The text tower. ``family="clip"``: LanguageBind's CLIP text transformer (causal, 77 tokens, EOS pooling,
    BPE). ``family="bert"``: a BERT sentence encoder such as all-MiniLM-L6-v2 (bidirectional, post-LN, mean
    pooling over real tokens, WordPiece ``tokenizer.json``), ``max_length`` tokens per prompt.

    The defaults are the official CLIP text config class's (``TEXT_KEYS["clip"]``); a BERT one is read from its
    config.json (``TEXT_KEYS["bert"]``)."""

    family: str = "clip"
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    bos_token_id: int = 49406  # BERT: [CLS]
    eos_token_id: int = 49407  # BERT: [SEP]
    pad_token_id: int = 1  # BERT's [PAD] marks padding; CLIP pads with EOS (see ``pad_id``)
    type_vocab_size: int = 2  # BERT only
    max_length: int = 77  # tokens per prompt (CLIP: all max_position_embeddings)

    @property
    def pad_id(self) -> int:
        """The id that fills a prompt after its last token."""
        return self.eos_token_id if self.family == "clip" else self.pad_token_id

    @property
    def tokenizer_files(self) -> tuple[str, ...]:
        """The files a checkpoint or bundle needs for this family's tokenizer."""
        return ("vocab.json", "merges.txt") if self.family == "clip" else ("tokenizer.json",)


def text_config_from_dict(
    tc: Mapping[str, Any], *, where: str = "text_config", problems: Problems | None = None
) -> TextConfig:
    """A ``text_config`` (LanguageBind's CLIP one, or a BERT one with ``model_type: bert``) as a TextConfig.

    Every type and range is checked. With ``problems``, each problem is recorded there (under JSON path
    ``where``) and a best-effort config returned; without, they raise one CheckpointError.
    """
    p = problems if problems is not None else Problems()
    cfg = _text_config(tc, where, p)
    if problems is None and p:
        raise CheckpointError(
            f"unusable text config ({len(p)} problem(s)): {p.summary()}. Fix config.json or re-download the model"
        )
    return cfg


def _text_config(tc: Mapping[str, Any], where: str, p: Problems) -> TextConfig:
    """The TextConfig of ``tc``; problems go to ``p`` (defaults stand in for bad values)."""
    family = "bert" if tc.get("model_type") == "bert" else "clip"
    r = _Reader(tc, where, p)
    got = {row.field: r.read(row) for row in TEXT_KEYS[family]}
    d, heads = got["hidden_size"], got["num_attention_heads"]
    if r.ok("hidden_size", "num_attention_heads") and d % heads:
        p.add(join(where, "hidden_size"), f"{d} is not divisible by num_attention_heads {heads}")
    positions = got["max_position_embeddings"]
    got["max_length"] = min(positions, got.get("max_length", positions))  # CLIP prompts fill every position
    return TextConfig(family=family, **got)


def text_config_to_dict(t: TextConfig, projection_dim: int) -> dict[str, Any]:
    """The ``text_config`` of ``config.json`` (official CLIP layout, or the BERT one)."""
    family = {"model_type": "bert"} if t.family == "bert" else {}
    return {**family, **_written(TEXT_KEYS[t.family], t), "projection_dim": projection_dim}


@dataclass(frozen=True)
class ModelConfig:
    """A LanguageBind model: one vision tower, the text tower, projections and logit scale."""

    modality: str
    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 512
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
            raise CheckpointError(f"{source} has no vision_config/text_config: not a LanguageBind checkpoint config")
        p = Problems()
        vc = get_dict(p, "vision_config", raw["vision_config"] or {}) or {}
        tc = get_dict(p, "text_config", raw["text_config"] or {}) or {}
        modality = detect_modality(raw)
        vision = _vision_config(vc, modality, p)
        text = _text_config(tc, "text_config", p)
        pre = _preprocess_config(vc, modality, p)
        top = _Reader(raw, "", p)
        model = {row.field: top.read(row) for row in MODEL_KEYS}
        if p:
            raise CheckpointError(
                f"{source} is not a usable LanguageBind config ({len(p)} problem(s)): "
                f"{p.summary()}. Fix config.json or re-download the checkpoint"
            )
        cfg = cls(modality=modality, vision=vision, text=text, preprocess=pre, **model)
        n = count_parameters(cfg)
        cap = limits().max_model_params
        if n > cap:
            raise CheckpointError(
                f"{source} declares a model of {n:,} parameters, over the max_model_params limit "
                f"of {cap:,}: check config.json ({hint('max_model_params')})"
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the official LanguageBind ``config.json`` layout (what :meth:`from_dict` reads back)."""
        m = self.modality
        vision = {
            **_written(VISION_KEYS, self.vision, m),
            **_written(PREPROCESS_KEYS, self.preprocess, m),
            "projection_dim": self.projection_dim,
            "lora_dropout": 0.0,
            "force_patch_dropout": 0.0,
        }
        if m == "video":
            vision["video_decode_backend"] = "decord"
        arch = "LanguageBind" + m.capitalize()
        return {
            "architectures": [arch],
            "model_type": arch,
            **_written(MODEL_KEYS, self, m),
            "text_config": text_config_to_dict(self.text, self.projection_dim),
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

MAX_WIDTH = 16384  # hidden, intermediate and projection sizes
MAX_LAYERS = 256
MAX_IMAGE_SIZE = 4096
MAX_PATCHES = 16384  # patches (tokens) per frame
MAX_FRAMES = 64
MAX_VOCAB = 1_000_000
MAX_TEXT_POSITIONS = 8192
MAX_TOKEN_ID = 10_000_000
MAX_LORA_R = 1024
MAX_CHANNELS = 64


# --- the keys of an official config.json: one row each ----------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    """One key of an official ``config.json`` section and the lbedge dataclass field it fills.

    ``default`` is what a config.json without the key means: the default of the official LanguageBind / Hugging
    Face config class (LanguageBind's published value where that class has none). A ``required`` key must be
    present; its default only stands in while the other problems are collected. ``kind``: ``int``, ``float``,
    ``str``, ``bool``, or ``side`` (an integer, or the square pair ``[n, n]`` the official code saves). ``only``
    limits the key to some modalities: it is read and written for those alone. With ``flag``, the field is a
    bool that is true exactly when the key holds ``flag``.
    """

    key: str
    field: str
    kind: str
    default: Any
    lo: float = 0
    hi: float = 0
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    required: bool = False
    flag: str = ""

    def applies(self, modality: str) -> bool:
        """Whether a ``modality`` config reads and writes this key."""
        return not self.only or modality in self.only


def _preprocess_key(key: str, field: str, default: Any, only: tuple[str, ...], **kw: Any) -> ConfigKey:
    """A key filling a PreprocessConfig field, with that field's accepted range."""
    if field in _PRE_INTS:
        return ConfigKey(key, field, "int", default, *_PRE_INTS[field], only=only, **kw)
    lo, hi, lo_open = _PRE_FLOATS[field]
    return ConfigKey(key, field, "float", default, lo, hi, lo_open, only=only, **kw)


def _text_keys(
    *, vocab: int, width: int, mlp: int, layers: int, heads: int, positions: int, eps: float, act: str
) -> tuple[ConfigKey, ...]:
    """The sizes every text tower's config.json holds, with one family's defaults."""
    return (
        ConfigKey("vocab_size", "vocab_size", "int", vocab, 1, MAX_VOCAB),
        ConfigKey("hidden_size", "hidden_size", "int", width, 1, MAX_WIDTH),
        ConfigKey("intermediate_size", "intermediate_size", "int", mlp, 1, MAX_WIDTH),
        ConfigKey("num_hidden_layers", "num_hidden_layers", "int", layers, 1, MAX_LAYERS),
        ConfigKey("num_attention_heads", "num_attention_heads", "int", heads, 1, MAX_WIDTH),
        ConfigKey("max_position_embeddings", "max_position_embeddings", "int", positions, 1, MAX_TEXT_POSITIONS),
        ConfigKey("layer_norm_eps", "layer_norm_eps", "float", eps, 0.0, 1.0, lo_open=True),
        ConfigKey("hidden_act", "hidden_act", "str", act, choices=HIDDEN_ACTS),
    )


#: top level -> ModelConfig
MODEL_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("projection_dim", "projection_dim", "int", 512, 1, MAX_WIDTH),
    ConfigKey("logit_scale_init_value", "logit_scale_init", "float", 2.6592, -100.0, 100.0),
)

#: vision_config -> VisionConfig (the official CLIPVisionConfig of LanguageBind: ViT-B/32 defaults)
VISION_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("hidden_size", "hidden_size", "int", 768, 1, MAX_WIDTH),
    ConfigKey("intermediate_size", "intermediate_size", "int", 3072, 1, MAX_WIDTH),
    ConfigKey("num_hidden_layers", "num_hidden_layers", "int", 12, 1, MAX_LAYERS),
    ConfigKey("num_attention_heads", "num_attention_heads", "int", 12, 1, MAX_WIDTH),
    ConfigKey("patch_size", "patch_size", "side", 32, 1, MAX_IMAGE_SIZE),
    ConfigKey("image_size", "image_size", "side", 224, 1, MAX_IMAGE_SIZE),
    ConfigKey("num_channels", "num_channels", "int", 3, 1, MAX_CHANNELS),
    ConfigKey("layer_norm_eps", "layer_norm_eps", "float", 1e-5, 0.0, 1.0, lo_open=True),
    ConfigKey("hidden_act", "hidden_act", "str", "quick_gelu", choices=HIDDEN_ACTS),
    ConfigKey("add_time_attn", "add_time_attn", "bool", False),
    ConfigKey("num_frames", "num_frames", "int", 1, 1, MAX_FRAMES, only=("video",)),
    ConfigKey("clip_type", "patch_3d", "str", "vl", only=("video",), flag="vl_new"),
    ConfigKey("tube_size", "tube_size", "int", 1, 1, MAX_FRAMES, only=("video",)),
    ConfigKey("lora_r", "lora_r", "int", 2, 0, MAX_LORA_R),
    ConfigKey("lora_alpha", "lora_alpha", "float", 16.0, -1e6, 1e6),
)

#: vision_config -> PreprocessConfig (``size`` is the tower's image_size, video's ``num_frames`` the tower's)
PREPROCESS_KEYS: tuple[ConfigKey, ...] = (
    _preprocess_key("num_mel_bins", "num_mel_bins", 112, ("audio",), required=True),
    _preprocess_key("target_length", "target_length", 1036, ("audio",), required=True),
    _preprocess_key("audio_sample_rate", "sample_rate", 16000, ("audio",)),
    _preprocess_key("audio_mean", "audio_mean", -4.2677393, ("audio",)),
    _preprocess_key("audio_std", "audio_std", 4.5689974, ("audio",)),
    _preprocess_key("max_depth", "max_depth", 10.0, ("depth",)),
)

#: text_config -> TextConfig, per family: LanguageBind's CLIPTextConfig, or a Hugging Face BertConfig (whose
#: token ids and ``max_length``, lbedge's own keys, default to the BERT vocabulary's and 64 tokens)
TEXT_KEYS: dict[str, tuple[ConfigKey, ...]] = {
    "clip": _text_keys(vocab=49408, width=512, mlp=2048, layers=12, heads=8, positions=77, eps=1e-5, act="quick_gelu")
    + (
        ConfigKey("bos_token_id", "bos_token_id", "int", 49406, 0, MAX_TOKEN_ID),
        ConfigKey("eos_token_id", "eos_token_id", "int", 49407, 0, MAX_TOKEN_ID),
        ConfigKey("pad_token_id", "pad_token_id", "int", 1, 0, MAX_TOKEN_ID),
    ),
    "bert": _text_keys(vocab=30522, width=768, mlp=3072, layers=12, heads=12, positions=512, eps=1e-12, act="gelu")
    + (
        ConfigKey("cls_token_id", "bos_token_id", "int", 101, 0, MAX_TOKEN_ID),
        ConfigKey("sep_token_id", "eos_token_id", "int", 102, 0, MAX_TOKEN_ID),
        ConfigKey("pad_token_id", "pad_token_id", "int", 0, 0, MAX_TOKEN_ID),
        ConfigKey("type_vocab_size", "type_vocab_size", "int", 2, 1, 1024),
        ConfigKey("max_length", "max_length", "int", 64, 1, MAX_TEXT_POSITIONS),
    ),
}
TEXT_FAMILIES = tuple(TEXT_KEYS)

_VISION = {row.key: row for row in VISION_KEYS}
_PREPROCESS = {row.key: row for row in PREPROCESS_KEYS}


def _written(rows: tuple[ConfigKey, ...], obj: Any, modality: str = "") -> dict[str, Any]:
    """The config.json entries of ``rows`` holding ``obj``'s fields (a ``modality`` config's keys only)."""
    out = {}
    for row in rows:
        if row.applies(modality):
            value = getattr(obj, row.field)
            out[row.key] = (row.flag if value else row.default) if row.flag else value
    return out


@dataclass
class _Reader:
    """Typed reads of one config object: a bad value is recorded in ``p`` and the default stands in for it."""

    d: Mapping[str, Any]
    where: str
    p: Problems
    bad: set[str] = field(default_factory=set)
    pairs: dict[str, tuple[int, int]] = field(default_factory=dict)  # one more pair accepted per side key

    def read(self, row: ConfigKey) -> Any:
        """The checked value of ``row.key``; its default when absent (null) or bad (the problem is recorded)."""
        value = self.d.get(row.key)
        if value is None:
            return row.default == row.flag if row.flag else row.default
        where = join(self.where, row.key)
        if row.kind == "side":
            return self._side(row, value)
        if row.kind == "int":
            got = get_int(self.p, where, value, int(row.lo), int(row.hi), integral_float=True)
        elif row.kind == "float":
            got = get_float(self.p, where, value, row.lo, row.hi, lo_open=row.lo_open)
        elif row.kind == "bool":
            got = get_bool(self.p, where, value)
        else:
            got = get_str(self.p, where, value, choices=row.choices or None)
        if got is None:
            self.bad.add(row.key)
            got = row.default
        return got == row.flag if row.flag else got

    def _side(self, row: ConfigKey, value: Any) -> int:
        """A size given as an integer or, as the official code saves it after building, a square pair ``[n, n]``
        (or this key's pair in ``pairs``: audio's ``[num_mel_bins, target_length]``, read as the default)."""
        where = join(self.where, row.key)
        if not isinstance(value, list):
            got = get_int(self.p, where, value, int(row.lo), int(row.hi), integral_float=True)
        elif row.key in self.pairs and len(value) == 2 and tuple(value) == self.pairs[row.key]:
            return row.default
        elif len(value) == 2 and value[0] == value[1]:
            got = get_int(self.p, where, value[0], int(row.lo), int(row.hi), integral_float=True)
        else:
            self.p.add(
                where,
                f"expected an integer or a square pair [n, n], got {value[:4]!r}: lbedge runs square "
                "patches and frames only",
            )
            got = None
        if got is None:
            self.bad.add(row.key)
            return row.default
        return got

    def ok(self, *keys: str) -> bool:
        """Whether none of ``keys`` held a bad value."""
        return not self.bad.intersection(keys)


def _vision_config(vc: Mapping[str, Any], modality: str, p: Problems) -> VisionConfig:
    """The VisionConfig of ``vision_config``; problems go to ``p`` under ``vision_config.``."""
    r = _Reader(vc, "vision_config", p)
    if modality == "audio":
        rows, cols = _mel_grid(r)
        r.pairs["image_size"] = (rows, cols)
    got = {row.field: r.read(row) for row in VISION_KEYS if row.applies(modality)}
    if "lora_r" in vc and vc["lora_r"] is None:  # null: no adapters (absent: the official 2)
        got["lora_r"] = 0
    d, heads, patch = got["hidden_size"], got["num_attention_heads"], got["patch_size"]
    if r.ok("hidden_size", "num_attention_heads") and d % heads:
        p.add("vision_config.hidden_size", f"{d} is not divisible by num_attention_heads {heads}")
    if modality != "audio":
        rows = cols = got["image_size"]
    patches = (rows // patch) * (cols // patch)
    if not r.ok("patch_size", "image_size", "num_mel_bins", "target_length"):
        pass  # already reported: no follow-up problems
    elif min(rows, cols) < patch:
        grid = f"image_size {got['image_size']}" if modality != "audio" else f"the mel grid {rows} x {cols}"
        p.add("vision_config.patch_size", f"{patch} is larger than {grid}")
    elif patches > MAX_PATCHES:
        p.add("vision_config.patch_size", f"{patch} cuts the input into {patches:,} patches (at most {MAX_PATCHES:,})")
    if not got.get("patch_3d"):
        got["tube_size"] = _VISION["tube_size"].default  # a tube only exists in the V1.5 3D patch embedding
    elif r.ok("num_frames", "tube_size") and got["num_frames"] % got["tube_size"]:
        p.add(
            "vision_config.tube_size",
            f"num_frames {got['num_frames']} is not a multiple of tube_size {got['tube_size']}",
        )
    got["add_time_attn"] = got["add_time_attn"] and modality == "video"
    return VisionConfig(grid=(max(rows // patch, 1), max(cols // patch, 1)), **got)


def _mel_grid(r: _Reader) -> tuple[int, int]:
    """An audio tower's ``num_mel_bins`` and ``target_length`` (both required)."""
    keys = [_PREPROCESS["num_mel_bins"], _PREPROCESS["target_length"]]
    for row in keys:
        if r.d.get(row.key) is None:
            r.bad.add(row.key)
            r.p.add(join(r.where, row.key), "missing (an audio tower needs num_mel_bins and target_length)")
    return r.read(keys[0]), r.read(keys[1])


def _preprocess_config(vc: Mapping[str, Any], modality: str, p: Problems) -> PreprocessConfig:
    """The PreprocessConfig of ``vision_config``; problems go to ``p`` (and a default config is returned)."""
    seen = _Reader(vc, "vision_config", Problems())  # keys _vision_config has already checked and reported
    r = _Reader(vc, "vision_config", p)
    kw: dict[str, Any] = {"modality": modality}
    if modality == "audio":
        kw["num_mel_bins"], kw["target_length"] = _mel_grid(seen)
    else:
        kw["size"] = seen.read(_VISION["image_size"])
    if modality == "video":
        kw.update(num_frames=seen.read(_VISION["num_frames"]), interpolation="bilinear")
    kw.update({row.field: r.read(row) for row in PREPROCESS_KEYS if row.applies(modality) and not row.required})
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
    if v.add_time_attn:  # per layer: temporal embedding, temporal attention and its LayerNorm
        layer += v.temporal_tokens * d + 4 * (d * d + d) + 2 * d
    return embeddings + 2 * (2 * d) + v.num_hidden_layers * layer


def text_parameters(t: TextConfig) -> int:
    """Parameters of the text tower (without its projection): CLIP's causal transformer or a BERT encoder."""
    d = t.hidden_size
    embeddings = (t.vocab_size + t.max_position_embeddings) * d + 2 * d  # + final LayerNorm / embedding LN
    if t.family == "bert":
        embeddings += t.type_vocab_size * d
    return embeddings + t.num_hidden_layers * _layer_parameters(d, t.intermediate_size)


def count_parameters(cfg: ModelConfig) -> int:
    """The exact number of parameters (tensor elements) of the LanguageBindModel ``cfg`` describes: both towers,
    both projections and the logit scale. Computed from the sizes alone, before anything is allocated."""
    projections = (cfg.vision.hidden_size + cfg.text.hidden_size) * cfg.projection_dim
    return vision_parameters(cfg.vision) + text_parameters(cfg.text) + projections + 1
