"""Zero-shot classification against text prompts, with a disk cache of prompt embeddings and the baked label
sets of label-baked bundles (:mod:`lbedge.baked`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .baked import no_text_tower
from .encoder import Encoder
from .errors import InputError, UsageError
from .limits import hint, limits

log = logging.getLogger(__name__)

# CLIP-style prompt templates per modality; "{}" is the label. Ensembled by averaging embeddings.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": (
        "a photo of a {}.",
        "a bad photo of a {}.",
        "a photo of the small {}.",
        "a photo of the large {}.",
        "a bright photo of a {}.",
        "a dark photo of a {}.",
        "a close-up photo of a {}.",
        "a blurry photo of a {}.",
    ),
    "depth": (
        "a depth photo of a {}.",
        "a bad depth photo of a {}.",
        "a depth photo of the small {}.",
        "a depth photo of the large {}.",
        "a close-up depth photo of a {}.",
        "a blurry depth photo of a {}.",
    ),
    "thermal": (
        "a thermal photo of a {}.",
        "an infrared photo of a {}.",
        "a thermal image of the {}.",
        "a blurry thermal photo of a {}.",
        "a close-up thermal photo of a {}.",
        "a dark infrared photo of a {}.",
    ),
    "audio": ("a sound of {}.", "the sound of a {}.", "a recording of {}."),
    "video": ("a video of {}.", "a video of a {}.", "a clip of {}.", "footage of a {}."),
}


#: the prompt each probe label is embedded in when two versions of a tower are compared (agreement, distillation)
PROBE_TEMPLATE = "a photo of a {}."

#: generic labels for measuring zero-shot agreement between two versions of a tower (quantized vs FP32,
#: student vs teacher) when the caller gives none
PROBE_LABELS: tuple[str, ...] = (
    "person",
    "car",
    "dog",
    "cat",
    "bicycle",
    "bird",
    "tree",
    "building",
    "road",
    "chair",
    "table",
    "bottle",
    "phone",
    "laptop",
    "horse",
    "boat",
    "airplane",
    "train",
    "flower",
    "lion",
    "parakeet",
    "door",
    "window",
    "fire",
    "water",
    "music",
    "speech",
    "engine",
    "rain",
    "wind",
)


def default_cache_dir() -> Path:
    """``$LBEDGE_CACHE`` or ``~/.cache/lbedge``."""
    return Path(os.environ.get("LBEDGE_CACHE", Path.home() / ".cache" / "lbedge"))


class PromptCache:
    """Text embeddings on disk, keyed by the text tower's weights hash and the exact prompts.

    Encoders share entries only when their text towers are byte-identical, because the key
    contains the text fingerprint: nothing is assumed about which checkpoints share a tower.
    Large prompt sets are embedded and stored in chunks of ``chunk`` prompts, so an interrupted run keeps
    what it finished. An entry that is damaged (unreadable, wrong shape or dtype, non-finite, rows not of
    unit length) is recomputed and overwritten, never used.
    """

    def __init__(self, directory: str | Path | None = None, *, chunk: int = 4096):
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "prompts"
        if chunk < 1:
            raise InputError(f"chunk must be at least 1, got {chunk}")
        self.chunk = int(chunk)

    @staticmethod
    def key(fingerprint: str, prompts: Sequence[str]) -> str:
        h = hashlib.sha256(fingerprint.encode())
        h.update(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def get(self, fingerprint: str, prompts: Sequence[str], dim: int | None = None) -> np.ndarray | None:
        """The stored embeddings ``[len(prompts), dim]`` or None when absent or unusable."""
        path = self.directory / f"{self.key(fingerprint, prompts)}.npy"
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("prompt cache entry %s is unreadable (%s): recomputing it", path, exc)
            return None
        problem = _cache_problem(arr, len(prompts), dim)
        if problem:
            log.warning("prompt cache entry %s is damaged (%s): recomputing it", path, problem)
            return None
        return arr.astype(np.float32, copy=False)

    def put(self, fingerprint: str, prompts: Sequence[str], embeds: np.ndarray) -> None:
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.key(fingerprint, prompts)}.npy"
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, embeds.astype(np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("prompt cache not written (%s): it only costs recomputation", exc)
            if tmp is not None:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass

    def embed(
        self, encoder: Encoder, prompts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embeddings of ``prompts`` by ``encoder``'s text tower, from the cache when present.

        ``progress(done, total)`` is called as prompts are embedded (or found in the cache). An encoder without
        a text fingerprint cannot be keyed: its prompts are embedded every time, with a warning."""
        prompts = list(prompts)
        if not encoder.has_text_fingerprint:
            log.warning(
                "%s has no text-tower fingerprint, so its prompt embeddings are not cached: rebuild its bundle "
                "with `lbedge build` (or give Encoder a text_fingerprint=) to cache them",
                encoder.path or encoder.name or encoder.modality,
            )
            return encoder.embed_text(prompts, progress=progress)
        fp = encoder.text_fingerprint
        parts = []
        for start in range(0, len(prompts), self.chunk):
            part = prompts[start : start + self.chunk]
            hit = self.get(fp, part, encoder.embed_dim)
            if hit is None:
                hit = encoder.embed_text(
                    part, progress=None if progress is None else lambda d, _t, s=start: progress(s + d, len(prompts))
                )
                self.put(fp, part, hit)
            parts.append(hit)
            if progress is not None:
                progress(start + len(part), len(prompts))
        if not parts:
            return np.zeros((0, encoder.embed_dim), np.float32)
        return np.concatenate(parts)


