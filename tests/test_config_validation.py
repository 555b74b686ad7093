"""config.json and PreprocessConfig validation: every problem named at once, before anything is allocated; the
exact parameter count of a config; configs saved by the official code; fuzzing of config dicts."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import resource
import shutil

import pytest

from conftest import OFFICIAL, tiny_config_dict

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lbedge import CheckpointError, InputError, LBEdgeError  # noqa: E402
from lbedge.checkpoint import load_model  # noqa: E402
from lbedge.config import (  # noqa: E402
    MODEL_KEYS,
    PREPROCESS_KEYS,
    TEXT_KEYS,
    VISION_KEYS,
    ModelConfig,
    PreprocessConfig,
    TextConfig,
    VisionConfig,
    count_parameters,
    text_config_from_dict,
)
from lbedge.limits import set_limits  # noqa: E402
from lbedge.models.towers import LanguageBindModel  # noqa: E402

BERT_TEXT = {
    "model_type": "bert",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 50,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
}


def config(modality: str = "image", text: dict | None = None, **vision) -> dict:
    raw = tiny_config_dict(modality, vocab_size=100, **vision)
    if text is not None:
        raw["text_config"] = text
    return raw


def problems_of(raw: dict) -> str:
    with pytest.raises(CheckpointError) as exc:
        ModelConfig.from_dict(raw, source="cfg.json")
    return str(exc.value)


def copy_checkpoint(tmp_path, name: str):
    return shutil.copytree(OFFICIAL / name, tmp_path / name)


def edit_config(folder, fn) -> None:
    raw = json.loads((folder / "config.json").read_text())
    fn(raw)
    (folder / "config.json").write_text(json.dumps(raw))


# --- the exact parameter count ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        config("image"),
        config("audio"),
        config("video"),  # video: temporal attention
        config("video", clip_type="vl_new", tube_size=2),
        config("depth", lora_r=2),
        config("image", text=BERT_TEXT),
        config("thermal", image_size=[112, 112], patch_size=[16, 16]),
    ],
    ids=["image", "audio", "video", "video-v1.5-tube2", "depth-lora", "bert-text", "pairs"],
)
def test_parameter_count_is_exact(raw):
    cfg = ModelConfig.from_dict(raw)
    model = LanguageBindModel(cfg)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert count_parameters(cfg) == sum(v.numel() for v in model.state_dict().values())


def test_parameter_count_of_the_official_fixtures():
    for name in ("image", "audio", "video", "video_v15", "depth", "thermal"):
        cfg = ModelConfig.from_json(OFFICIAL / name)
        assert count_parameters(cfg) == sum(p.numel() for p in LanguageBindModel(cfg).parameters()), name


# --- config.json: types and ranges, every problem at once ------------------------------------------------------


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(num_attention_heads=0), r"vision_config\.num_attention_heads: expected an integer in 1\.\.16384, got 0"),
        (dict(patch_size=0), r"vision_config\.patch_size: expected an integer in 1\.\.4096, got 0"),
        (dict(patch_size=300), r"vision_config\.patch_size: 300 is larger than image_size 224"),
        (dict(image_size=4096, patch_size=1), r"patch_size: 1 cuts the input into 16,777,216 patches"),
        (dict(num_hidden_layers=1_000_000), r"num_hidden_layers: expected an integer in 1\.\.256, got 1000000"),
        (dict(hidden_size=100_000), r"hidden_size: expected an integer in 1\.\.16384"),
        (dict(hidden_size=30, num_attention_heads=4), r"hidden_size: 30 is not divisible by num_attention_heads 4"),
        (dict(hidden_act="relu"), r"hidden_act: expected one of quick_gelu, gelu"),
        (dict(layer_norm_eps=0), r"layer_norm_eps: expected a finite number in \(0, 1\]"),
        (dict(layer_norm_eps=float("nan")), r"layer_norm_eps: expected a finite number"),
        (dict(image_size=[224, 200]), r"image_size: expected an integer or a square pair \[n, n\], got \[224, 200\]"),
        (dict(image_size="224"), r"image_size: expected an integer"),
        (dict(add_time_attn="yes"), r"add_time_attn: expected true or false"),
        (dict(lora_r=-1), r"lora_r: expected an integer in 0\.\.1024"),
        (dict(num_channels=0), r"num_channels: expected an integer in 1\.\.64"),
    ],
)
def test_vision_config_problems_are_named(change, match):
    msg = problems_of(config("image", **change))
    assert "cfg.json is not a usable LanguageBind config (1 problem(s))" in msg and re.search(match, msg), msg


def test_video_audio_and_text_problems():
    assert "tube_size: num_frames 8 is not a multiple of tube_size 3" in problems_of(
        config("video", clip_type="vl_new", tube_size=3)
    )
    assert "num_frames: expected an integer in 1..64, got 65" in problems_of(config("video", num_frames=65))
    audio = config("audio")
    del audio["vision_config"]["num_mel_bins"]
    assert "vision_config.num_mel_bins: missing (an audio tower needs" in problems_of(audio)
    assert "audio_std: expected a finite number in (0" in problems_of(config("audio", audio_std=0))
    assert "preprocessing (from vision_config).min_depth: must be below max_depth" in problems_of(
        config("depth", max_depth=0.001)
    )
    for key, value, match in [
        ("vocab_size", 10**9, "text_config.vocab_size: expected an integer in 1..1000000"),
        ("max_position_embeddings", 10**6, "max_position_embeddings: expected an integer"),
        ("num_attention_heads", 3, "text_config.hidden_size: 8 is not divisible by"),
        ("hidden_act", 7, "text_config.hidden_act: expected a string"),
    ]:
        raw = config("image")
        raw["text_config"][key] = value
        assert match in problems_of(raw), key
    with pytest.raises(CheckpointError, match=r"type_vocab_size: expected an integer in 1\.\.1024"):
        text_config_from_dict({**BERT_TEXT, "type_vocab_size": 0})


def test_every_problem_is_listed_and_types_are_checked():
    raw = config("image", num_attention_heads=0, patch_size=0, hidden_act="relu")
    raw["text_config"]["num_hidden_layers"] = 1_000_000
    raw["projection_dim"] = "8"
    msg = problems_of(raw)
    assert "(5 problem(s))" in msg
    for part in ("num_attention_heads", "patch_size", "hidden_act", "text_config.num_hidden_layers", "projection_dim"):
        assert part in msg
    for bad in ([1], {"vision_config": [1], "text_config": {}}, {"vision_config": {}, "text_config": "x"}):
        with pytest.raises(CheckpointError):
            ModelConfig.from_dict(bad)
    assert ModelConfig.from_dict({"vision_config": None, "text_config": {}, "architectures": 5}).modality == "image"


def test_max_model_params_limit():
    previous = set_limits(max_model_params=1000)
    try:
        with pytest.raises(CheckpointError, match=r"441,105 parameters, over the max_model_params limit.*set_limits"):
            ModelConfig.from_dict(tiny_config_dict("image"))
    finally:
        set_limits(max_model_params=previous.max_model_params)


# --- one home per default: the key tables, the dataclasses and to_dict ----------------------------------------

OFFICIAL_CONFIGS = sorted(p.parent.name for p in OFFICIAL.glob("*/config.json"))


@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_official_configs_round_trip(name, tmp_path):
    raw = json.loads((OFFICIAL / name / "config.json").read_text())
    cfg = ModelConfig.from_json(OFFICIAL / name)
    out = cfg.to_dict()
    (tmp_path / "config.json").write_text(json.dumps(out))
    assert ModelConfig.from_json(tmp_path) == cfg == ModelConfig.from_dict(out)
    assert out["projection_dim"] == raw["projection_dim"]
    assert out["logit_scale_init_value"] == raw["logit_scale_init_value"]
    tables = {"vision_config": VISION_KEYS + PREPROCESS_KEYS, "text_config": TEXT_KEYS[cfg.text.family]}
    for section, rows in tables.items():  # every key written that the official file holds: same value
        for row in rows:
            if row.key in out[section] and row.key in raw[section]:
                assert out[section][row.key] == raw[section][row.key], (section, row.key)


@pytest.mark.parametrize(
    "raw",
    [
        tiny_config_dict("image"),
        tiny_config_dict("thermal"),
        tiny_config_dict("depth", lora_r=2),
        tiny_config_dict("audio"),
        tiny_config_dict("video"),
        tiny_config_dict("video", clip_type="vl_new", tube_size=2),
        config("image", text=BERT_TEXT),
        config("image", image_size=[112, 112], patch_size=[16, 16]),
        {"vision_config": {}, "text_config": {}},
    ],
    ids=["image", "thermal", "depth-lora", "audio", "video", "video-v1.5-tube2", "bert-text", "pairs", "empty"],
)
def test_tiny_configs_round_trip(raw):
    cfg = ModelConfig.from_dict(raw)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_dataclass_defaults_are_the_key_tables_defaults():
    """A default lives in one place: each key table row's default is its dataclass field's default. Two fields
    differ on purpose: a tower built in code has no LoRA adapters, and PreprocessConfig("video") is
    LanguageBind_Video's 8-frame preprocessing, while a config.json without those keys means lora_r 2 and 1 frame."""
    on_purpose = {(VisionConfig, "lora_r"): (0, 2), (PreprocessConfig, "num_frames"): (8, 1)}
    vision = {row.key: row for row in VISION_KEYS}
    tower_keys = {"image_size": "size", "num_frames": "num_frames"}  # PreprocessConfig fields from the tower's
    tables = [
        (ModelConfig, MODEL_KEYS, {}),
        (VisionConfig, VISION_KEYS, {}),
        (TextConfig, TEXT_KEYS["clip"], {}),
        (PreprocessConfig, PREPROCESS_KEYS, {}),
        (PreprocessConfig, tuple(vision[k] for k in tower_keys), tower_keys),
    ]
    for cls, rows, rename in tables:
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for row in rows:
            name = rename.get(row.key, row.field)
            meant = row.default == row.flag if row.flag else row.default
            if (cls, name) in on_purpose:
                assert (defaults[name], meant) == on_purpose[cls, name]
            else:
                assert defaults[name] == meant, (cls.__name__, name, defaults[name], meant)
    v = VisionConfig()
    assert v.grid == (v.image_size // v.patch_size,) * 2
    empty = ModelConfig.from_dict({"vision_config": {}, "text_config": {}})
    assert empty == ModelConfig("image", VisionConfig(lora_r=2), TextConfig(), preprocess=PreprocessConfig("image"))
    bert = text_config_from_dict({"model_type": "bert"})
    assert (bert.hidden_size, bert.num_hidden_layers, bert.max_position_embeddings, bert.max_length) == (
        768,
        12,
        512,
        64,
    )


def test_key_tables_hold_the_hugging_face_class_defaults():
    """What a config.json without a key means is the official class's default."""
    transformers = pytest.importorskip("transformers")
    lbedge_own = {"cls_token_id", "sep_token_id", "max_length"}  # BERT keys lbedge adds to a text_config
    pairs = [
        (transformers.CLIPConfig(), MODEL_KEYS),
        (transformers.CLIPVisionConfig(), VISION_KEYS),
        (transformers.CLIPTextConfig(), TEXT_KEYS["clip"]),
        (transformers.BertConfig(), TEXT_KEYS["bert"]),
    ]
    compared = 0
    for official, rows in pairs:
        for row in rows:
            if row.key not in lbedge_own and hasattr(official, row.key):
                assert getattr(official, row.key) == row.default, (type(official).__name__, row.key)
                compared += 1
    assert compared >= 30


def test_a_video_config_without_num_frames_means_one_frame_everywhere():
    raw = config("video")
    del raw["vision_config"]["num_frames"]
    cfg = ModelConfig.from_dict(raw)
    assert cfg.vision.num_frames == cfg.preprocess.num_frames == 1 and cfg.preprocess.input_shape[1] == 1


# --- PreprocessConfig ----------------------------------------------------------------------------------------


def test_preprocess_config_validates_every_field():
    with pytest.raises(InputError) as exc:
        PreprocessConfig(
            "radar",
            size=0,
            mean=(0.5, 0.5),
            std=(1.0, 0.0, 1.0),
            interpolation="nearest",
            min_depth=5.0,
            max_depth=2.0,
            sample_rate=0,
            num_mel_bins=-1,
            target_length=10**6,
            frame_length_ms=float("nan"),
            frame_shift_ms=0.0,
            num_frames=65,
            depth_scale=-1.0,
        )
    msg = str(exc.value)
    for field in (
        "modality",
        "size",
        "mean",
        "std",
        "interpolation",
        "min_depth",
        "sample_rate",
        "num_mel_bins",
        "target_length",
        "frame_length_ms",
        "frame_shift_ms",
        "num_frames",
        "depth_scale",
    ):
        assert f"{field}:" in msg, field
    assert PreprocessConfig("depth", max_depth=0.0).max_depth == 0.0  # 0: each frame's own maximum
    assert PreprocessConfig("image", mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)
    with pytest.raises(InputError, match="less than one sample"):
        PreprocessConfig("audio", sample_rate=1000, frame_shift_ms=0.5)
    with pytest.raises(InputError, match="modality is missing"):
        PreprocessConfig.from_dict({"size": 224})
    with pytest.raises(InputError, match=r'size: expected an integer in 1\.\.4096, got "224"'):
        PreprocessConfig.from_dict({"modality": "image", "size": "224"})


# --- checkpoints: configs saved by the official code, and weights that cannot hold the config ---------------------


def test_official_save_pretrained_image_size_pairs_load(tmp_path):
    """The official classes turn vision_config.image_size into [224, 224] (audio: [mel bins, target length])
    when built, and save_pretrained writes that."""
    ref = load_model(OFFICIAL / "image")
    folder = copy_checkpoint(tmp_path, "image")
    edit_config(folder, lambda raw: raw["vision_config"].update(image_size=[224, 224]))
    model = load_model(folder)
    assert model.config.vision.image_size == 224 and model.config.preprocess.size == 224
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    audio = copy_checkpoint(tmp_path, "audio")
    edit_config(audio, lambda raw: raw["vision_config"].update(image_size=[112, 1036]))
    assert load_model(audio).config.vision.grid == ModelConfig.from_json(OFFICIAL / "audio").vision.grid
    edit_config(folder, lambda raw: raw["vision_config"].update(image_size=[224, 112]))
    with pytest.raises(CheckpointError, match="square pair"):
        load_model(folder)


@pytest.mark.parametrize("safetensors", [True, False])
def test_config_bigger_than_its_weights_is_refused_before_allocation(
    tmp_path, make_checkpoint, monkeypatch, safetensors
):
    # an 8192-wide, 24-layer config (about 13 G parameters, 52 GB of float32) beside tiny weights
    folder = make_checkpoint("image", safetensors=safetensors)
    edit_config(
        folder,
        lambda raw: raw["vision_config"].update(
            hidden_size=8192, intermediate_size=16384, num_hidden_layers=24, num_attention_heads=64
        ),
    )
    devices = []
    real_init = LanguageBindModel.__init__

    def spy(self, cfg):
        devices.append(torch.empty(0).device.type)
        real_init(self, cfg)

    monkeypatch.setattr(LanguageBindModel, "__init__", spy)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        CheckpointError,
        match=r"declares 12,\d{3},\d{3},\d{3} parameters but the weights in "
        r"\S+ hold at most 441,\d{3}: config and weights come from different "
        r"models \(.*mis-shaped key",
    ):
        load_model(folder)
    assert set(devices) <= {"meta"}  # never built for real
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000  # KiB: under 1 GB


