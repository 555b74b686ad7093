"""Sensor frames as pictures for people: RGB as it is, depth and thermal in colour maps, audio as a log-mel
spectrogram. numpy and OpenCV only; every function returns an ``HxWx3`` uint8 RGB array."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .frames import Frame

#: near is warm (red), far is cold (blue); invalid pixels are black
DEPTH_COLORMAP = cv2.COLORMAP_TURBO
#: the part of the depth colour map used (of 0..255): its darkest ends are left out, so no depth looks invalid
DEPTH_COLORMAP_SPAN = (24, 232)
#: the AGC image (hot is bright) in a thermal-camera palette: cold black-purple, hot yellow-white
THERMAL_COLORMAP = cv2.COLORMAP_INFERNO
#: quiet dark, loud bright
SPECTROGRAM_COLORMAP = cv2.COLORMAP_MAGMA
#: the dynamic range a spectrogram shows below its loudest cell (dB)
SPECTROGRAM_FLOOR_DB = 80.0
#: assumed when an audio frame does not state ``meta["sample_rate"]``
DEFAULT_SAMPLE_RATE = 16000


def _colormap(grey: np.ndarray, colormap: int) -> np.ndarray:
    """An 8-bit grey image through an OpenCV colour map, as RGB."""
    return np.ascontiguousarray(cv2.applyColorMap(np.ascontiguousarray(grey), colormap)[..., ::-1])


def image_picture(data: np.ndarray) -> np.ndarray:
    """An image frame as RGB uint8: RGB passes through; grey, RGBA and float images in [0, 1] are converted."""
    img = np.asarray(data)
    if img.dtype != np.uint8:
        img = np.asarray(img, np.float32)
        top = 1.0 if img.size == 0 or np.nanmax(img) <= 1.0 else 255.0
        img = (np.clip(np.nan_to_num(img) / top, 0, 1) * 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def depth_valid(depth: np.ndarray) -> np.ndarray:
    """Where a depth map holds a measurement: finite and positive (0 and NaN are a sensor's 'no data')."""
    d = np.asarray(depth)
    return np.isfinite(d) & (d > 0) if d.dtype.kind == "f" else d > 0


def depth_range(depth: np.ndarray) -> tuple[float, float] | None:
    """The near and far ends a colour map of this depth map spans (its 2nd and 98th percentiles, in the map's own
    units), or None when no pixel is valid."""
    d = np.asarray(depth)
    step = max(1, int(np.sqrt(d.size / 20000)))  # a subsample is enough for percentiles
    sample = d[::step, ::step]
    values = sample[depth_valid(sample)].astype(np.float64)
    if values.size == 0:
        return None
    near, far = (float(v) for v in np.percentile(values, [2, 98]))
    return near, max(far, near + 1e-6)


def depth_picture(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """A depth map in a colour map: ``near`` (and anything nearer) red, ``far`` (and beyond) blue, invalid pixels
    black. Without ``near``/``far`` the map's own :func:`depth_range` is used."""
    d = np.asarray(depth)
    if d.ndim == 3:
        d = d[..., 0]
    valid = depth_valid(d)
    if near is None or far is None:
        span = depth_range(d) or (0.0, 1.0)
        near = span[0] if near is None else near
        far = span[1] if far is None else far
    closeness = (float(far) - np.where(valid, d, far).astype(np.float32)) / max(float(far) - float(near), 1e-6)
    lo, hi = DEPTH_COLORMAP_SPAN
    grey = (lo + np.clip(closeness, 0, 1) * (hi - lo)).astype(np.uint8)
    pic = _colormap(grey, DEPTH_COLORMAP)
    pic[~valid] = 0
    return pic


def thermal_picture(data: np.ndarray) -> np.ndarray:
    """A thermal frame in a thermal colour map. The frame is the 8-bit AGC image sources deliver (hot is bright;
    grey or three equal channels); a temperature map (float) is stretched between its 1st and 99th percentiles."""
    t = np.asarray(data)
    if t.ndim == 3:
        t = cv2.cvtColor(np.ascontiguousarray(t[..., :3]), cv2.COLOR_RGB2GRAY) if t.shape[2] >= 3 else t[..., 0]
    if t.dtype != np.uint8:
        v = t.astype(np.float32)
        finite = np.isfinite(v)
        lo, hi = (float(x) for x in np.percentile(v[finite], [1, 99])) if finite.any() else (0.0, 1.0)
        t = np.where(finite, np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255, 0).astype(np.uint8)
    return _colormap(t, THERMAL_COLORMAP)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Frequency (Hz) to the mel scale (the HTK formula)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The mel scale back to Hz."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_band_of(hz: float, rate: float, bands: int) -> float:
    """Where a frequency lies on a spectrogram of ``bands`` mel bands from 0 Hz to ``rate / 2``: a fractional band
    index (0 is the lowest band's centre)."""
    top = float(hz_to_mel(rate / 2.0))
    return float(hz_to_mel(hz)) / top * (bands + 1) - 1.0


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_filters(rate: int, n_fft: int, bands: int) -> np.ndarray:
    """Triangular mel filters ``[bands, n_fft // 2 + 1]`` over 0 Hz .. ``rate / 2``."""
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(rate / 2.0)), bands + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    rising = (bins[None, :] - edges[:-2, None]) / np.maximum(edges[1:-1, None] - edges[:-2, None], 1e-9)
    falling = (edges[2:, None] - bins[None, :]) / np.maximum(edges[2:, None] - edges[1:-1, None], 1e-9)
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    # a band narrower than one FFT bin would be empty: give it the bin nearest its centre
    for b in np.flatnonzero(filters.sum(1) == 0):
        filters[b, int(np.argmin(np.abs(bins - edges[b + 1])))] = 1.0
    return filters.astype(np.float32)


def log_mel(samples: np.ndarray, rate: float, *, bands: int = 64) -> np.ndarray:
    """A log-mel spectrogram ``[bands, frames]`` in dB below its loudest cell (0 at the loudest, at least
    ``-SPECTROGRAM_FLOOR_DB``), band 0 the lowest frequencies; windows of 25 ms every 10 ms (Hann). Digital
    silence is all floor. ``samples``: mono, or ``[channels, samples]`` (mixed down)."""
    x = np.asarray(samples, np.float32)
    x = np.nan_to_num(x.reshape(-1, x.shape[-1]).mean(0) if x.ndim > 1 else x)
    rate = int(round(rate)) if rate and rate > 0 else DEFAULT_SAMPLE_RATE
    win = max(16, int(rate * 0.025))
    n_fft = 1 << (win - 1).bit_length()
    hop = max(1, int(rate * 0.010))
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(count, n_fft), strides=(x.strides[0] * hop, x.strides[0]), writeable=False
    )
    spectrum = np.fft.rfft(frames * _hann(n_fft), axis=1)
    power = (np.square(spectrum.real) + np.square(spectrum.imag)).astype(np.float32)
    mel = (power @ _mel_filters(rate, n_fft, bands).T).T
    top = float(mel.max(initial=0.0))
    if top <= 1e-12:
        return np.full(mel.shape, -SPECTROGRAM_FLOOR_DB, np.float32)
    db = 10.0 * np.log10(np.maximum(mel, top * 1e-10) / top)
    return np.maximum(db, -SPECTROGRAM_FLOOR_DB).astype(np.float32)


def spectrogram_picture(samples: np.ndarray, rate: float, *, bands: int = 64) -> np.ndarray:
    """An audio window as a log-mel spectrogram picture ``[bands, frames, 3]``: time left to right, low
    frequencies at the bottom, loud bright."""
    db = log_mel(samples, rate, bands=bands)
    grey = ((db + SPECTROGRAM_FLOOR_DB) / SPECTROGRAM_FLOOR_DB * 255).astype(np.uint8)
    return _colormap(grey[::-1], SPECTROGRAM_COLORMAP)


def frame_picture(frame: Frame) -> np.ndarray:
    """The RGB picture of a frame, by its modality: a spectrogram of audio, a colour map of depth (near warm,
    invalid black) or thermal (inferno), the image itself otherwise."""
    if frame.modality == "audio":
        return spectrogram_picture(frame.data, frame.meta.get("sample_rate") or DEFAULT_SAMPLE_RATE)
    if frame.modality == "depth":
        return depth_picture(frame.data)
    if frame.modality == "thermal":
        return thermal_picture(frame.data)
    return image_picture(frame.data)
