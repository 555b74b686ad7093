"""``lbedge demo``: stream sensors or recordings through the pipeline; write JSON lines and an annotated video."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import cv2
import numpy as np

from .errors import LBEdgeError
from .frames import Frame, SourceTraits
from .pipeline import Pipeline, Result

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")


def display_problem() -> str | None:
    """Why no window can be shown here (None when one can): a headless OpenCV build, or no display."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui and gui.group(1).upper() == "NONE":
        return (
            "this OpenCV build has no GUI (opencv-python-headless): pip install opencv-python for a window, "
            "or run with --headless and --output out.mp4 and/or --jsonl -"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set): run from a desktop session, or use --headless"
    return None


def audio_panel(frame: Frame, width: int = 640, height: int = 240) -> np.ndarray:
    """An RGB picture of an audio window (its waveform), so audio sources show in the window and the video."""
    img = np.zeros((height, width, 3), np.uint8)
    wave = np.asarray(frame.data, np.float32).reshape(-1, np.asarray(frame.data).shape[-1]).mean(0)
    if wave.size:
        cols = np.array_split(np.nan_to_num(wave), width)
        peak = max(1e-6, float(np.abs(wave).max()))
        for x, col in enumerate(cols):
            if col.size:
                lo, hi = (int(height / 2 - v / peak * height * 0.45) for v in (col.min(), col.max()))
                cv2.line(img, (x, hi), (x, lo), (80, 200, 255), 1)
    return img


def frame_picture(frame: Frame) -> np.ndarray:
    """The RGB picture of a frame: the image itself, a colour map of depth (near is warm), or an audio waveform."""
    if frame.modality == "audio":
        return audio_panel(frame)
    data = np.asarray(frame.data)
    if data.dtype == np.uint16:  # depth in mm: near is warm
        valid = data > 0
        far = float(np.percentile(data[valid], 99)) if valid.any() else 1.0
        grey = np.where(valid, 255 - np.clip(data / far * 255, 0, 255), 0).astype(np.uint8)
        pic = cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)[..., ::-1]
        return np.where(valid[..., None], pic, 0).astype(np.uint8)  # invalid pixels black
    return data


class Window:
    """One OpenCV window per source; ``show`` returns False once the user pressed q or Esc."""

    def __init__(self) -> None:
        problem = display_problem()
        if problem:
            raise LBEdgeError(problem)
        self.names: set[str] = set()

    def show(self, name: str, image_bgr: np.ndarray) -> bool:
        title = f"lbedge: {name}"
        if title not in self.names:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            self.names.add(title)
        cv2.imshow(title, image_bgr)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        for title in self.names:
            cv2.destroyWindow(title)


#: pictures smaller than this (longest side, pixels) are enlarged for the overlay (a 160x120 Lepton, 128 px renders)
MIN_OVERLAY_SIDE = 480