def _cache_problem(arr: np.ndarray, rows: int, dim: int | None) -> str:
    """Why a cache entry cannot be used ("" when it can)."""
    if arr.dtype != np.float32:
        return f"dtype {arr.dtype}, expected float32"
    if arr.ndim != 2 or arr.shape[0] != rows or (dim is not None and arr.shape[1] != dim):
        return f"shape {arr.shape}, expected ({rows}, {dim if dim is not None else 'D'})"
    if not np.isfinite(arr).all():
        return "non-finite values"
    norms = np.linalg.norm(arr, axis=1)
    if rows and not np.allclose(norms, 1.0, atol=1e-3):
        return "rows are not unit vectors"
    return ""


def check_labels(labels: Any, what: str = "labels") -> list[str]:
    """``labels`` as a list of stripped, distinct, non-empty strings, or one InputError naming every problem.

    A bare string is refused (it would be read as its letters); so are bytes, None and other non-strings,
    text that is not valid Unicode, and more than ``limits().max_labels`` labels."""
    if isinstance(labels, (str, bytes)):
        raise InputError(
            f"{what} must be a list of strings, got one {type(labels).__name__} {labels!r:.60}: pass "
            f"[{labels!r:.40}] for one label, or split comma-separated text first"
        )
    try:
        items = list(labels)
    except TypeError:
        raise InputError(f"{what} must be a list of strings, got {type(labels).__name__}") from None
    lim = limits()
    if not items:
        raise InputError(f"{what} must be a non-empty list of non-empty strings")
    if len(items) > lim.max_labels:
        raise InputError(f"{len(items)} {what}: more than the limit of {lim.max_labels}; {hint('max_labels')}")
    problems, out = [], []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            problems.append(f"item {i} is {type(item).__name__} {item!r:.40}, not a string")
            continue
        text = item.strip()
        if not text:
            problems.append(f"item {i} is empty (labels must be non-empty strings)")
        elif len(text) > lim.max_label_chars:
            problems.append(f"item {i} has {len(text)} characters (limit {lim.max_label_chars})")
        else:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"item {i} {text!r:.40} is not valid Unicode text (undecodable bytes?)")
                continue
            out.append(text)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise InputError(f"unusable {what}: {shown}")
    dupes = sorted({t for t in out if out.count(t) > 1}) if len(set(out)) != len(out) else []
    if dupes:
        raise InputError(f"duplicate {what}: {dupes[:10]}")
    return out


