"""Image, thermal and depth preprocessing: the official LanguageBind inference transforms in numpy.

image / thermal: RGB in [0, 1] -> bicubic resize of the short side (torchvision ``Resize(224)`` on a
tensor, no antialias) -> centre crop -> CLIP mean/std.
depth: 16-bit millimetres -> metres -> clip below ``min_depth`` -> clip at and divide by
``max_depth`` -> 3 channels -> the same resize, crop and normalisation.

Every encoded image goes through :func:`decode_image`, which reads the size from the header and refuses
more than ``limits().max_image_pixels`` pixels before OpenCV decodes anything; arrays, PIL images and
video frames are held to the same limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..config import PreprocessConfig
from ..errors import InputError
from ..limits import hint, limits
from .image_header import ImageHeader, bytes_source, file_source, read_header
from .resize import center_crop_box, resize, short_side_size

PathLike = (str, os.PathLike)
BytesLike = (bytes, bytearray, memoryview)


def check_pixels(height: int, width: int, what: str) -> None:
    """Refuse an image or frame of more than ``limits().max_image_pixels`` pixels (``InputError``)."""
    limit = limits().max_image_pixels
    if height * width > limit:
        raise InputError(
            f"{what}: {width} x {height} = {width * height} pixels is more than the limit of "
            f"{limit} pixels (max_image_pixels); downscale it first, or {hint('max_image_pixels')}"
        )


def decode_image(
    source: str | os.PathLike | bytes | bytearray | memoryview, flags: int = cv2.IMREAD_COLOR
) -> np.ndarray:
    """Decode an encoded image (a file path, or its bytes) with OpenCV, as ``cv2.imread`` would (BGR or BGRA
    channel order; ``flags`` as for ``cv2.imread``).

    The size is read from the header first and an image of more than ``limits().max_image_pixels`` is
    refused before anything is decoded; so are formats lbedge cannot measure (see
    :data:`~lbedge.preprocess.image_header.FORMATS`). Every failure is an ``InputError``.
    """
    if isinstance(source, PathLike):
        return _decode_file(Path(source), flags)
    if isinstance(source, BytesLike):
        return _decode_bytes(source, flags)
    raise InputError(f"decode_image takes a file path or encoded bytes, got {type(source).__name__}")


def _decode_file(p: Path, flags: int) -> np.ndarray:
    """``decode_image`` of a file: the header is read by seeking, the pixels by OpenCV from the file."""
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    what = f"image file {p}"
    try:
        with open(p, "rb") as f:
            header = read_header(file_source(f), what)
    except OSError as exc:
        raise InputError(f"cannot read image file {p}: {exc}") from exc
    check_pixels(header.height, header.width, what)
    if os.name == "nt":  # OpenCV cannot open non-ASCII paths on Windows: decode the bytes instead
        return _checked_decode(lambda: cv2.imdecode(np.fromfile(str(p), np.uint8), flags), header, what)
    return _checked_decode(lambda: cv2.imread(str(p), flags), header, what)


def _decode_bytes(data: bytes | bytearray | memoryview, flags: int) -> np.ndarray:
    """``decode_image`` of encoded bytes in memory."""
    what = "the given image bytes"
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise InputError(f"image bytes must be one contiguous buffer: {exc}") from None
    header = read_header(bytes_source(view), what)
    check_pixels(header.height, header.width, what)
    return _checked_decode(lambda: cv2.imdecode(np.frombuffer(view, np.uint8), flags), header, what)


def _checked_decode(decode: Callable[[], np.ndarray | None], header: ImageHeader, what: str) -> np.ndarray:
    """Run an OpenCV decode; a failure, an OpenCV error or an image larger than the limit is an InputError."""
    try:
        img = decode()
    except cv2.error as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
        raise InputError(f"cannot decode {what} ({header.format}): {detail}") from None
    if img is None or img.size == 0:
        raise InputError(f"cannot decode {what}: empty, truncated or corrupt {header.format} data")
    check_pixels(img.shape[0], img.shape[1], what)
    return img


def read_image_file(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode an image file with OpenCV (``decode_image`` of a path); every failure is an ``InputError``."""
    return decode_image(Path(path), flags)


def _from_object(x: Any) -> np.ndarray:
    """Arrays, PIL images and encoded bytes as a numpy array (PIL is used only if the caller passes one)."""
    if isinstance(x, BytesLike):
        img = decode_image(x, cv2.IMREAD_UNCHANGED)
        return img[..., ::-1] if img.ndim == 3 and img.shape[2] in (3, 4) else img
    if hasattr(x, "mode") and hasattr(x, "convert"):  # a PIL image
        width, height = x.size
        check_pixels(height, width, "the PIL image")
        if x.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
            x = x.convert("RGB")
        return np.asarray(x)
    if isinstance(x, np.ndarray):
        return x
    raise InputError(
        f"unsupported image input of type {type(x).__name__}: pass a path, a numpy array "
        "(HWC uint8 RGB, or float32 in [0, 1]), a PIL image or encoded bytes"
    )


