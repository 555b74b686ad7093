"""``lbedge demo``: stream sensors or recordings through the pipeline; write JSON lines and an annotated video."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from .pipeline import Pipeline, Result


def overlay(image_rgb: np.ndarray, result: Result, fps: float) -> np.ndarray:
    """BGR frame with the source's labels and score bars, the fused label, FPS and per-source status."""
    img = np.ascontiguousarray(image_rgb[..., ::-1]) if image_rgb.ndim == 3 else cv2.cvtColor(image_rgb, cv2.COLOR_GRAY2BGR)
    scale = max(0.4, img.shape[1] / 900)
    y = int(22 * scale)
    for label, score in result.update.scores.items():
        cv2.rectangle(img, (8, y - int(14 * scale)), (8 + int(160 * scale * score), y + int(4 * scale)), (0, 160, 0), -1)
        cv2.putText(img, f"{label} {score:.2f}", (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), 1)
        y += int(22 * scale)
    fused = f"fused: {result.fused_label} ({'+'.join(result.fused_sources)})" if result.fused_label else ""
    status = "  ".join(f"{n}:{r.label}" for n, r in result.sources.items())
    for text in (fused, f"{fps:.1f} FPS  {status}"):
        cv2.putText(img, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (0, 255, 255), 1)
        y += int(20 * scale)
    return img


def run_demo(pipeline: Pipeline, *, output: Path | None, jsonl: TextIO | None, max_results: int | None = None,
             say=print) -> dict[str, Any]:
    """Consume the pipeline's results; returns counts and FPS. Ctrl-C stops cleanly."""
    writer, size = None, None
    n, t0 = 0, time.monotonic()
    try:
        for result in pipeline:
            n += 1
            fps = n / max(1e-6, time.monotonic() - t0)
            if jsonl is not None:
                jsonl.write(json.dumps(result.to_dict()) + "\n")
                jsonl.flush()
            frame = result.update.frame
            if output is not None and frame is not None and frame.modality != "audio":
                img = overlay(frame.data, result, fps)
                if writer is None:
                    output.parent.mkdir(parents=True, exist_ok=True)
                    size = tuple(img.shape[1::-1])
                    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
                if tuple(img.shape[1::-1]) == size:      # the first visual source sets the video size
                    writer.write(img)
            for e in result.events:
                say(f"[event] {e}")
            if max_results and n >= max_results:
                break
    except KeyboardInterrupt:
        say("interrupted: stopping")
    finally:
        pipeline.stop()
        if writer is not None:
            writer.release()
    return {"results": n, "fps": round(n / max(1e-6, time.monotonic() - t0), 2), "dropped": dict(pipeline.dropped),
            "processed": dict(pipeline.processed)}


def open_jsonl(spec: str | None) -> TextIO | None:
    if spec is None:
        return None
    return sys.stdout if spec == "-" else open(spec, "w", encoding="utf-8")