def overlay(image_rgb: np.ndarray, result: Result, fps: float) -> np.ndarray:
    """BGR copy of an RGB picture with the source's labels and score bars, the fused label, FPS and per-source status.

    Small pictures are first enlarged by a whole factor (nearest neighbour) so the text stays readable."""
    img = (
        np.ascontiguousarray(image_rgb[..., ::-1])
        if image_rgb.ndim == 3
        else cv2.cvtColor(image_rgb, cv2.COLOR_GRAY2BGR)
    )
    factor = -(-MIN_OVERLAY_SIDE // max(1, max(img.shape[:2])))
    if factor > 1:
        img = cv2.resize(img, (img.shape[1] * factor, img.shape[0] * factor), interpolation=cv2.INTER_NEAREST)
    scale = max(0.4, img.shape[1] / 900)
    y = int(22 * scale)
    for label, score in result.update.scores.items():
        cv2.rectangle(
            img, (8, y - int(14 * scale)), (8 + int(160 * scale * score), y + int(4 * scale)), (0, 160, 0), -1
        )
        cv2.putText(img, f"{label} {score:.2f}", (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), 1)
        y += int(22 * scale)
    fused = f"fused: {result.fused_label} ({'+'.join(result.fused_sources)})" if result.fused_label else ""
    status = "  ".join(f"{n}:{r.label}" for n, r in result.sources.items())
    for text in (fused, f"{fps:.1f} FPS  {status}"):
        cv2.putText(img, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (0, 255, 255), 1)
        y += int(20 * scale)
    return img


def format_result(result: Result) -> str:
    """One line for a terminal: the source's smoothed label and score, the fused label, latency and events."""
    u = result.update
    score = u.scores.get(u.label, 0.0)
    fused = f" | fused {result.fused_label} ({'+'.join(result.fused_sources)})" if len(result.sources) > 1 else ""
    events = "".join(f" [event] {e}" for e in result.events)
    return f"{u.source} #{u.sequence}: {u.label} {score:.2f}{fused} | {u.latency_ms:.0f} ms{events}"


def run_demo(
    pipeline: Pipeline,
    *,
    output: Path | None,
    jsonl: TextIO | None,
    max_results: int | None = None,
    window: bool = False,
    say=print,
    on_result: Callable[[Result], None] | None = None,
) -> dict[str, Any]:
    """Consume the pipeline's results: JSON lines, annotated output (``output``: an .mp4/.avi/.mkv video of the
    first visual source, or a folder of PNGs of every source), an overlay window per source (``window``; q or
    Esc quits), and ``on_result`` for each result. Every pipeline event is passed to ``say`` once.

    Returns counts, FPS, the pipeline's per-source stats and ``interrupted``: None, or ``"SIGINT"``/``"SIGTERM"``
    when Ctrl-C or SIGTERM (see :mod:`lbedge.interrupt`) stopped the run; the video is finished either way. An
    output that cannot be written is an :class:`~lbedge.errors.LBEdgeError`, never a silent success."""
    from .interrupt import signal_name
    from .pipeline import event_log_channel

    writer: VideoOutput | None = None
    display = None
    as_pictures = output is not None and output.suffix.lower() not in VIDEO_SUFFIXES
    visual = [n for n, src in pipeline.sources.items() if src.modality != "audio"]
    video_source = (visual or list(pipeline.sources))[0]  # the video shows one source
    n, t0, shown, interrupted = 0, time.monotonic(), 0, None
    quiet_events, event_log_channel.disabled = event_log_channel.disabled, True  # say() shows them, once

    def show_events() -> None:
        nonlocal shown
        for e in pipeline.events_since(shown):
            say(f"[event] {e}")
        shown = pipeline.event_count

    try:
        display = Window() if window else None
        if as_pictures:
            output.mkdir(parents=True, exist_ok=True)
        for result in pipeline:
            n += 1
            fps = n / max(1e-6, time.monotonic() - t0)
            if jsonl is not None:
                jsonl.write(json.dumps(result.to_dict()) + "\n")
                jsonl.flush()
            if on_result is not None:
                on_result(result)
            frame = result.update.frame
            img = overlay(frame_picture(frame), result, fps) if frame is not None and (output or display) else None
            if display is not None and img is not None and not display.show(result.update.source, img):
                break
            if output is not None and img is not None:
                if as_pictures:  # a folder: every annotated frame of every source
                    path = output / f"{result.update.source}_{result.update.sequence:06d}.png"
                    if not cv2.imwrite(str(path), img):
                        raise LBEdgeError(f"could not write {path} (disk full or not writable?)")
                elif result.update.source == video_source:
                    if writer is None:
                        writer = VideoOutput(
                            output, tuple(img.shape[1::-1]), SourceTraits.of(pipeline.sources[video_source]).fps
                        )
                    writer.write(img)
            show_events()
            if max_results and n >= max_results:
                break
    except KeyboardInterrupt as exc:
        interrupted = signal_name(exc)
        say(f"interrupted ({interrupted}): stopping")
    finally:
        event_log_channel.disabled = quiet_events
        pipeline.stop()
        if display is not None:
            display.close()
        if writer is not None:
            writer.close()
    show_events()
    return {
        "results": n,
        "fps": round(n / max(1e-6, time.monotonic() - t0), 2),
        "sources": pipeline.stats(),
        "interrupted": interrupted,
        "video_frames": writer.frames if writer is not None else 0,
    }


class VideoOutput:
    """An annotated video file: opened on the first frame at that frame's size and the source's rate, checked
    when opened and when closed, so that a video that could not be written is an error, not a silent success."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float | None):
        self.path, self.size = Path(path), size
        self.fps = float(fps) if isinstance(fps, (int, float)) and 0 < fps <= 240 else 10.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        if not self.writer.isOpened():
            raise LBEdgeError(
                f"cannot write the video {self.path} (folder not writable, or no encoder for it "
                "in this OpenCV build): choose another --output"
            )
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        if tuple(img.shape[1::-1]) != self.size:  # a source whose resolution changed: keep the video's
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        if self.frames and (not self.path.is_file() or self.path.stat().st_size == 0):
            raise LBEdgeError(f"the video {self.path} was not written ({self.frames} frames lost): disk full?")


def open_jsonl(spec: str | None) -> TextIO | None:
    if spec is None:
        return None
    return sys.stdout if spec == "-" else open(spec, "w", encoding="utf-8")
