"""Resize kernels that reproduce ``torch.nn.functional.interpolate`` (no antialias) in numpy.

The official LanguageBind processors resize float tensors with torchvision/pytorchvideo,
which call ``interpolate(mode="bicubic"|"bilinear", align_corners=False, antialias=False)``.
OpenCV's resize differs from it by up to 6e-5 (it derives source coordinates in double),
so lbedge computes the same float32 source coordinates and cubic (A = -0.75) or linear
weights as PyTorch, and applies them as a separable 4-tap (or 2-tap) gather: exact to
float rounding and a few milliseconds for a camera frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_A = np.float32(-0.75)


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [out, taps] and weights [out, taps] for one axis, as PyTorch computes them."""
    scale = np.float32(in_size) / np.float32(out_size)
    # PyTorch evaluates scale * (dst + 0.5) - 0.5 as one fused multiply-add in float32:
    # the exact product in float64, rounded once, reproduces it bit for bit.
    dst = np.arange(out_size, dtype=np.float64)
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
        x1 = t + np.float32(1.0)            # distance to tap i-1
        x2 = np.float32(1.0) - t            # distance to tap i+1
        w0 = ((_A * x1 - 5 * _A) * x1 + 8 * _A) * x1 - 4 * _A
        w1 = ((_A + 2) * t - (_A + 3)) * t * t + 1
        w2 = ((_A + 2) * x2 - (_A + 3)) * x2 * x2 + 1
        w3 = ((_A * (x2 + 1) - 5 * _A) * (x2 + 1) + 8 * _A) * (x2 + 1) - 4 * _A
        idx = np.clip(np.stack([i - 1, i, i + 1, i + 2], axis=1), 0, in_size - 1)
        w = np.stack([w0, w1, w2, w3], axis=1).astype(np.float32)
    else:
        raise ValueError(f"unknown interpolation {mode!r}: use 'bicubic' or 'bilinear'")
    return idx, w


def _resize_axis(x: np.ndarray, out_size: int, axis: int, mode: str,
                 keep: tuple[int, int] | None = None) -> np.ndarray:
    """Resize one axis to ``out_size``; ``keep=(start, length)`` computes only that output window."""
    in_size = x.shape[axis]
    start, length = keep if keep is not None else (0, out_size)
    if in_size == out_size:
        return np.take(x, np.arange(start, start + length), axis=axis).astype(np.float32, copy=False)
    idx, w = _taps(in_size, out_size, mode)
    idx, w = idx[start:start + length], w[start:start + length]
    # one gather of all taps ([..., out, taps, ...]) and one contraction: ~5x faster than a loop over taps
    gathered = np.take(x, idx, axis=axis).astype(np.float32, copy=False)
    spec = "jkw,jk->jw" if axis == 0 else "hjk,jk->hj"
    return np.einsum(spec, gathered, w).astype(np.float32, copy=False)


def resize(img: np.ndarray, out_h: int, out_w: int, mode: str = "bicubic",
           crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize a float32 image ``[H, W]`` or ``[H, W, C]`` like PyTorch ``interpolate`` (no antialias).

    ``crop=(top, left, height, width)`` returns only that window of the resized image, computing
    nothing outside it (resize-then-crop at the cost of the crop).
    """
    x = np.asarray(img)
    if x.dtype != np.uint8:          # uint8 stays uint8: only the gathered taps are converted to float
        x = x.astype(np.float32, copy=False)
    top, left, ch, cw = crop if crop is not None else (0, 0, out_h, out_w)
    if x.ndim == 3:
        h, w, c = x.shape
        if ch * w <= h * cw:
            # rows first, on the interleaved [H, W*C] view: one contiguous gather for all channels
            rows = _resize_axis(x.reshape(h, w * c), out_h, 0, mode, (top, ch)).reshape(ch, w, c)
            planes = [_resize_axis(np.ascontiguousarray(rows[..., i]), out_w, 1, mode, (left, cw)) for i in range(c)]
        else:   # per channel plane: 2-D contractions are several times faster than one 3-D contraction
            planes = [resize(x[..., i], out_h, out_w, mode, crop) for i in range(c)]
        return np.stack(planes, axis=-1)
    # reduce the axis that shrinks most first: the second pass then runs on fewer pixels
    if ch * x.shape[1] <= x.shape[0] * cw:
        x = _resize_axis(x, out_h, 0, mode, (top, ch))
        return _resize_axis(x, out_w, 1, mode, (left, cw))
    x = _resize_axis(x, out_w, 1, mode, (left, cw))
    return _resize_axis(x, out_h, 0, mode, (top, ch))


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
