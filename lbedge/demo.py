"""``lbedge demo``: stream sensors or recordings through the pipeline; show every source in one mosaic (a window,
a browser-playable video or PNGs) and write JSON lines."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

import cv2
import numpy as np

from .errors import LBEdgeError
from .frames import Source, SourceTraits
from .mosaic import Mosaic
from .pipeline import Pipeline, Result
from .video_output import VIDEO_SUFFIXES, VideoOutput
from .web import WebView

__all__ = ["VIDEO_SUFFIXES", "VideoOutput", "Window", "display_problem", "format_result", "run_demo", "video_source"]


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


class Window:
    """One OpenCV window showing the mosaic of every source; ``show`` returns False once the user pressed q or Esc."""

    TITLE = "lbedge demo"

    def __init__(self) -> None:
        problem = display_problem()
        if problem:
            raise LBEdgeError(problem)
        self.opened = False

    def show(self, image_bgr: np.ndarray) -> bool:
        if not self.opened:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(self.TITLE, *image_bgr.shape[1::-1])
            self.opened = True
        cv2.imshow(self.TITLE, image_bgr)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.TITLE)


def video_source(sources: Mapping[str, Source]) -> str:
    """The source a demo video follows (one video frame per result of it, at its rate): the visual source with the
    highest frame rate stated now (a source states the rate of a file or device once open: open sources first, as
    the CLI does), the first of equals, a source stating none last; the first source when all are audio."""
    visual = [n for n, src in sources.items() if src.modality != "audio"] or list(sources)
    rates = {n: SourceTraits.of(sources[n]).fps or 0.0 for n in visual}
    return max(visual, key=lambda n: rates[n])  # max keeps the first of equals


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
    web: WebView | None = None,
    web_linger: float | None = None,
) -> dict[str, Any]:
    """Consume the pipeline's results: JSON lines, the mosaic of every source (:class:`~lbedge.mosaic.Mosaic`)
    in one window (``window``; q or Esc quits) and/or in ``output``, and ``on_result`` for each result. Every
    pipeline event is passed to ``say`` once.

    ``output``: a video file (.mp4/.avi/.mkv/.webm; H.264, or VP9 for .webm, see
    :class:`~lbedge.video_output.VideoOutput`) with one mosaic frame per result of :func:`video_source`, at that
    source's rate; or a folder, where every result writes the mosaic as ``<source>_<sequence>.png``.

    Returns counts, FPS, the pipeline's per-source stats, ``video_frames``, ``video_source``, ``video_codec``,
    ``video_fps`` and ``interrupted``: None, or ``"SIGINT"``/``"SIGTERM"`` when Ctrl-C or SIGTERM (see
    :mod:`lbedge.interrupt`) stopped the run; the video is finished either way. An output that cannot be
    written is an :class:`~lbedge.errors.LBEdgeError`, never a silent success.

    ``web``: a started :class:`~lbedge.web.WebView` that gets the pipeline, every result and event and the mosaic
    (at its frame rate); when the results end it keeps serving for ``web_linger`` seconds (None: until Ctrl-C or
    SIGTERM), and it is stopped with the pipeline."""
    from .interrupt import signal_name
    from .pipeline import event_log_channel

    writer: VideoOutput | None = None
    display = None
    as_pictures = output is not None and output.suffix.lower() not in VIDEO_SUFFIXES
    mosaic = (
        Mosaic({name: src.modality for name, src in pipeline.sources.items()}, bars=pipeline.top_k)
        if output is not None or window or web is not None
        else None
    )
    follow = video_source(pipeline.sources)
    n, t0, shown, interrupted = 0, time.monotonic(), 0, None
    quiet_events, event_log_channel.disabled = event_log_channel.disabled, True  # say() shows them, once

    def show_events() -> None:
        nonlocal shown
        for e in pipeline.events_since(shown):
            say(f"[event] {e}")
            if web is not None:
                web.send_event(e)
        shown = pipeline.event_count

    try:
        display = Window() if window else None
        if as_pictures:
            output.mkdir(parents=True, exist_ok=True)
        if web is not None:
            web.attach(pipeline)
        for result in pipeline:
            n += 1
            if jsonl is not None:
                jsonl.write(json.dumps(result.to_dict()) + "\n")
                jsonl.flush()
            if on_result is not None:
                on_result(result)
            if web is not None:
                web.publish_result(result)
            if mosaic is not None:
                mosaic.update(result)
                source = result.update.source
                to_video = output is not None and not as_pictures and source == follow
                to_web = web is not None and web.wants_frame()
                img = mosaic.render() if display is not None or as_pictures or to_video or to_web else None
                if to_web:
                    web.publish_frame(img)
                if display is not None and not display.show(img):
                    break
                if as_pictures:
                    path = output / f"{source}_{result.update.sequence:06d}.png"
                    if not cv2.imwrite(str(path), img):
                        raise LBEdgeError(f"could not write {path} (disk full or not writable?)")
                elif to_video:
                    if writer is None:
                        fps = SourceTraits.of(pipeline.sources[follow]).fps
                        writer = VideoOutput(output, mosaic.size, fps, warn=lambda m: say(f"warning: {m}"))
                    writer.write(img)
            show_events()
            if max_results and n >= max_results:
                break
        if web is not None:
            show_events()
            if mosaic is not None:
                web.publish_frame(mosaic.render())  # the final state stays on the page
            until = "until Ctrl-C" if web_linger is None else f"for {web_linger:g} s"
            web.end(f"the results ended after {n}; the view stays up {until}")
            if web_linger != 0:
                say(f"the results ended; the web view {web.url} stays up {until}")
                deadline = None if web_linger is None else time.monotonic() + web_linger
                while web.serving and (deadline is None or time.monotonic() < deadline):
                    left = 0.5 if deadline is None else deadline - time.monotonic()
                    web.wait(max(0.0, min(0.5, left)))
                    show_events()  # e.g. labels switched from the page meanwhile
    except KeyboardInterrupt as exc:
        interrupted = signal_name(exc)
        say(f"interrupted ({interrupted}): stopping")
    finally:
        event_log_channel.disabled = quiet_events
        pipeline.stop()
        if web is not None:
            web.stop()
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
        "video_source": follow if writer is not None else None,
        "video_codec": writer.codec if writer is not None else None,
        "video_fps": writer.fps if writer is not None else None,
    }


def open_jsonl(spec: str | None) -> TextIO | None:
    if spec is None:
        return None
    return sys.stdout if spec == "-" else open(spec, "w", encoding="utf-8")
