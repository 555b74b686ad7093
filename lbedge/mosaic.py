"""The demo's picture: one tile per source (its latest frame as a picture, its smoothed label, score bars, FPS)
under a banner with the fused label and the sources it fused. Tiles are re-drawn only when their source has a
new result; :meth:`Mosaic.render` composes them."""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import cv2
import numpy as np

from .frames import Frame
from .pictures import depth_picture, depth_range, frame_picture, thermal_picture
from .pipeline import Result, SourceResult

#: how much of a new depth frame's range the colour map takes (the rest is the previous frames'): steady colours
DEPTH_RANGE_SMOOTHING = 0.2

#: the narrowest tile (pixels): smaller tiles are not readable at a glance
MIN_TILE_WIDTH = 320
#: score bars per tile at most (a pipeline's top-k may be larger)
MAX_BARS = 5
FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR colours
WHITE, GREY, DIM = (255, 255, 255), (170, 170, 170), (110, 110, 110)
YELLOW, GREEN, BAR = (0, 220, 255), (60, 190, 60), (150, 120, 80)
HEADER_BG, PANEL_BG, BANNER_BG = (48, 48, 48), (28, 28, 28), (70, 40, 10)


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def fit_text(text: str, width: int, scale: float, thickness: int) -> str:
    """``text`` cut (with '..') so that it fits ``width`` pixels at this font scale."""
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "..", FONT, scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + ".."


def put_text(
    img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple, thickness: int = 1, right=False
) -> int:
    """Anti-aliased text at ``org`` (its baseline's left end, or right end with ``right``); returns its width."""
    w = cv2.getTextSize(text, FONT, scale, thickness)[0][0]
    x = org[0] - w if right else org[0]
    cv2.putText(img, text, (x, org[1]), FONT, scale, colour, thickness, cv2.LINE_AA)
    return w


def fit_picture(picture_rgb: np.ndarray, width: int, height: int, *, stretch: bool = False) -> np.ndarray:
    """A BGR ``height x width`` image of an RGB picture, scaled to fit (letterboxed in black, or ``stretch``ed to
    fill). Small sensors are enlarged by nearest neighbour, so their pixels stay honest."""
    src = np.ascontiguousarray(picture_rgb[..., ::-1])
    h, w = src.shape[:2]
    if stretch:
        return cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)
    f = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * f))), max(1, min(height, round(h * f)))
    interp = cv2.INTER_NEAREST if f >= 2 else (cv2.INTER_AREA if f < 0.5 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(src, (nw, nh), interpolation=interp)
    return out


def shrink(data: np.ndarray, width: int, height: int) -> np.ndarray:
    """A sensor map larger than ``width`` x ``height`` subsampled (nearest neighbour: depth's 'no data' and NaN stay
    as they are) to fit it; a smaller one as it is."""
    h, w = data.shape[:2]
    f = min(width / w, height / h)
    if f >= 1:
        return data
    if data.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):  # types OpenCV resizes
        data = data.astype(np.float32)
    return cv2.resize(data, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_NEAREST)


def legend_of(frame: Frame, depth_span: tuple[float, float] | None = None) -> str:
    """A short key to a frame's picture: what its colours mean and the range they span (``depth_span``: the near
    and far ends of a depth colour map, default the frame's own)."""
    if frame.modality == "depth":
        span = depth_span or depth_range(frame.data)
        scale = 1.0 if frame.units == "m" else 0.001
        return f"near {span[0] * scale:.1f} m (red) - far {span[1] * scale:.1f} m (blue)" if span else "no depth"
    if frame.modality == "thermal":
        c = frame.meta.get("celsius")
        if isinstance(c, np.ndarray) and c.size and np.isfinite(c).any():
            lo, hi = np.nanpercentile(c[np.isfinite(c)], [1, 99])
            return f"{lo:.0f} C (dark) - {hi:.0f} C (bright)"
        return "cold dark - hot bright"
    if frame.modality == "audio":
        rate = frame.meta.get("sample_rate")
        seconds = np.asarray(frame.data).shape[-1] / rate if rate else 0
        top = f"{rate / 2000:.0f} kHz" if rate else "rate/2"
        return f"log-mel 0 - {top}, {seconds:.2g} s window"
    return ""


