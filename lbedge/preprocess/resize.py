"""Resize kernels that reproduce ``torch.nn.functional.interpolate`` (no antialias) in numpy.

The official LanguageBind processors resize float tensors with torchvision/pytorchvideo,
which call ``interpolate(mode="bicubic"|"bilinear", align_corners=False, antialias=False)``.
OpenCV's resize differs from it by up to 6e-5 (it derives source coordinates in double),
so lbedge computes the same float32 source coordinates and cubic (A = -0.75) or linear
weights as PyTorch, and applies them as a separable 4-tap (or 2-tap) gather and product,
exact to float rounding (speed: benchmarks/RESULTS.md, "Preprocessing").
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

_A = np.float32(-0.75)


@lru_cache(maxsize=64)
def _taps(
    in_size: int, out_size: int, mode: str, start: int = 0, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [length, taps] and weights [length, taps] of the output pixels ``start`` to
    ``start + length`` of one axis, as PyTorch computes them (only the cropped window: a cache entry stays
    small whatever the image's aspect ratio)."""
    scale = np.float32(in_size) / np.float32(out_size)
    # PyTorch evaluates scale * (dst + 0.5) - 0.5 as one fused multiply-add in float32:
    # the exact product in float64, rounded once, reproduces it bit for bit.
    dst = np.arange(start, start + (out_size - start if length is None else length), dtype=np.float64)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
    if mode == "bilinear":
        src = np.maximum(src, np.float32(0.0))
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_size - 1)
        lam = (src - i0.astype(np.float32)).astype(np.float32)
        i1 = np.minimum(i0 + 1, in_size - 1)
        idx = np.stack([i0, i1], axis=1)
        w = np.stack([np.float32(1.0) - lam, lam], axis=1)
    elif mode == "bicubic":
        fl = np.floor(src)
        t = (src - fl).astype(np.float32)
        i = fl.astype(np.int64)
        x1 = t + np.float32(1.0)  # distance to tap i-1
        x2 = np.float32(1.0) - t  # distance to tap i+1
        w0 = ((_A * x1 - 5 * _A) * x1 + 8 * _A) * x1 - 4 * _A
        w1 = ((_A + 2) * t - (_A + 3)) * t * t + 1
        w2 = ((_A + 2) * x2 - (_A + 3)) * x2 * x2 + 1
        w3 = ((_A * (x2 + 1) - 5 * _A) * (x2 + 1) + 8 * _A) * (x2 + 1) - 4 * _A
        idx = np.clip(np.stack([i - 1, i, i + 1, i + 2], axis=1), 0, in_size - 1)
        w = np.stack([w0, w1, w2, w3], axis=1).astype(np.float32)
    else:
        raise ValueError(f"unknown interpolation {mode!r}: use 'bicubic' or 'bilinear'")
    return idx, w


def _resize_rows(x: np.ndarray, out_size: int, mode: str, keep: tuple[int, int]) -> np.ndarray:
    """Resize axis 0 of a 2-D ``[N, M]`` array (uint8 or float32) to the rows ``keep=(start, length)`` of
    ``out_size``: one gather of every tap ``[length, taps, M]`` and one batched product with the weights."""
    start, length = keep
    if x.shape[0] == out_size:
        return x[start : start + length].astype(np.float32)
    idx, w = _taps(x.shape[0], out_size, mode, start, length)
    gathered = np.take(x, idx, axis=0).astype(np.float32, copy=False)
    return np.matmul(w[:, None, :], gathered)[:, 0]


def _swap_hw(a: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` -> contiguous ``[W, H, C]`` (OpenCV's transpose: faster than a numpy copy)."""
    if a.shape[2] <= 4 and a.dtype in (np.uint8, np.float32):
        t = cv2.transpose(a)
        return t.reshape(a.shape[1], a.shape[0], a.shape[2])
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def resize(
    img: np.ndarray, out_h: int, out_w: int, mode: str = "bicubic", crop: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Resize an image ``[H, W]`` or ``[H, W, C]`` (uint8 or float) like PyTorch ``interpolate`` (no
    antialias); float32 out, in the input's layout.

    ``crop=(top, left, height, width)`` returns only that window of the resized image, computing
    nothing outside it (resize-then-crop at the cost of the crop). Each axis is one pass over a 2-D view
    (channels ride along in the row), the axis that shrinks the work most first.
    """
    x = np.asarray(img)
    if x.dtype != np.uint8:  # uint8 stays uint8: only the gathered taps are converted to float
        x = x.astype(np.float32, copy=False)
    flat = x.ndim == 2
    if flat:
        x = x[..., None]
    h, w, c = x.shape
    top, left, ch, cw = crop if crop is not None else (0, 0, out_h, out_w)
    if ch * w <= 1.5 * h * cw:  # rows first unless clearly costlier: columns first transposes the input
        rows = _resize_rows(x.reshape(h, w * c), out_h, mode, (top, ch)).reshape(ch, w, c)
        cols_in = _swap_hw(rows).reshape(w, ch * c)
        out = _swap_hw(_resize_rows(cols_in, out_w, mode, (left, cw)).reshape(cw, ch, c))
    else:  # columns first, on the transposed image
        cols = _resize_rows(_swap_hw(x).reshape(w, h * c), out_w, mode, (left, cw)).reshape(cw, h, c)
        rows_in = _swap_hw(cols).reshape(h, cw * c)
        out = _resize_rows(rows_in, out_h, mode, (top, ch)).reshape(ch, cw, c)
    return out[..., 0] if flat else out


def short_side_size(h: int, w: int, size: int, rounding: str = "torchvision") -> tuple[int, int]:
    """Output (h, w) when the short side is resized to ``size``.

    ``torchvision``: the long side is ``int(size * long / short)`` (torchvision ``Resize(int)``);
    ``pytorchvideo``: ``int(floor(long / short * size))`` (pytorchvideo ``ShortSideScale``).
    """
    if rounding == "torchvision":
        if w <= h:
            return int(size * h / w), size
        return size, int(size * w / h)
    if w < h:
        return int(np.floor(float(h) / w * size)), size
    return size, int(np.floor(float(w) / h * size))


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left corner of a centred ``size`` x ``size`` crop, rounded as torchvision does."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
