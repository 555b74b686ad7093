"""``Encoder``: one modality's preprocessing, vision tower, text tower and tokenizer behind numpy calls.

The caller cannot tell which backend runs: ``lbedge.from_pretrained`` builds one on PyTorch,
bundles build one on ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .backends import Backend, run_batched
from .config import PreprocessConfig
from .errors import InputError
from .frames import Frame
from .preprocess import Preprocessor
from .tokenizer import Tokenizer


class Encoder:
    """Embeds one modality and text into LanguageBind's shared, L2-normalised space."""

    def __init__(
        self,
        *,
        modality: str,
        preprocess_config: PreprocessConfig,
        vision: Backend,
        text: Backend | Callable[[], Backend],
        tokenizer: Tokenizer,
        logit_scale: float,
        embed_dim: int,
        name: str = "",
        text_fingerprint: str | Callable[[], str] | None = None,
        batch_size: int = 8,
        precision: Mapping[str, str] | None = None,
        backends: Mapping[str, str] | None = None,
        path: str | os.PathLike | None = None,
    ):
        self.modality = modality
        self.preprocess_config = preprocess_config
        self.preprocessor = Preprocessor(preprocess_config)
        self.vision = vision
        self._text = text
        self.tokenizer = tokenizer
        self.logit_scale = float(logit_scale)
        self.embed_dim = int(embed_dim)
        self.name = name
        self.batch_size = int(batch_size)
        self._fingerprint = text_fingerprint
        #: where the encoder comes from: the precision and backend of each tower ("vision", "text"), and the
        #: bundle or checkpoint folder
        self.precision: dict[str, str] = dict(precision or {})
        self.backends: dict[str, str] = dict(backends or {"vision": getattr(vision, "name", "?")})
        self.path = Path(path) if path is not None else None

    def __repr__(self) -> str:
        return (
            f"Encoder(modality={self.modality!r}, name={self.name!r}, dim={self.embed_dim}, "
            f"backend={self.vision.name!r})"
        )

    @property
    def text(self) -> Backend:
        """The text tower's backend, loaded on first use: with a warm prompt cache it is never loaded."""
        if callable(self._text) and not hasattr(self._text, "run"):
            self._text = self._text()
        return self._text

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample."""
        return self.preprocess_config.input_shape

    @property
    def text_fingerprint(self) -> str:
        """sha256 of the text tower's weights: equal fingerprints mean identical text towers."""
        if callable(self._fingerprint):
            self._fingerprint = self._fingerprint()
        if not self._fingerprint:
            raise RuntimeError("this encoder was built without a text fingerprint")
        return self._fingerprint

    def preprocess(self, inputs: Any, **kw: Any) -> np.ndarray:
        """Inputs (paths, arrays, PIL images, PCM clips, frame lists; one or a list) -> float32 batch."""
        return self.preprocessor(inputs, **kw)

    def preprocess_frame(self, frame: Frame) -> np.ndarray:
        """The model input ``[1, *input_shape]`` of one sensor frame (see :meth:`Preprocessor.frame`)."""
        return self.preprocessor.frame(frame)

    def is_preprocessed(self, x: Any) -> bool:
        """True for a float array whose trailing dimensions are this modality's ``input_shape``."""
        shape = self.input_shape
        return (
            isinstance(x, np.ndarray)
            and np.issubdtype(x.dtype, np.floating)
            and x.ndim in (len(shape), len(shape) + 1)
            and tuple(x.shape[-len(shape) :]) == shape
        )

    def embed(self, x: Any, **kw: Any) -> np.ndarray:
        """L2-normalised embeddings ``[B, D]`` of preprocessed batches or raw inputs."""
        batch = x if self.is_preprocessed(x) else self.preprocess(x, **kw)
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == len(self.input_shape):
            batch = batch[None]
        if batch.shape[0] == 0:
            raise InputError("empty batch: nothing to embed")
        if not np.isfinite(batch).all():
            raise InputError("preprocessed input contains NaN or infinite values")
        return _l2(run_batched(self.vision, batch, preferred=self.batch_size))

    def tokenize(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64 ``[N, 77]``, as the official tokenizer gives them."""
        return self.tokenizer(texts)

    def embed_text(self, texts: str | Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """L2-normalised text embeddings ``[N, D]``, tokenized and embedded batch by batch;
        ``progress(done, total)`` is called after each batch."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return np.zeros((0, self.embed_dim), np.float32)
        text = self.text
        bs = max(self.batch_size, 32)  # tokenized per chunk; each chunk is split again to fit the backend
        out = []
        for i in range(0, len(items), bs):
            ids, _ = self.tokenize(items[i : i + bs])
            out.append(run_batched(text, ids, preferred=bs))
            if progress is not None:
                progress(min(i + bs, len(items)), len(items))
        return _l2(np.concatenate(out))

    def similarity(self, embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """Logits ``logit_scale * cos`` between embeddings ``[B, D]`` and text embeddings ``[N, D]``."""
        return self.logit_scale * (embeds @ text_embeds.T)


def _l2(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def fingerprint_arrays(named: Sequence[tuple[str, np.ndarray]]) -> str:
    """sha256 over names, shapes, dtypes and bytes of arrays (order given)."""
    h = hashlib.sha256()
    for name, arr in named:
        a = np.ascontiguousarray(arr)
        h.update(f"{name}|{a.shape}|{a.dtype}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
