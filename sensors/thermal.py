"""Radiometric thermal frames: camera profiles (raw -> degrees Celsius) and automatic gain control to the
8-bit infrared images LanguageBind was trained on (LLVIP-like: warm is bright)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lbedge.errors import InputError


@dataclass(frozen=True)
class ThermalProfile:
    """How a camera's raw frame maps to temperature."""

    name: str
    width: int
    height: int
    fourcc: str  # what to ask V4L2 for
    kind: str  # "y16_centikelvin" | "yuyv_split" | "y16_counts"

    def to_celsius(self, raw: np.ndarray) -> np.ndarray | None:
        """Temperature map (float32 degC) of a raw frame; None for cameras whose counts are not radiometric."""
        if self.kind == "y16_centikelvin":
            return raw.astype(np.float32) / 100.0 - 273.15
        if self.kind == "yuyv_split":
            return self.raw16(raw).astype(np.float32) / 64.0 - 273.15
        return None

    def plane_to_celsius(self, plane: np.ndarray) -> np.ndarray | None:
        """Temperature map (float32 degC) of the camera's 16-bit thermal plane alone, as ROS 2 drivers publish it
        (a ``mono16`` image of any size); None for cameras whose counts are not radiometric."""
        if self.kind == "y16_centikelvin":
            return plane.astype(np.float32) / 100.0 - 273.15
        if self.kind == "yuyv_split":
            return plane.astype(np.float32) / 64.0 - 273.15
        return None

    @property
    def capture_size(self) -> tuple[int, int]:
        """(width, height) to ask V4L2 for: InfiRay/Topdon frames stack the image above the thermal plane."""
        return (self.width, 2 * self.height) if self.kind == "yuyv_split" else (self.width, self.height)

    def from_capture(self, frame: np.ndarray) -> np.ndarray:
        """The raw frame of a camera in the profile's layout, whatever shape OpenCV returned it in.

        With ``CAP_PROP_CONVERT_RGB=0`` OpenCV builds differ: Y16 arrives as ``HxW`` uint16, as a flat
        ``1xN`` array (OpenCV 4.11, opencv#27166) or as ``HxWx2`` / ``Hx2W`` bytes; YUYV as ``HxWx2`` or flat
        bytes. Every form with the right number of bytes is accepted; any other size is an error (never
        silently reshaped garbage).
        """
        buf = np.ascontiguousarray(frame)
        if self.kind == "yuyv_split":
            return buf.view(np.uint8).reshape(-1)
        if buf.dtype == np.uint16 and buf.shape == (self.height, self.width):
            return buf
        data = buf.view(np.uint8).reshape(-1)
        need = self.width * self.height * 2
        if data.size != need:
            raise InputError(
                f"{self.name}: expected a {self.width}x{self.height} 16-bit frame ({need} bytes), got "
                f"{frame.dtype} {frame.shape}; is the camera in {self.fourcc.strip()} mode at that size?"
            )
        return data.view("<u2").reshape(self.height, self.width)

    def raw16(self, raw: np.ndarray) -> np.ndarray:
        """The 16-bit thermal plane of a raw frame (InfiRay/Topdon: the bottom half of a 256x384 YUYV frame)."""
        if self.kind != "yuyv_split":
            if raw.dtype != np.uint16 or raw.ndim != 2:
                raise InputError(f"{self.name}: expected a 16-bit single-channel frame, got {raw.dtype} {raw.shape}")
            return raw
        buf = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        need = self.width * self.height * 2 * 2
        if buf.size != need:
            raise InputError(
                f"{self.name}: expected {need} bytes of YUYV {self.width}x{2 * self.height}, got {buf.size}"
            )
        return buf[need // 2 :].view("<u2").reshape(self.height, self.width)


AGC_METHODS = ("minmax", "percentile", "histeq")


def check_agc(method: str) -> str:
    """``method`` if it is one of :data:`AGC_METHODS`, else an InputError naming them (raised when a source is
    built, so a typo is one error at once, never a failure on every frame)."""
    if method not in AGC_METHODS:
        raise InputError(f"unknown AGC method {method!r}: choose {', '.join(AGC_METHODS)}")
    return method


PROFILES = {
    "lepton": ThermalProfile("FLIR Lepton 3.5 (PureThermal, TLinear)", 160, 120, "Y16 ", "y16_centikelvin"),
    "infiray-p2": ThermalProfile("InfiRay P2 / Topdon TC001", 256, 192, "YUYV", "yuyv_split"),
    "boson": ThermalProfile("FLIR Boson (Y16 counts)", 640, 512, "Y16 ", "y16_counts"),
}


def thermal_frame(profile: ThermalProfile, raw: np.ndarray, agc_method: str) -> tuple[np.ndarray, dict]:
    """One raw frame of ``profile`` -> (8-bit AGC RGB image, meta with ``raw``, ``celsius`` and ``profile``)."""
    raw16 = profile.raw16(raw)
    celsius = profile.to_celsius(raw)
    return agc(celsius if celsius is not None else raw16, agc_method), {
        "raw": raw16,
        "celsius": celsius,
        "profile": profile.name,
    }


def agc(values: np.ndarray, method: str = "percentile", *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Automatic gain control: a temperature map or raw counts -> 8-bit 3-channel image (hot = bright).

    ``minmax`` stretches the frame's range; ``percentile`` the ``low``..``high`` percentiles (robust to a few
    hot pixels); ``histeq`` equalises the histogram (LLVIP-like contrast). Non-finite pixels become black.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2 or v.size == 0:
        raise InputError(f"thermal AGC needs a 2-D map, got shape {v.shape}")
    finite = np.isfinite(v)
    if not finite.any():
        raise InputError("thermal frame has no finite pixels")
    vals = v[finite]
    if method == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
    elif method == "percentile":
        lo, hi = (float(x) for x in np.percentile(vals, [low, high]))
    else:
        check_agc(method)
        lo, hi = float(vals.min()), float(vals.max())
    scaled = np.zeros_like(v)
    if hi > lo:
        scaled = np.clip((v - lo) / (hi - lo), 0, 1)
    out = np.where(finite, scaled * 255.0, 0).astype(np.uint8)
    if method == "histeq":
        out = cv2.equalizeHist(out)
    return np.repeat(out[..., None], 3, axis=2)