def test_lora_tensors_beyond_the_config_are_fine():
    cfg = ModelConfig.from_json(OFFICIAL / "image")  # lora_r 2: the file holds adapters too
    held = sum(v.numel() for v in torch.load(OFFICIAL / "image" / "pytorch_model.bin", weights_only=True).values())
    assert held > count_parameters(cfg)
    assert load_model(OFFICIAL / "image").lora_pairs_merged > 0


def test_damaged_safetensors_headers_and_shard_indexes(tmp_path, make_checkpoint):
    folder = make_checkpoint("image")
    data = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    for damaged in (
        (10**12).to_bytes(8, "little") + data[8:],  # header longer than the file
        data[:8] + b"[" * n + data[8 + n :],  # header not an object
        data[:8] + data[8 : 8 + n].replace(b'"shape":[', b'"shape":[99999,', 1) + data[8 + n :],
    ):
        (folder / "model.safetensors").write_bytes(damaged)
        with pytest.raises(CheckpointError, match="safetensors"):
            load_model(folder)
    (folder / "model.safetensors").write_bytes(data)
    (folder / "model.safetensors").rename(folder / "model-00001.safetensors")
    for shard in ("../outside.safetensors", "/etc/passwd", "model.safetensors.index.json"):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
        with pytest.raises(CheckpointError, match="shard"):
            load_model(folder)


