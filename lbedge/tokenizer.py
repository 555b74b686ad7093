"""Text tokenizers, built on the ``tokenizers`` library: the CLIP BPE of LanguageBind's text tower, and
WordPiece for BERT sentence encoders (:class:`WordPieceTokenizer`, from a ``tokenizer.json``).
:func:`load_tokenizer` picks the one a text tower's config names.

The CLIP tokenizer:

Matches the official ``LanguageBind*Tokenizer`` (a transformers ``CLIPTokenizer``) called with
``max_length=77, padding="max_length", truncation=True``: CLIP's text clean-up (HTML unescape,
whitespace collapse, lower case), byte-level BPE with ``</w>`` word ends, BOS/EOS added, sequences
over 77 tokens truncated with EOS kept, padding with the EOS id, attention mask 1 on real tokens.

The clean-up is the official one: ``ftfy.fix_text`` (NFC, HTML entities when the text has no
``<``/``>``, mojibake such as "cafÃ©", ligatures, full-width characters), whitespace collapse and
lower case. ftfy is a small pure-Python dependency of lbedge; should it be missing, lbedge falls
back to NFC plus the same HTML rule, which agrees with it on ordinary prompts.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np

from .errors import CheckpointError, InputError
from .schema import read_json, read_text

if TYPE_CHECKING:
    from .config import TextConfig

try:  # optional, as in the official requirements
    import ftfy as _ftfy
except ImportError:  # pragma: no cover - depends on the environment
    _ftfy = None

_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """The official CLIP tokenizer's clean-up: ftfy, whitespace collapse, strip, lower-case."""
    if _ftfy is not None:
        text = _ftfy.fix_text(text)
    else:
        text = unicodedata.normalize("NFC", text)
        if "<" not in text and ">" not in text:
            text = html.unescape(text)
    return _WS.sub(" ", text).strip().lower()


class ClipTokenizer:
    """CLIP BPE from a checkpoint's ``vocab.json`` and ``merges.txt``."""

    def __init__(self, vocab_file: str | Path, merges_file: str | Path, context_length: int = 77):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        vocab_file, merges_file = Path(vocab_file), Path(merges_file)
        fix = "copy vocab.json and merges.txt from the official checkpoint again"
        vocab = read_json(vocab_file, "tokenizer vocabulary", fix)  # size and nesting bounded
        lines = read_text(merges_file, "tokenizer merges", fix).splitlines()
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        bad = [m for m in merges if len(m) != 2]
        if not bad and isinstance(vocab, dict):
            bad = [k for k, v in vocab.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0][:1]
        if bad or not isinstance(vocab, dict):
            raise CheckpointError(
                f"malformed tokenizer files in {vocab_file.parent}: re-download vocab.json and merges.txt"
            )
        try:
            self.bos_id = int(vocab["<|startoftext|>"])
            self.eos_id = int(vocab["<|endoftext|>"])
        except KeyError as exc:
            raise CheckpointError(f"{vocab_file} lacks CLIP's special tokens <|startoftext|>/<|endoftext|>") from exc
        bpe = models.BPE(
            vocab=vocab,
            merges=merges,
            end_of_word_suffix="</w>",
            unk_token="<|endoftext|>",
            fuse_unk=False,
            continuing_subword_prefix="",
        )
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        # like the official tokenizer, a literal <|startoftext|> / <|endoftext|> in text is that token
        tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
        self._tok = tok
        self.vocab_size = len(vocab)
        self.context_length = context_length

    @classmethod
    def from_dir(cls, folder: str | Path, context_length: int = 77) -> "ClipTokenizer":
        folder = Path(folder)
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        missing = [p.name for p in (vocab, merges) if not p.is_file()]
        if missing:
            raise CheckpointError(
                f"tokenizer files {', '.join(missing)} missing in {folder}: copy them from the official checkpoint"
            )
        return cls(vocab, merges, context_length)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without BOS/EOS."""
        return self._tok.encode(clean_text(text), add_special_tokens=False).ids

    def __call__(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 ``[N, context_length]``."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts must be a string or a list of strings")
        n, L = len(texts), self.context_length
        ids = np.full((n, L), self.eos_id, dtype=np.int64)
        mask = np.zeros((n, L), dtype=np.int64)
        cleaned = [clean_text(t) for t in texts]
        for i, enc in enumerate(self._tok.encode_batch(cleaned, add_special_tokens=False)):
            body = enc.ids[: L - 2]
            row = [self.bos_id, *body, self.eos_id]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a row of ids (special tokens and padding dropped)."""
        keep = [int(i) for i in ids if int(i) not in (self.bos_id, self.eos_id)]
        return self._tok.decode(keep).replace("</w>", " ").strip()