def to_rgb(x: Any, *, bgr: bool = False) -> tuple[np.ndarray, float]:
    """Any image input -> HWC RGB (uint8, or float32 in [0, 1]) and the factor that maps it to [0, 1].

    Grey is replicated and alpha dropped.
    """
    if isinstance(x, PathLike):
        img = decode_image(Path(x), cv2.IMREAD_COLOR)[..., ::-1]
    else:
        img = _from_object(x)
        if bgr and img.ndim == 3:
            img = img[..., ::-1]
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"expected an image of shape HxW or HxWxC, got shape {img.shape}")
    check_pixels(img.shape[0], img.shape[1], "the image")
    c = img.shape[2]
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    elif c == 4:
        img = img[..., :3]
    elif c != 3:
        raise InputError(f"expected 1, 3 or 4 colour channels (HWC), got {c} channels in shape {img.shape}")
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img), 1.0 / 255.0
    if img.dtype == np.uint16:
        raise InputError(
            "got a 16-bit image for an 8-bit modality: convert radiometric or 16-bit frames "
            "to 8-bit first (thermal: apply automatic gain control)"
        )
    if np.issubdtype(img.dtype, np.floating):
        f = img.astype(np.float32)
        if not np.isfinite(f).all():
            raise InputError("image contains NaN or infinite values")
        if f.min() < -1e-3 or f.max() > 1.0 + 1e-3:
            raise InputError(
                f"float images must hold values in [0, 1], got range [{f.min():.3g}, {f.max():.3g}]"
                ": pass uint8 or divide by 255"
            )
        return f, 1.0
    raise InputError(f"unsupported image dtype {img.dtype}: use uint8, or float32 in [0, 1]")


def to_depth_mm(x: Any) -> np.ndarray:
    """Any depth input -> HxW float32 millimetres; non-finite pixels become 0 (invalid, as a sensor reports)."""
    if isinstance(x, PathLike):
        img = decode_image(Path(x), cv2.IMREAD_UNCHANGED)
    else:
        img = _from_object(x)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"depth must be a single-channel HxW map in millimetres, got shape {img.shape}")
    check_pixels(img.shape[0], img.shape[1], "the depth map")
    if img.dtype == np.uint8:
        raise InputError("got an 8-bit depth map, which has no metric scale: pass 16-bit millimetres (uint16)")
    if img.dtype == np.uint16 or np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.floating):
        f = img.astype(np.float32)
        return np.where(np.isfinite(f), f, np.float32(0.0))
    raise InputError(f"unsupported depth dtype {img.dtype}: use uint16 millimetres or float millimetres")


def resize_crop_normalize(
    img: np.ndarray, cfg: PreprocessConfig, rounding: str = "torchvision", scale: float = 1.0
) -> np.ndarray:
    """HWC image -> CHW float32: short-side resize, centre crop, ``* scale``, mean/std normalisation.

    The resize is linear, so an 8-bit image is resized as it is and scaled by 1/255 afterwards, which
    spares converting the whole frame to float.
    """
    h, w = img.shape[:2]
    nh, nw = short_side_size(h, w, cfg.size, rounding)
    top, left = center_crop_box(nh, nw, cfg.size)
    out = resize(img, nh, nw, cfg.interpolation, crop=(top, left, cfg.size, cfg.size))
    planes = cv2.split(out) if out.ndim == 3 else [out]
    if len(planes) == 1:
        planes = planes * 3
    # (x * scale - mean) / std as one multiply-add per channel plane, written straight into CHW
    gain = np.float32(scale) / np.asarray(cfg.std, np.float32)
    offset = -np.asarray(cfg.mean, np.float32) / np.asarray(cfg.std, np.float32)
    chw = np.empty((3, *planes[0].shape), np.float32)
    for i, plane in enumerate(planes):
        np.multiply(plane, gain[i], out=chw[i])
        chw[i] += offset[i]
    return chw


def image_transform(x: Any, cfg: PreprocessConfig, *, bgr: bool = False) -> np.ndarray:
    """One image or thermal frame -> ``[3, size, size]`` float32."""
    img, scale = to_rgb(x, bgr=bgr)
    return resize_crop_normalize(img, cfg, scale=scale)


def depth_transform(x: Any, cfg: PreprocessConfig) -> np.ndarray:
    """One depth map in millimetres -> ``[3, size, size]`` float32."""
    d = to_depth_mm(x) / np.float32(cfg.depth_scale)
    d = np.maximum(d, np.float32(cfg.min_depth))
    if cfg.max_depth:
        d = np.minimum(d, np.float32(cfg.max_depth)) / np.float32(cfg.max_depth)
    else:
        d = d / d.max()
    # the official transform repeats to 3 channels before resizing; resizing once is identical
    return resize_crop_normalize(d[..., None], cfg)
