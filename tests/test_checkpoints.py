"""Loading checkpoints: LoRA merging (peft key layouts), formats, and one clear error for every bad folder."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from conftest import OFFICIAL

torch = pytest.importorskip("torch")

from lbedge import CheckpointError  # noqa: E402
from lbedge.checkpoint import from_pretrained, load_model, save_pretrained  # noqa: E402
from lbedge.models.towers import resize_position_embedding  # noqa: E402
from lbedge.models.weights import merge_lora, read_state_dict  # noqa: E402


def _embed(model, name="image"):
    ref = np.load(OFFICIAL / name / "reference.npz")
    f, k = str(ref["pixel_source"]).split(":")
    x = torch.from_numpy(np.load(OFFICIAL / f)[k].astype(np.float32))
    with torch.no_grad():
        return model.encode_vision(x).numpy()


def _copy(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(OFFICIAL / name, dst)
    return dst


def test_newer_peft_base_layer_keys_load_identically(tmp_path):
    """peft >= 0.7 stores q_proj.base_layer.weight beside lora_A/lora_B: same merged model."""
    folder = _copy("image", tmp_path)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    renamed = {}
    for k, v in sd.items():
        if ".base_model.model." in k and k.endswith(("proj.weight", "proj.bias")) and ".lora_" not in k:
            k = k.rsplit(".", 1)[0] + ".base_layer." + k.rsplit(".", 1)[1]
        renamed[k] = v
    assert any(".base_layer." in k for k in renamed)
    torch.save(renamed, folder / "pytorch_model.bin")
    np.testing.assert_allclose(_embed(load_model(folder)), _embed(load_model(OFFICIAL / "image")), atol=1e-6)


def test_lora_is_really_merged(tmp_path):
    """Dropping the LoRA pairs changes the output: the merge is what makes parity hold."""
    sd = read_state_dict(OFFICIAL / "image" / "pytorch_model.bin")
    with_lora, n = merge_lora(sd, 16 / 2)
    without, m = merge_lora({k: v for k, v in sd.items() if ".lora_" not in k}, 16 / 2)
    assert n == 2 * 4 and m == 0  # 2 layers x q/k/v/out
    key = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    a = sd["vision_model.encoder.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    b = sd["vision_model.encoder.base_model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    torch.testing.assert_close(with_lora[key], without[key] + 8.0 * (b @ a))


def test_incomplete_lora_pair_is_an_error():
    sd = read_state_dict(OFFICIAL / "image" / "pytorch_model.bin")
    sd = {k: v for k, v in sd.items() if not k.endswith("layers.1.self_attn.v_proj.lora_B.default.weight")}
    with pytest.raises(CheckpointError, match="layers.1.self_attn.v_proj.*incomplete"):
        merge_lora(sd, 8.0)


def test_safetensors_and_bin_save_roundtrip(make_checkpoint):
    a = make_checkpoint("depth", name="st", seed=3, safetensors=True)
    b = make_checkpoint("depth", name="bin", seed=3, safetensors=False)
    assert (a / "model.safetensors").is_file() and (b / "pytorch_model.bin").is_file()
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    ea, eb = from_pretrained(a).embed(x), from_pretrained(b).embed(x)
    np.testing.assert_array_equal(ea, eb)


def test_sharded_safetensors_index(make_checkpoint):
    from safetensors.torch import load_file, save_file

    folder = make_checkpoint("thermal", seed=1)
    sd = load_file(str(folder / "model.safetensors"))
    keys = sorted(sd)
    half = len(keys) // 2
    save_file({k: sd[k] for k in keys[:half]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[half:]}, str(folder / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}}
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    x = np.zeros((1, 3, 224, 224), np.float32)
    assert from_pretrained(folder).embed(x).shape == (1, 8)


# --- bad folders: one CheckpointError that names the problem --------------------------------------------


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_corrupt_config(tmp_path):
    folder = _copy("thermal", tmp_path)
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a LanguageBind checkpoint"):
        load_model(folder)


def test_missing_weights(tmp_path):
    folder = _copy("thermal", tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(folder)


@pytest.mark.parametrize("name,file", [("thermal", "model.safetensors"), ("image", "pytorch_model.bin")])
def test_truncated_weights(tmp_path, name, file):
    folder = _copy(name, tmp_path)
    data = (folder / file).read_bytes()
    (folder / file).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=file.replace(".", r"\.")):
        load_model(folder)


def test_garbage_weights(tmp_path):
    folder = _copy("image", tmp_path)
    (folder / "pytorch_model.bin").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(folder)


class _Evil:
    def __reduce__(self):
        return (print, ("unrestricted unpickle ran code",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    folder = _copy("image", tmp_path)
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(folder)
    assert "unrestricted unpickle" not in capsys.readouterr().out


def test_mismatched_config_names_the_keys(tmp_path):
    folder = _copy("thermal", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing key\(s\): vision_model\.encoder\.layers\.2\."):
        load_model(folder)
    cfg["vision_config"]["num_hidden_layers"] = 2
    cfg["vision_config"]["hidden_size"] = 64
    cfg["vision_config"]["num_attention_heads"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_model(folder)


def test_unexpected_keys_are_named(tmp_path, make_checkpoint):
    from safetensors.torch import load_file, save_file

    folder = make_checkpoint("image", seed=2)
    sd = load_file(str(folder / "model.safetensors"))
    sd["vision_model.extra_head.weight"] = torch.zeros(2)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): vision_model\.extra_head\.weight"):
        load_model(folder)


def test_tokenizer_that_does_not_fit_the_text_tower(tmp_path):
    """The small-vocab fixtures with the full CLIP tokenizer: a clear mismatch, not an index error later."""
    folder = _copy("depth", tmp_path)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(OFFICIAL / "tokenizer" / f, folder / f)
    with pytest.raises(CheckpointError, match="49408 tokens but the text tower's vocab_size is 1000"):
        from_pretrained(folder)


def test_missing_tokenizer_files(tmp_path, make_checkpoint):
    folder = make_checkpoint("image")
    (folder / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="merges.txt missing"):
        from_pretrained(folder)


def test_save_pretrained_roundtrip_keeps_embeddings(tmp_path):
    model = load_model(OFFICIAL / "image")  # LoRA merged at load
    out = save_pretrained(model, tmp_path / "merged", tokenizer_dir=OFFICIAL / "tokenizer")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vision_config"]["lora_r"] == 0 and cfg["model_type"] == "LanguageBindImage"
    np.testing.assert_allclose(_embed(load_model(out)), _embed(model), atol=1e-7)


def test_position_embedding_resize_for_audio_grid():
    w = torch.randn(257, 16)
    r = resize_position_embedding(w, (8, 74))
    assert r.shape == (593, 16)
    torch.testing.assert_close(r[0], w[0])  # class position kept
    torch.testing.assert_close(resize_position_embedding(w, (16, 16)), w)
    const = torch.ones(257, 4)
    torch.testing.assert_close(resize_position_embedding(const, (8, 74)), torch.ones(593, 4), atol=1e-5, rtol=0)
