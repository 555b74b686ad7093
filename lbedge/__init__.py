"""lbedge: the edge-deployment SDK for LanguageBind.

``import lbedge`` is light (numpy, OpenCV, tokenizers): torch is imported only when a torch
model is built, e.g. by :func:`from_pretrained`.

>>> enc = lbedge.from_pretrained("checkpoints/LanguageBind_Thermal")
>>> clf = lbedge.ZeroShotClassifier(enc, labels=["person", "car", "dog"])
>>> clf("frame.jpg").label
"""

from __future__ import annotations

from .config import MODALITIES, ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .encoder import Encoder
from .errors import (CheckpointError, EngineMismatch, InputError, LBEdgeError, MissingDependency, SensorError,
                     UsageError)
from .frames import Frame, Source
from .pipeline import Pipeline, Result
from .preprocess import Preprocessor
from .tokenizer import ClipTokenizer
from .zeroshot import Prediction, PromptCache, ZeroShotClassifier, cross_modal_similarity

__version__ = "0.1.0"


def from_pretrained(path, *, device: str = "cpu", batch_size: int = 8) -> Encoder:
    """Load an official LanguageBind checkpoint folder as an :class:`Encoder` (PyTorch backend).

    Needs ``lbedge[torch]``. See :func:`lbedge.checkpoint.from_pretrained`.
    """
    from .checkpoint import from_pretrained as _load

    return _load(path, device=device, batch_size=batch_size)


def load_bundle(path, **kw) -> Encoder:
    """Load a deployment bundle as an :class:`Encoder` on ONNX Runtime or TensorRT, without torch.

    See :func:`lbedge.bundle.load_bundle` for the options (backend, precision, threads...).
    """
    from .bundle import load_bundle as _load

    return _load(path, **kw)


def load(path, **kw) -> Encoder:
    """A bundle folder (with ``manifest.json``) through :func:`load_bundle`, else a checkpoint folder through
    :func:`from_pretrained`: what the CLI and the examples accept as ``--model``."""
    from pathlib import Path

    if (Path(path) / "manifest.json").is_file():
        return load_bundle(path, **kw)
    return from_pretrained(path, **kw)


__all__ = [
    "MODALITIES", "CheckpointError", "ClipTokenizer", "Encoder", "EngineMismatch", "Frame", "InputError",
    "LBEdgeError", "Pipeline", "Result", "Source",
    "MissingDependency", "ModelConfig", "Prediction", "PreprocessConfig", "Preprocessor", "PromptCache",
    "SensorError", "TextConfig", "UsageError", "VisionConfig", "ZeroShotClassifier", "__version__", "cross_modal_similarity",
    "from_pretrained", "load", "load_bundle",
]