class WordPieceTokenizer:
    """A BERT WordPiece tokenizer from a Hugging Face ``tokenizer.json`` (lower-casing, accent stripping and
    ``[CLS] ... [SEP]`` come from the file), padded with ``[PAD]`` to ``context_length`` tokens."""

    def __init__(self, tokenizer_file: str | Path, context_length: int = 64):
        from tokenizers import Tokenizer

        path = Path(tokenizer_file)
        text = read_text(path, "tokenizer file", "copy tokenizer.json from the text model's folder again")
        try:
            tok = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises its own exception type for malformed files
            raise CheckpointError(f"malformed tokenizer file {path} ({exc}): copy tokenizer.json again") from exc
        vocab = tok.get_vocab()
        try:
            self.bos_id, self.eos_id, self.pad_id = (int(vocab[t]) for t in ("[CLS]", "[SEP]", "[PAD]"))
        except KeyError as exc:
            raise CheckpointError(f"{path} lacks BERT's [CLS]/[SEP]/[PAD] tokens: not a WordPiece tokenizer") from exc
        tok.enable_truncation(max_length=context_length)
        tok.enable_padding(length=context_length, pad_id=self.pad_id, pad_token="[PAD]")
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.context_length = context_length

    @classmethod
    def from_dir(cls, folder: str | Path, context_length: int = 64) -> "WordPieceTokenizer":
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"tokenizer.json missing in {folder}: copy it from the text model's folder")
        return cls(path, context_length)

    def encode(self, text: str) -> list[int]:
        """WordPiece ids of one text, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def __call__(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 ``[N, context_length]``."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts must be a string or a list of strings")
        encs = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64).reshape(len(texts), self.context_length)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(ids.shape)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a row of ids (special tokens and padding dropped)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


class Tokenizer(Protocol):
    """What the encoder needs of a tokenizer."""

    vocab_size: int
    context_length: int

    def encode(self, text: str) -> list[int]: ...

    def __call__(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def load_tokenizer(
    folder: str | Path,
    text: "TextConfig | None" = None,
    *,
    family: str | None = None,
    context_length: int | None = None,
) -> Tokenizer:
    """The tokenizer in ``folder`` for a text tower (``text`` config, or ``family`` and ``context_length``)."""
    fam = family or (text.family if text is not None else "clip")
    length = context_length or (text.max_length if text is not None else (77 if fam == "clip" else 64))
    if fam == "bert":
        return WordPieceTokenizer.from_dir(folder, context_length=length)
    return ClipTokenizer.from_dir(folder, context_length=length)


def copy_tokenizer_files(source: str | os.PathLike, dest: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """Copy the tokenizer files ``names`` from folder ``source`` into folder ``dest`` (created); returns each
    file's sha256, as a bundle manifest lists them. A missing file is a CheckpointError naming it."""
    import shutil

    from .engine import sha256_file

    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        if not (source / name).is_file():
            raise CheckpointError(
                f"tokenizer file {name} missing in {source}: copy the whole checkpoint (a bundle "
                "must be self-contained)"
            )
        shutil.copyfile(source / name, dest / name)
        out[name] = sha256_file(dest / name)
    return out