@dataclass
class _Tile:
    name: str
    modality: str
    image: np.ndarray  # BGR, the whole tile
    depth_span: tuple[float, float] | None = None  # the smoothed near/far of a depth tile's colour map
    times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))

    @property
    def fps(self) -> float:
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class Mosaic:
    """Every source of a pipeline in one picture: a grid of tiles (one per source, at least
    :data:`MIN_TILE_WIDTH` wide, text scaled to the tile) under a banner with the fused label.

    ``sources``: name -> modality, in display order. ``bars``: score bars per tile (the pipeline's top-k, at most
    :data:`MAX_BARS`).
    ``update(result)`` redraws the tile of the result's source; ``render()`` returns the mosaic (BGR uint8,
    even width and height, as video encoders need)."""

    def __init__(self, sources: Mapping[str, str], *, tile_width: int = 480, bars: int = 3):
        if not sources:
            raise ValueError("a mosaic needs at least one source")
        self.order = list(sources)
        self.cols = math.ceil(math.sqrt(len(self.order)))
        self.rows = math.ceil(len(self.order) / self.cols)
        self.bars = max(1, min(int(bars), MAX_BARS))
        w = self.tile_w = _even(max(MIN_TILE_WIDTH, tile_width))
        s = self.scale = w / 480
        self.thick = max(1, round(2 * s))
        self.header_h = _even(36 * s)
        self.pic_h = _even(w * 3 / 4)
        self.label_h, self.row_h = round(50 * s), round(30 * s)
        self.panel_h = _even(self.label_h + self.bars * self.row_h + 12 * s)
        self.tile_h = self.header_h + self.pic_h + self.panel_h
        self.banner_h = _even(60 * s)
        self.fused: tuple[str | None, float, list[str]] = (None, 0.0, [])
        self.tiles = {n: _Tile(n, m, self._blank(n, m)) for n, m in sources.items()}

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of :meth:`render`'s picture."""
        return self.cols * self.tile_w, self.banner_h + self.rows * self.tile_h

    def tile_box(self, name: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a source's tile in the rendered mosaic."""
        i = self.order.index(name)
        return (i % self.cols) * self.tile_w, self.banner_h + (i // self.cols) * self.tile_h, self.tile_w, self.tile_h

    def picture_box(self, name: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a source's picture area (its frame) in the rendered mosaic."""
        x, y, w, _ = self.tile_box(name)
        return x, y + self.header_h, w, self.pic_h

    def _header(self, img: np.ndarray, name: str, modality: str, fps: float | None) -> None:
        s, w = self.scale, self.tile_w
        img[: self.header_h] = HEADER_BG
        base = self.header_h - round(11 * s)
        right = put_text(img, f"{fps:.1f} FPS", (w - round(10 * s), base), 0.65 * s, GREY, 1, right=True) if fps else 0
        title = name if name == modality else f"{name} ({modality})"
        title = fit_text(title, w - right - round(30 * s), 0.75 * s, self.thick)
        put_text(img, title, (round(10 * s), base), 0.75 * s, WHITE, self.thick)

    def _blank(self, name: str, modality: str) -> np.ndarray:
        img = np.zeros((self.tile_h, self.tile_w, 3), np.uint8)
        self._header(img, name, modality, None)
        img[self.header_h + self.pic_h :] = PANEL_BG
        s = self.scale
        put_text(img, "waiting for frames", (round(20 * s), self.header_h + self.pic_h // 2), 0.7 * s, DIM, 1)
        return img

    def _draw_problem(self, tile: _Tile, text: str) -> None:
        s = self.scale
        tile.image[self.header_h : self.header_h + self.pic_h] = 0
        text = fit_text(text, self.tile_w - round(40 * s), 0.6 * s, 1)
        put_text(tile.image, text, (round(20 * s), self.header_h + self.pic_h // 2), 0.6 * s, DIM, 1)

    def _draw_picture(self, tile: _Tile, frame: Frame) -> None:
        """The frame's picture in the tile, with its legend (a depth map's colours span a smoothed range)."""
        if frame.modality == "depth":
            data = shrink(np.asarray(frame.data), self.tile_w, self.pic_h)  # colour only the pixels shown
            span = depth_range(data)
            if span and tile.depth_span:
                a = DEPTH_RANGE_SMOOTHING
                span = (a * span[0] + (1 - a) * tile.depth_span[0], a * span[1] + (1 - a) * tile.depth_span[1])
            tile.depth_span = span or tile.depth_span
            picture = depth_picture(data, *(tile.depth_span or (None, None)))
        elif frame.modality == "thermal":
            picture = thermal_picture(shrink(np.asarray(frame.data), self.tile_w, self.pic_h))
        else:
            picture = frame_picture(frame)
        img, s = tile.image, self.scale
        y1 = self.header_h + self.pic_h
        img[self.header_h : y1] = fit_picture(picture, self.tile_w, self.pic_h, stretch=frame.modality == "audio")
        legend = legend_of(frame, tile.depth_span)
        if legend:
            text = fit_text(legend, self.tile_w - round(24 * s), 0.5 * s, 1)
            tw = cv2.getTextSize(text, FONT, 0.5 * s, 1)[0][0]
            cv2.rectangle(img, (0, y1 - round(26 * s)), (tw + round(20 * s), y1), (0, 0, 0), -1)
            put_text(img, text, (round(10 * s), y1 - round(8 * s)), 0.5 * s, WHITE, 1)

    def _panel(self, img: np.ndarray, r: SourceResult) -> None:
        s, w, y0 = self.scale, self.tile_w, self.header_h + self.pic_h
        img[y0:] = PANEL_BG
        pad = round(12 * s)
        score = r.scores.get(r.label, 0.0)
        label_y = y0 + self.label_h - round(14 * s)
        sw = put_text(img, f"{score:.2f}", (w - pad, label_y), 0.8 * s, GREY, 1, right=True)
        big = self.thick + 1
        put_text(img, fit_text(r.label, w - sw - 3 * pad, 1.15 * s, big), (pad, label_y), 1.15 * s, WHITE, big)
        text_w, num_w = round(0.36 * w), round(56 * s)
        bar_x0, bar_x1 = pad + text_w, w - pad - num_w
        for k, (label, p) in enumerate(list(r.scores.items())[: self.bars]):
            y = y0 + self.label_h + k * self.row_h
            mid = y + self.row_h // 2
            colour = GREEN if label == r.label else BAR
            put_text(img, fit_text(label, text_w - pad, 0.6 * s, 1), (pad, mid + round(7 * s)), 0.6 * s, GREY, 1)
            cv2.rectangle(img, (bar_x0, y + round(6 * s)), (bar_x1, y + self.row_h - round(6 * s)), (60, 60, 60), -1)
            end = bar_x0 + round((bar_x1 - bar_x0) * float(np.clip(p, 0, 1)))
            if end > bar_x0:
                cv2.rectangle(img, (bar_x0, y + round(6 * s)), (end, y + self.row_h - round(6 * s)), colour, -1)
            put_text(img, f"{p:.2f}", (w - pad, mid + round(7 * s)), 0.6 * s, GREY, 1, right=True)

    def update(self, result: Result, now: float | None = None) -> None:
        """Take a pipeline result: redraw its source's tile (picture, smoothed label, score bars, FPS) and the
        banner's fused label. A source the mosaic was not built with is ignored."""
        r = result.update
        tile = self.tiles.get(r.source)
        if tile is not None:
            tile.times.append(time.monotonic() if now is None else now)
            if r.frame is not None:
                try:
                    self._draw_picture(tile, r.frame)
                except Exception as exc:  # a frame that cannot be pictured costs only its picture
                    self._draw_problem(tile, f"cannot show this frame: {exc}")
            self._header(tile.image, tile.name, tile.modality, tile.fps)
            self._panel(tile.image, r)
        score = result.fused_scores.get(result.fused_label, 0.0) if result.fused_label else 0.0
        self.fused = (result.fused_label, score, list(result.fused_sources))

    def _banner(self, img: np.ndarray) -> None:
        s, w = self.scale, img.shape[1]
        img[: self.banner_h] = BANNER_BG
        base = self.banner_h - round(18 * s)
        label, score, sources = self.fused
        x = round(14 * s)
        x += put_text(img, "fused:", (x, base), 0.8 * s, GREY, 1) + round(12 * s)
        if label is None:
            put_text(img, "waiting for synchronised sources", (x, base), 0.8 * s, DIM, 1)
            return
        x += put_text(img, label, (x, base), 1.3 * s, YELLOW, self.thick + 1) + round(12 * s)
        x += put_text(img, f"{score:.2f}", (x, base), 0.8 * s, WHITE, 1) + round(16 * s)
        note = fit_text(f"from {' + '.join(sources)}", max(0, w - x - round(14 * s)), 0.65 * s, 1)
        put_text(img, note, (x, base), 0.65 * s, GREY, 1)

    def render(self) -> np.ndarray:
        """The mosaic now: banner, then every source's latest tile (BGR uint8, :attr:`size`)."""
        w, h = self.size
        img = np.zeros((h, w, 3), np.uint8)
        self._banner(img)
        for name, tile in self.tiles.items():
            x, y, tw, th = self.tile_box(name)
            img[y : y + th, x : x + tw] = tile.image
        for c in range(1, self.cols):  # thin separators between tiles
            img[self.banner_h :, c * self.tile_w - 1 : c * self.tile_w + 1] = (0, 0, 0)
        for r in range(1, self.rows):
            y = self.banner_h + r * self.tile_h
            img[y - 1 : y + 1] = (0, 0, 0)
        return img
