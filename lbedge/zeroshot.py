"""Zero-shot classification against text prompts, with a disk cache of prompt embeddings."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .encoder import Encoder
from .errors import InputError

# CLIP-style prompt templates per modality; "{}" is the label. Ensembled by averaging embeddings.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": ("a photo of a {}.", "a bad photo of a {}.", "a photo of the small {}.", "a photo of the large {}.",
              "a bright photo of a {}.", "a dark photo of a {}.", "a close-up photo of a {}.",
              "a blurry photo of a {}."),
    "depth": ("a depth photo of a {}.", "a bad depth photo of a {}.", "a depth photo of the small {}.",
              "a depth photo of the large {}.", "a close-up depth photo of a {}.", "a blurry depth photo of a {}."),
    "thermal": ("a thermal photo of a {}.", "an infrared photo of a {}.", "a thermal image of the {}.",
                "a blurry thermal photo of a {}.", "a close-up thermal photo of a {}.",
                "a dark infrared photo of a {}."),
    "audio": ("a sound of {}.", "the sound of a {}.", "a recording of {}."),
    "video": ("a video of {}.", "a video of a {}.", "a clip of {}.", "footage of a {}."),
}


#: generic labels for measuring zero-shot agreement between two versions of a tower (quantized vs FP32,
#: student vs teacher) when the caller gives none
PROBE_LABELS: tuple[str, ...] = (
    "person", "car", "dog", "cat", "bicycle", "bird", "tree", "building", "road", "chair", "table", "bottle",
    "phone", "laptop", "horse", "boat", "airplane", "train", "flower", "lion", "parakeet", "door", "window",
    "fire", "water", "music", "speech", "engine", "rain", "wind")


def default_cache_dir() -> Path:
    """``$LBEDGE_CACHE`` or ``~/.cache/lbedge``."""
    return Path(os.environ.get("LBEDGE_CACHE", Path.home() / ".cache" / "lbedge"))


class PromptCache:
    """Text embeddings on disk, keyed by the text tower's weights hash and the exact prompts.

    Encoders share entries only when their text towers are byte-identical, because the key
    contains the text fingerprint: nothing is assumed about which checkpoints share a tower.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "prompts"

    @staticmethod
    def key(fingerprint: str, prompts: Sequence[str]) -> str:
        h = hashlib.sha256(fingerprint.encode())
        h.update(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()

    def get(self, fingerprint: str, prompts: Sequence[str]) -> np.ndarray | None:
        path = self.directory / f"{self.key(fingerprint, prompts)}.npy"
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None                   # absent or damaged: recompute and overwrite
        return arr if arr.ndim == 2 and arr.shape[0] == len(prompts) and np.isfinite(arr).all() else None

    def put(self, fingerprint: str, prompts: Sequence[str], embeds: np.ndarray) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.key(fingerprint, prompts)}.npy"
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, embeds.astype(np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass                          # a read-only cache only costs recomputation

    def embed(self, encoder: Encoder, prompts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``prompts`` by ``encoder``'s text tower, from the cache when present."""
        fp = encoder.text_fingerprint
        hit = self.get(fp, prompts)
        if hit is not None:
            return hit
        embeds = encoder.embed_text(list(prompts))
        self.put(fp, prompts, embeds)
        return embeds


@dataclass
class Prediction:
    """Top-k result for one input."""

    labels: list[str]
    scores: list[float]                       # softmax probabilities, highest first
    abstained: bool = False                   # top score below the classifier's threshold
    logits: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def label(self) -> str | None:
        """The top label, or None when the classifier abstained."""
        return None if self.abstained else self.labels[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "abstained": self.abstained,
                "top": [{"label": l, "score": round(s, 6)} for l, s in zip(self.labels, self.scores)]}


class ZeroShotClassifier:
    """Classify inputs of ``encoder``'s modality among ``labels`` by prompt similarity.

    Each label's text embedding is the normalised mean over ``templates`` (the modality's CLIP-style
    set by default; ``templates=["{}"]`` uses labels verbatim). Scores are
    ``softmax(logit_scale * cos)``; with ``threshold`` set, a top score below it abstains.
    """

    def __init__(self, encoder: Encoder, labels: Sequence[str], *, templates: Sequence[str] | None = None,
                 extra_templates: Sequence[str] = (), top_k: int = 5, threshold: float | None = None,
                 cache: PromptCache | str | Path | None = None, use_cache: bool = True):
        labels = [str(l).strip() for l in labels]
        if not labels or any(not l for l in labels):
            raise InputError("labels must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise InputError(f"duplicate labels: {sorted(l for l in set(labels) if labels.count(l) > 1)}")
        tpl = list(templates) if templates is not None else list(TEMPLATES.get(encoder.modality, ("{}",)))
        tpl += list(extra_templates)
        if not tpl or any("{}" not in t for t in tpl):
            raise InputError("every template must contain '{}' where the label goes")
        self.encoder = encoder
        self.labels = labels
        self.templates = tpl
        self.top_k = max(1, min(int(top_k), len(labels)))
        self.threshold = threshold
        self.cache = cache if isinstance(cache, PromptCache) else (PromptCache(cache) if use_cache else None)
        self.text_embeds = self._label_embeddings()

    def _label_embeddings(self) -> np.ndarray:
        prompts = [t.format(l) for l in self.labels for t in self.templates]
        e = self.cache.embed(self.encoder, prompts) if self.cache else self.encoder.embed_text(prompts)
        e = e.reshape(len(self.labels), len(self.templates), -1).mean(axis=1)
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    def logits(self, embeds: np.ndarray) -> np.ndarray:
        """``logit_scale * cos`` of embeddings ``[B, D]`` against the labels."""
        return self.encoder.logit_scale * (embeds @ self.text_embeds.T)

    def classify(self, inputs: Any, **kw: Any) -> list[Prediction]:
        """Predictions for a batch (anything ``Encoder.embed`` takes)."""
        logits = self.logits(self.encoder.embed(inputs, **kw))
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out = []
        for row, lg in zip(probs, logits):
            order = np.argsort(-row, kind="stable")[: self.top_k]
            scores = [float(row[i]) for i in order]
            abstain = self.threshold is not None and scores[0] < self.threshold
            out.append(Prediction([self.labels[i] for i in order], scores, abstain, lg))
        return out

    def __call__(self, inputs: Any, **kw: Any) -> Prediction | list[Prediction]:
        """One ``Prediction`` for a single input, a list for a list or batch."""
        enc = self.encoder
        if enc.is_preprocessed(inputs):
            batch = inputs.ndim == len(enc.input_shape) + 1
        else:
            batch = enc.preprocessor.split_batch(inputs)[1]
        preds = self.classify(inputs, **kw)
        return preds if batch else preds[0]


def cross_modal_similarity(a: Encoder, xa: Any, b: Encoder, xb: Any) -> np.ndarray:
    """Cosine similarity ``[len(xa), len(xb)]`` between inputs of two modalities (e.g. image vs depth).

    Meaningful only when both towers were bound to the same language space: the encoders' text
    towers must be identical, which is checked.
    """
    if a.text_fingerprint != b.text_fingerprint:
        raise InputError(f"{a.name or a.modality} and {b.name or b.modality} have different text towers: their "
                         "embeddings do not live in one space, so cross-modal similarity is meaningless")
    return a.embed(xa) @ b.embed(xb).T