def check_templates(templates: Any) -> list[str]:
    """Prompt templates: strings that each hold ``{}`` where the label goes."""
    if isinstance(templates, (str, bytes)):
        raise InputError(
            f"templates must be a list of strings, got one {type(templates).__name__}: pass [{templates!r:.60}]"
        )
    tpl = list(templates)
    bad = [t for t in tpl if not isinstance(t, str) or "{}" not in t]
    if not tpl or bad:
        raise InputError(
            f"every template must be a string and must contain '{{}}' where the label goes (got {bad[:3]!r})"
        )
    return tpl


def fill(template: str, label: str) -> str:
    """A template with its ``{}`` replaced by ``label`` (other braces are kept as they are)."""
    return template.replace("{}", label)


@dataclass
class Prediction:
    """Top-k result for one input."""

    labels: list[str]
    scores: list[float]  # softmax probabilities, highest first
    abstained: bool = False  # top score below the classifier's threshold
    logits: np.ndarray | None = field(default=None, repr=False)  # logit_scale * cos for every label, label order

    @property
    def label(self) -> str | None:
        """The top label, or None when the classifier abstained."""
        return None if self.abstained else self.labels[0]

    @property
    def score(self) -> float:
        """The top score (also when the classifier abstained)."""
        return self.scores[0]

    def to_dict(self) -> dict[str, Any]:
        """``{"label", "abstained", "top": [{"label", "score"}, ...]}``, for JSON."""
        return {
            "label": self.label,
            "abstained": self.abstained,
            "top": [{"label": label, "score": round(s, 6)} for label, s in zip(self.labels, self.scores)],
        }