def test_config_json_bounds(tmp_path):
    folder = copy_checkpoint(tmp_path, "thermal")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="too deeply"):
        load_model(folder)
    (folder / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps(tiny_config_dict("image")) + " " * 5000)
    previous = set_limits(max_json_bytes=4000)
    try:
        with pytest.raises(CheckpointError, match="max_json_bytes"):
            load_model(folder)
    finally:
        set_limits(max_json_bytes=previous.max_json_bytes)


# --- fuzzing ----------------------------------------------------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**7),
    st.floats(),
    st.text(max_size=8),
    st.lists(st.integers(-2, 300), max_size=3),
    st.sampled_from([0, 1, 2, 14, 224, 8192, 2**40]),
)


def mutated(base: dict, draw) -> dict:
    raw = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["vision_config", "text_config", None]))
        target = raw if section is None else raw[section]
        if not isinstance(target, dict):  # replaced whole by an earlier mutation
            continue
        key = draw(st.sampled_from(sorted(target) + ["num_mel_bins", "tube_size", "clip_type", "model_type"]))
        target[key] = draw(VALUES)
    return raw


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), modality=st.sampled_from(["image", "audio", "video", "depth"]))
def test_fuzzed_config_dicts_build_or_raise_checkpoint_errors(data, modality):
    raw = mutated(tiny_config_dict(modality), data.draw)
    try:
        cfg = ModelConfig.from_dict(raw)
    except CheckpointError:
        event("refused")
        return
    event("built")
    assert 0 < count_parameters(cfg) <= 20_000_000_000 and math.isfinite(cfg.logit_scale_init)


@pytest.fixture(scope="module")
def fuzz_checkpoint(tmp_path_factory):
    from conftest import TOKENIZER_DIR, random_model
    from lbedge.checkpoint import save_pretrained

    folder = save_pretrained(
        random_model("image"), tmp_path_factory.mktemp("fuzzcfg") / "ckpt", tokenizer_dir=TOKENIZER_DIR
    )
    return folder, json.loads((folder / "config.json").read_text())


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_config_json_loads_or_raises_lbedge_errors(fuzz_checkpoint, data):
    folder, base = fuzz_checkpoint
    (folder / "config.json").write_text(json.dumps(mutated(base, data.draw)))
    try:
        load_model(folder)
        event("loaded")
    except LBEdgeError as exc:
        event(f"refused: {type(exc).__name__}")
