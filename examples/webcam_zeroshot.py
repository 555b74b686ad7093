#!/usr/bin/env python
"""Zero-shot classification of a camera with an lbedge image model, in a window or on the terminal.

Hardware: a USB/V4L2 camera (index or /dev/videoN), a Jetson CSI camera (a GStreamer pipeline ending in
appsink) or an RTSP/HTTP stream. Without hardware: pass a video file or a folder of images as --camera.
"""

import argparse
from pathlib import Path

import lbedge
from lbedge.demo import format_result, run_demo
from lbedge.sensors.spec import SourceOptions, source_from_spec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundle or checkpoint folder of an image model")
    ap.add_argument("--camera", default="0", help="index, /dev/videoN, GStreamer pipeline, URL, video or folder")
    ap.add_argument("--labels", default="a person,a dog,a cat,a car,a bicycle,an empty room")
    ap.add_argument("--headless", action="store_true", help="no window: print one line per result")
    ap.add_argument("--output", help="also write the video (H.264 MP4 with lbedge[video]) here")
    ap.add_argument("--max-results", type=int, help="stop after this many results")
    args = ap.parse_args(argv)

    encoder = lbedge.load(args.model)  # a bundle runs without torch
    camera = source_from_spec("rgb", args.camera, SourceOptions(realtime=True))
    labels = [label.strip() for label in args.labels.split(",")]
    pipeline = lbedge.Pipeline({"camera": camera}, encoder, labels, smoothing="ema")
    if args.headless:
        pipeline.on_result(lambda result: print(format_result(result), flush=True))
    output = Path(args.output) if args.output else None
    stats = run_demo(pipeline, output=output, jsonl=None, max_results=args.max_results, window=not args.headless)
    camera_stats = stats["sources"]["camera"]
    print(
        f"{stats['results']} results at {stats['fps']} FPS, {camera_stats['dropped']} frames dropped, "
        f"{camera_stats['lost']} lost"
    )


if __name__ == "__main__":
    main()