class ZeroShotClassifier:
    """Classify inputs of ``encoder``'s modality among ``labels`` by prompt similarity.

    Each label's text embedding is the normalised mean over ``templates`` (the modality's CLIP-style
    set by default; ``templates=["{}"]`` uses labels verbatim). Scores are
    ``softmax(logit_scale * cos)``; with ``threshold`` set, a top score below it abstains.

    When the encoder's bundle has baked labels (:mod:`lbedge.baked`) and ``labels`` are among them with exactly
    the baked templates, the stored embeddings are used: no text graph is loaded and no tokenizer read
    (``use_baked=False`` embeds them with the text tower instead). Other labels on a bundle without a text
    tower raise :class:`lbedge.baked.NoTextTower`, which names the fix.

    :meth:`predict` takes one input and returns one :class:`Prediction`; :meth:`predict_batch` takes a list (or
    a batched array) and returns a list, one per input. Calling the classifier picks one of the two: a list or
    tuple of inputs gives a list, one path, image, frame or ``(samples, rate)`` clip gives one ``Prediction``, an
    array gives one or a list by its shape; where the form cannot tell, it raises :class:`UsageError` naming
    the explicit call.
    """

    def __init__(
        self,
        encoder: Encoder,
        labels: Sequence[str],
        *,
        templates: Sequence[str] | None = None,
        extra_templates: Sequence[str] = (),
        top_k: int = 5,
        threshold: float | None = None,
        cache: PromptCache | str | Path | None = None,
        use_cache: bool = True,
        progress: Callable[[int, int], None] | None = None,
        use_baked: bool = True,
    ):
        labels = check_labels(labels)
        tpl = check_templates(templates if templates is not None else TEMPLATES.get(encoder.modality, ("{}",)))
        tpl += check_templates(extra_templates) if extra_templates else []
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise InputError(f"threshold is a probability in [0, 1], got {threshold}")
        self.encoder = encoder
        self.labels = labels
        self.templates = tpl
        self.top_k = max(1, min(int(top_k), len(labels)))
        self.threshold = threshold
        self.cache = cache if isinstance(cache, PromptCache) else (PromptCache(cache) if use_cache else None)
        rows = self._baked_embeddings(use_baked, progress)
        #: whether the label embeddings came from the bundle's baked label set (no text tower used)
        self.from_baked = rows is not None
        self.text_embeds = rows if rows is not None else self._label_embeddings(progress)

    def _baked_embeddings(self, use_baked: bool, progress: Callable[[int, int], None] | None) -> np.ndarray | None:
        """The label embeddings from the encoder's baked label set, when it covers the labels and templates; a
        :class:`NoTextTower` error when it does not and the encoder has no text tower to embed them."""
        enc = self.encoder
        baked = getattr(enc, "baked", None)
        rows = baked.embeddings_for(self.labels, self.templates) if baked is not None and use_baked else None
        if rows is not None:
            if progress is not None:
                progress(len(self.labels) * len(self.templates), len(self.labels) * len(self.templates))
            return rows
        if not getattr(enc, "has_text_tower", True):
            where = str(enc.path) if enc.path is not None else (enc.name or enc.modality)
            raise no_text_tower(where, baked, self.labels, self.templates)
        return None

    def _label_embeddings(self, progress: Callable[[int, int], None] | None) -> np.ndarray:
        prompts = [fill(t, label) for label in self.labels for t in self.templates]
        e = (
            self.cache.embed(self.encoder, prompts, progress)
            if self.cache
            else self.encoder.embed_text(prompts, progress=progress)
        )
        if e.shape != (len(prompts), self.encoder.embed_dim) or not np.isfinite(e).all():
            raise InputError(
                f"the text tower gave {'non-finite ' if e.ndim == 2 else ''}embeddings of shape "
                f"{tuple(e.shape)} for {len(prompts)} prompts (expected dimension "
                f"{self.encoder.embed_dim}): the model is broken"
            )
        e = e.reshape(len(self.labels), len(self.templates), -1).mean(axis=1)
        return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), np.float32(1e-12))

    def logits(self, embeds: np.ndarray) -> np.ndarray:
        """``logit_scale * cos`` of embeddings ``[B, D]`` against the labels."""
        return self.encoder.logit_scale * (embeds @ self.text_embeds.T)

    def predict(self, x: Any, **kw: Any) -> Prediction:
        """The prediction for one input: a path, encoded bytes, an image or frame, an audio clip (array or
        ``(samples, rate)``), a video (array or list of frames), or a preprocessed array. An array with a batch
        axis of one (as :meth:`Encoder.preprocess_frame` gives) is one input too; a list of inputs or a larger
        batch is refused: use :meth:`predict_batch`. Keyword options go to :meth:`Encoder.preprocess`."""
        enc = self.encoder
        n = enc.count_inputs(x)
        if n is not None and isinstance(x, (list, tuple)):
            raise UsageError(
                f"predict takes one input, got a {type(x).__name__} of {n}: call predict_batch(inputs), which "
                "returns one Prediction per input"
            )
        if n is not None and n != 1:
            raise UsageError(
                f"predict takes one input, got a batch of {n} (an array of shape {tuple(x.shape)}): call "
                "predict_batch(x), which returns one Prediction per input"
            )
        return self._predict(x, **kw)[0]

    def predict_batch(self, inputs: Any, **kw: Any) -> list[Prediction]:
        """One prediction per input, in order: ``inputs`` is a list or tuple of inputs (each as :meth:`predict`
        takes it) or a batched array (preprocessed ``[B, *input_shape]``, images ``[B, H, W, C]``, depth maps
        ``[B, H, W]``, videos ``[B, T, H, W, C]``). One input on its own is refused: wrap it, ``[x]``, or call
        :meth:`predict`. Keyword options go to :meth:`Encoder.preprocess`."""
        problem = self._not_a_batch(inputs)
        if problem:
            raise UsageError(f"predict_batch takes a list of inputs or a batched array; {problem}")
        return self._predict(inputs, **kw)

    def __call__(self, inputs: Any, **kw: Any) -> Prediction | list[Prediction]:
        """:meth:`predict_batch` for a list, a tuple of inputs or a batched array; :meth:`predict` for one input.

        Raises :class:`UsageError` where the input's form cannot tell one from many: a 2-D audio array (one
        ``[channels, samples]`` clip or a ``[B, samples]`` batch) and, for video, a list of arrays (the frames of
        one clip or several clips). New code can call :meth:`predict` or :meth:`predict_batch` directly."""
        ambiguous = self._ambiguous(inputs)
        if ambiguous:
            raise UsageError(ambiguous)
        if self.encoder.count_inputs(inputs) is None:  # one input, an audio (samples, rate) pair included
            return self.predict(inputs, **kw)
        return self.predict_batch(inputs, **kw)

    def classify(self, inputs: Any, **kw: Any) -> list[Prediction]:
        """Predictions for everything ``inputs`` holds, always a list (one input gives a list of one), reading
        ``inputs`` as :meth:`Encoder.embed` does. Kept for compatibility: :meth:`predict_batch` states its
        input's form and refuses what could be misread."""
        return self._predict(inputs, **kw)

    def _predict(self, inputs: Any, **kw: Any) -> list[Prediction]:
        logits = self.logits(self.encoder.embed(inputs, **kw))
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return [self._prediction(row, lg) for row, lg in zip(probs, logits)]

    def _prediction(self, probs: np.ndarray, logits: np.ndarray) -> Prediction:
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        scores = [float(probs[i]) for i in order]
        abstain = self.threshold is not None and scores[0] < self.threshold
        return Prediction([self.labels[i] for i in order], scores, abstain, logits)

    def _not_a_batch(self, inputs: Any) -> str:
        """Why ``inputs`` is not a batch for :meth:`predict_batch` ("" when it is)."""
        enc = self.encoder
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 0:
                return "got an empty list: nothing to classify"
            if enc.count_inputs(inputs) is not None:
                return ""
            if enc.modality == "video":
                return "this list holds the frames of one clip: call predict(frames), or predict_batch([frames])"
            return "(samples, rate) is one clip: call predict((samples, rate)), or predict_batch([(samples, rate)])"
        if isinstance(inputs, np.ndarray) and enc.modality == "audio" and not enc.is_preprocessed(inputs):
            return (
                f"an audio array (shape {inputs.shape}) is one clip, [samples] or [channels, samples]: call "
                "predict(x), or pass a list of clips, predict_batch(list(clips))"
            )
        if enc.count_inputs(inputs) is None:
            what = f"an array of shape {inputs.shape}" if isinstance(inputs, np.ndarray) else type(inputs).__name__
            return f"got one input ({what}): call predict(x), or predict_batch([x])"
        return ""

    def _ambiguous(self, inputs: Any) -> str:
        """Why ``clf(inputs)`` cannot tell one input from a batch ("" when it can)."""
        enc = self.encoder
        if enc.modality == "audio" and isinstance(inputs, np.ndarray) and not enc.is_preprocessed(inputs):
            if inputs.ndim == 2:
                return (
                    f"a 2-D audio array (shape {inputs.shape}) is one [channels, samples] clip or a batch of "
                    "[B, samples] clips: call predict(x) for one clip, predict_batch(list(x)) for a batch"
                )
        if enc.modality == "video" and isinstance(inputs, (list, tuple)) and enc.count_inputs(inputs) is None:
            return (
                "for video, a list of arrays is the frames of one clip or several clips: call predict(frames) "
                "for one clip, predict_batch(clips) for several"
            )
        return ""


def cross_modal_similarity(a: Encoder, xa: Any, b: Encoder, xb: Any) -> np.ndarray:
    """Cosine similarity ``[len(xa), len(xb)]`` between inputs of two modalities (e.g. image vs depth).

    Meaningful only when both towers were bound to the same language space: the encoders' text
    towers must be identical, which is checked.
    """
    if a.text_fingerprint != b.text_fingerprint:
        raise InputError(
            f"{a.name or a.modality} and {b.name or b.modality} have different text towers: their "
            "embeddings do not live in one space, so cross-modal similarity is meaningless"
        )
    return a.embed(xa) @ b.embed(xb).T
