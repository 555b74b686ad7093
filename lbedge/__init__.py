"""lbedge: the edge-deployment SDK for LanguageBind.

``import lbedge`` is light (numpy, OpenCV, tokenizers): torch is imported only when a torch
model is built, e.g. by :func:`from_pretrained`.

>>> enc = lbedge.from_pretrained("checkpoints/LanguageBind_Thermal")
>>> clf = lbedge.ZeroShotClassifier(enc, labels=["person", "car", "dog"])
>>> clf("frame.jpg").label
"""

from __future__ import annotations

from .baked import NoTextTower
from .config import MODALITIES, ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .encoder import Encoder
from .errors import CheckpointError, EngineMismatch, InputError, LBEdgeError, MissingDependency, SensorError, UsageError
from .frames import Frame, Source
from .gate import ChangeGate
from .pipeline import Pipeline, Result
from .preprocess import Preprocessor
from .tokenizer import ClipTokenizer
from .zeroshot import Prediction, PromptCache, ZeroShotClassifier, cross_modal_similarity

__version__ = "0.1.0"


def from_pretrained(
    path, *, device: str = "cpu", batch_size: int = 8, precision: str = "fp32", text_precision: str = "fp32"
) -> Encoder:
    """Load an official LanguageBind checkpoint folder as an :class:`Encoder` (PyTorch backend), in ``fp32`` or
    ``bf16``.

    Needs ``lbedge[torch]``. See :func:`lbedge.checkpoint.from_pretrained`.
    """
    from .checkpoint import from_pretrained as _load

    return _load(path, device=device, batch_size=batch_size, precision=precision, text_precision=text_precision)


def load_bundle(path, **kw) -> Encoder:
    """Load a deployment bundle as an :class:`Encoder` on ONNX Runtime or TensorRT, without torch.

    See :func:`lbedge.bundle.load_bundle` for the options (backend, precision, threads...).
    """
    from .bundle import load_bundle as _load

    return _load(path, **kw)


def load(
    path,
    *,
    backend: str = "auto",
    precision: str = "auto",
    text_precision: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 8,
    verify: bool = True,
) -> Encoder:
    """A bundle folder (with ``manifest.json``) through :func:`load_bundle`, else a checkpoint folder through
    :func:`from_pretrained`: what the CLI and the examples accept as ``--model``.

    The same keywords for both: ``backend`` (bundle: ``auto``, ``tensorrt``, ``onnxruntime``; checkpoint:
    ``auto`` or ``torch``), ``precision``/``text_precision`` (a bundle's graphs: ``auto``, ``fp32``, ``fp16``,
    ``int8``; a checkpoint: ``auto`` = ``fp32``, or ``bf16`` on PyTorch), ``device`` (``cpu`` or
    ``cuda``: a torch device, or ONNX Runtime's CPU or CUDA provider), ``threads`` (ONNX Runtime intra-op threads,
    or torch's), ``batch_size``, ``verify`` (bundles: check every file's sha256). A keyword that makes no sense
    for the folder given is a :class:`UsageError`, never ignored.
    """
    from pathlib import Path

    if (Path(path) / "manifest.json").is_file():
        if "bf16" in (precision, text_precision):
            raise UsageError(
                "bf16 runs on PyTorch, which bundles do not use (ONNX Runtime has no BF16 CPU kernels): give the "
                "checkpoint folder the bundle was built from, or choose fp32, fp16 or int8"
            )
        providers = None
        if device is not None:
            if device not in ("cpu", "cuda"):
                raise UsageError(f"device {device!r} for a bundle: choose cpu or cuda (ONNX Runtime's providers)")
            providers = (
                ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        return load_bundle(
            path,
            backend=backend,
            precision=precision,
            text_precision=text_precision,
            providers=providers,
            threads=threads,
            batch_size=batch_size,
            verify=verify,
        )
    if backend not in ("auto", "torch"):
        raise UsageError(
            f"{path} is a checkpoint folder, which runs on PyTorch, not {backend}: build a bundle "
            "with `lbedge build` for ONNX Runtime or TensorRT"
        )
    for name, value in (("precision", precision), ("text_precision", text_precision)):
        if value not in ("auto", "fp32", "bf16"):
            raise UsageError(f"{name}={value!r}: a checkpoint runs in fp32 or bf16; build a bundle for fp16 or int8")
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    return from_pretrained(
        path,
        device=device or "cpu",
        batch_size=batch_size,
        precision="fp32" if precision == "auto" else precision,
        text_precision="fp32" if text_precision == "auto" else text_precision,
    )


__all__ = [
    "MODALITIES",
    "ChangeGate",
    "CheckpointError",
    "ClipTokenizer",
    "Encoder",
    "EngineMismatch",
    "Frame",
    "InputError",
    "LBEdgeError",
    "Pipeline",
    "Result",
    "Source",
    "MissingDependency",
    "NoTextTower",
    "ModelConfig",
    "Prediction",
    "PreprocessConfig",
    "Preprocessor",
    "PromptCache",
    "SensorError",
    "TextConfig",
    "UsageError",
    "VisionConfig",
    "ZeroShotClassifier",
    "__version__",
    "cross_modal_similarity",
    "from_pretrained",
    "load",
    "load_bundle",
]
