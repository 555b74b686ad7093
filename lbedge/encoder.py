"""``Encoder``: one modality's preprocessing, vision tower, text tower and tokenizer behind numpy calls.

The caller cannot tell which backend runs: ``lbedge.from_pretrained`` builds one on PyTorch,
bundles build one on ONNX Runtime or TensorRT. An encoder holds its backends' resources (sessions, engines,
GPU memory) until :meth:`Encoder.close`, which ``with`` calls. An encoder of a label-baked bundle may have no
text tower and no tokenizer (:mod:`lbedge.baked`): it then carries its baked label set instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping, NoReturn, Sequence

import numpy as np

from .backends import Backend, batch_step, close_backends, run_batched
from .baked import BakedLabels, no_text_tower
from .config import PreprocessConfig
from .errors import CheckpointError, InputError, UsageError
from .frames import Frame
from .preprocess import Preprocessor
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Encoder:
    """Embeds one modality and text into LanguageBind's shared, L2-normalised space.

    Use it in a ``with`` block, or call :meth:`close` when done: that releases the backends' sessions, engines
    and GPU memory at once instead of whenever the garbage collector gets to them.
    """

    def __init__(
        self,
        *,
        modality: str,
        preprocess_config: PreprocessConfig,
        vision: Backend,
        text: Backend | Callable[[], Backend] | None,
        tokenizer: Tokenizer | None,
        logit_scale: float,
        embed_dim: int,
        name: str = "",
        text_fingerprint: str | Callable[[], str] | None = None,
        batch_size: int = 8,
        precision: Mapping[str, str] | None = None,
        backends: Mapping[str, str] | None = None,
        path: str | os.PathLike | None = None,
        baked: BakedLabels | None = None,
    ):
        _check_settings(batch_size=batch_size, logit_scale=logit_scale, embed_dim=embed_dim)
        if (text is None) != (tokenizer is None):
            raise UsageError(
                "give text and tokenizer together (a text tower), or neither (a label-baked encoder, with baked=)"
            )
        if text is None and baked is None:
            raise UsageError("an encoder without a text tower needs its baked labels: pass baked= (lbedge.baked)")
        self.modality = modality
        self.preprocess_config = preprocess_config
        self.preprocessor = Preprocessor(preprocess_config)
        self._vision: Backend | None = vision
        self._text: Backend | Callable[[], Backend] | None = text
        self._has_text = text is not None
        self._lock = threading.RLock()  # the text tower is made once, and never after close()
        self._closed = False
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
        #: the bundle's baked label set (:mod:`lbedge.baked`), or None
        self.baked = baked

    def __repr__(self) -> str:
        backend = self._vision.name if self._vision is not None else self.backends.get("vision", "?")
        closed = ", closed" if self._closed else ""
        return (
            f"Encoder(modality={self.modality!r}, name={self.name!r}, dim={self.embed_dim}, "
            f"backend={backend!r}{closed})"
        )

    # --- lifetime -------------------------------------------------------------------------------------------

    def __enter__(self) -> Encoder:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_exc:  # noqa: BLE001 - the error that ended the block is the one to see
            log.warning("closing %r after an error failed too: %s", self, close_exc)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Release both towers' backends (ONNX Runtime sessions, TensorRT engines, GPU buffers, streams); a text
        tower not loaded yet is never loaded. A second call does nothing.

        Afterwards :meth:`embed`, :meth:`embed_text`, ``vision`` and ``text`` raise :class:`UsageError`;
        :meth:`preprocess` and :meth:`tokenize` keep working (they hold no model). If a backend fails to
        release, the other is still released and the failure is raised afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            vision, text = self._vision, self._text
            self._vision = self._text = None
            if callable(self._fingerprint):  # it would read the weights, which are being released
                self._fingerprint = self._raise_closed
        close_backends(vision, None if _is_factory(text) else text)

    def _check_open(self) -> None:
        if self._closed:
            self._raise_closed()

    def _raise_closed(self) -> NoReturn:
        where = f"lbedge.load({str(self.path)!r})" if self.path is not None else "a new Encoder"
        raise UsageError(f"{self!r} was closed and its model released: load it again ({where}) to keep using it")

    # --- towers ---------------------------------------------------------------------------------------------

    @property
    def vision(self) -> Backend:
        """The vision tower's backend."""
        self._check_open()
        return self._vision  # type: ignore[return-value]

    @vision.setter
    def vision(self, backend: Backend) -> None:
        self._check_open()
        self._vision = backend

    @property
    def has_text_tower(self) -> bool:
        """Whether the encoder can embed text; False for a label-baked bundle without a text tower, which
        classifies only its baked labels (:attr:`baked`)."""
        return self._has_text

    def _require_text(self) -> None:
        if not self._has_text:
            where = str(self.path) if self.path is not None else (self.name or self.modality)
            raise no_text_tower(where, self.baked)

    @property
    def text(self) -> Backend:
        """The text tower's backend, loaded on first use: with a warm prompt cache, or baked labels, it is never
        loaded. Raises :class:`lbedge.baked.NoTextTower` when the encoder has no text tower."""
        with self._lock:
            self._check_open()
            self._require_text()
            if _is_factory(self._text):
                made = self._text()  # type: ignore[operator, misc]
                if not callable(getattr(made, "run", None)):
                    raise UsageError(
                        f"the text factory of {self.name or self.modality!r} returned {type(made).__name__}, not "
                        "a backend with run(): pass a Backend or a function that returns one"
                    )
                self._text = made
            return self._text  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample."""
        return self.preprocess_config.input_shape

    @property
    def has_text_fingerprint(self) -> bool:
        """Whether :attr:`text_fingerprint` is known (computing it first when the encoder was given a function)."""
        return self._resolve_fingerprint() is not None

    @property
    def text_fingerprint(self) -> str:
        """sha256 of the text tower's weights: equal fingerprints mean identical text towers.

        Raises :class:`CheckpointError` for a bundle or checkpoint that records none (rebuild it), and
        :class:`UsageError` for an encoder built without one; :attr:`has_text_fingerprint` asks first."""
        fp = self._resolve_fingerprint()
        if fp is not None:
            return fp
        if self.path is not None:
            raise CheckpointError(
                f"{self.path} records no text-tower fingerprint, so its text tower cannot be told apart from "
                "another (prompt cache, cross-modal similarity): rebuild it with `lbedge build`"
            )
        raise UsageError(
            f"encoder {self.name or self.modality!r} was built without a text fingerprint: pass "
            "text_fingerprint= (a sha256 of the text weights, see lbedge.encoder.fingerprint_arrays) to Encoder"
        )

    def _resolve_fingerprint(self) -> str | None:
        fp = self._fingerprint
        if callable(fp):
            fp = self._fingerprint = fp()
        if fp is not None and not isinstance(fp, str):
            raise UsageError(f"text_fingerprint must be a string, got {type(fp).__name__}")
        return fp or None

    # --- inputs ---------------------------------------------------------------------------------------------

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

    def count_inputs(self, x: Any) -> int | None:
        """How many inputs ``x`` holds as :meth:`embed` reads it: the length of a list or of a batched array
        (preprocessed ``[B, *input_shape]`` or raw, see :meth:`Preprocessor.split_batch`), None for one input
        given on its own."""
        if self.is_preprocessed(x):
            return int(x.shape[0]) if x.ndim == len(self.input_shape) + 1 else None
        items, batch = self.preprocessor.split_batch(x)
        return len(items) if batch else None

    # --- embeddings -----------------------------------------------------------------------------------------

    def embed(self, x: Any, **kw: Any) -> np.ndarray:
        """L2-normalised embeddings ``[B, D]`` of preprocessed arrays or raw inputs (one, a list or a batch).

        Raw inputs are preprocessed one backend batch at a time, so memory holds one batch of model input, not
        the whole list's; the result is the same as embedding ``preprocess(x)``. A list may also hold
        preprocessed samples (``[*input_shape]`` or ``[1, *input_shape]``, as :meth:`preprocess_frame` gives).
        The options of :meth:`preprocess` (``bgr=``, ``sample_rate=``, ``chunk_seed=``) apply to raw inputs
        only."""
        vision = self.vision
        if self.is_preprocessed(x):
            if kw:
                raise UsageError(
                    f"{', '.join(sorted(kw))} given with an already preprocessed array: preprocessing options "
                    "apply to raw inputs; drop them, or pass the raw inputs"
                )
            return self._embed_batch(vision, x[None] if x.ndim == len(self.input_shape) else x)
        items, _ = self.preprocessor.split_batch(x)
        step = batch_step(vision, self.batch_size) or len(items)
        parts = [
            self._embed_batch(vision, self._preprocess_items(items[i : i + step], kw))
            for i in range(0, len(items), step)
        ]
        return np.concatenate(parts)

    def _preprocess_items(self, items: Sequence[Any], kw: Mapping[str, Any]) -> np.ndarray:
        return np.stack([self._preprocess_item(item, kw) for item in items]).astype(np.float32, copy=False)

    def _preprocess_item(self, item: Any, kw: Mapping[str, Any]) -> np.ndarray:
        """One list item: a raw input, or a preprocessed sample (``[*input_shape]`` or ``[1, *input_shape]``)."""
        if not self.is_preprocessed(item):
            return self.preprocessor.one(item, **kw)
        if item.ndim > len(self.input_shape) and item.shape[0] != 1:
            raise InputError(
                f"a list item is a batch of {item.shape[0]} preprocessed samples: pass one array "
                "(np.concatenate the batches) or one sample per item"
            )
        if kw:
            raise UsageError(f"{', '.join(sorted(kw))} given with preprocessed samples: drop the options")
        return item.reshape(self.input_shape)

    def _embed_batch(self, vision: Backend, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.shape[0] == 0:
            raise InputError("empty batch: nothing to embed")
        if not np.isfinite(batch).all():
            raise InputError("preprocessed input contains NaN or infinite values")
        return self._checked(run_batched(vision, batch, preferred=self.batch_size), len(batch), "vision")

    def _checked(self, out: np.ndarray, rows: int, tower: str) -> np.ndarray:
        """L2-normalised ``out``, checked to be ``[rows, embed_dim]``."""
        if out.shape != (rows, self.embed_dim):
            raise InputError(
                f"the {tower} tower of {self.name or self.modality!r} gave embeddings of shape {tuple(out.shape)} "
                f"for {rows} inputs, expected ({rows}, {self.embed_dim}): the model does not match its embed_dim; "
                "rebuild the bundle, or pass the tower's output width as embed_dim"
            )
        return _l2(out)

    def tokenize(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64 ``[N, 77]``, as the official tokenizer gives them."""
        self._require_text()
        return self.tokenizer(texts)  # type: ignore[misc]

    def embed_text(self, texts: str | Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """L2-normalised text embeddings ``[N, D]``, tokenized and embedded batch by batch;
        ``progress(done, total)`` is called after each batch."""
        items = [texts] if isinstance(texts, str) else list(texts)
        self._check_open()
        self._require_text()
        if not items:
            return np.zeros((0, self.embed_dim), np.float32)
        text = self.text
        bs = max(self.batch_size, 32)  # tokenized per chunk; each chunk is split again to fit the backend
        out = []
        for i in range(0, len(items), bs):
            ids, _ = self.tokenize(items[i : i + bs])
            out.append(self._checked(run_batched(text, ids, preferred=bs), len(ids), "text"))
            if progress is not None:
                progress(min(i + bs, len(items)), len(items))
        return np.concatenate(out)

    def similarity(self, embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """Logits ``logit_scale * cos`` between embeddings ``[B, D]`` and text embeddings ``[N, D]``."""
        return self.logit_scale * (embeds @ text_embeds.T)


def _check_settings(*, batch_size: Any, logit_scale: Any, embed_dim: Any) -> None:
    """The numbers an Encoder is built with, or one UsageError naming the wrong one."""
    for name, value in (("batch_size", batch_size), ("embed_dim", embed_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    try:
        scale = float(logit_scale)
    except (TypeError, ValueError):
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0:
        raise UsageError(
            f"logit_scale must be a positive finite number (exp of the stored parameter), got {logit_scale!r}"
        )


def _is_factory(text: object) -> bool:
    """A text tower given as a function that makes it (not called yet), as bundles give it."""
    return callable(text) and not hasattr(text, "run")


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
