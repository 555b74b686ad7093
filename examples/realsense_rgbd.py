#!/usr/bin/env python
"""RGB-D zero-shot classification from an Intel RealSense: depth (and colour, given an image model), fused.

Hardware: a RealSense D400/D500 camera (pip install "lbedge[realsense]"; on Jetson build librealsense with
its Python bindings). Without hardware: --recording plays a .db3 (or older .bag) recording, e.g. one made
with lbedge.sensors.realsense.write_recording, every recorded frame at its recorded rate (--fast: as fast as
the models go). Frames a source could not deliver are reported as events and counted as lost at the end.
"""

import argparse

import lbedge
from lbedge.demo import format_result, run_demo
from lbedge.sensors import RealSense, RealSenseRecording
from lbedge.sensors.split import rgbd_sources


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth-model", required=True, help="bundle or checkpoint folder of a depth model")
    ap.add_argument("--image-model", help="also classify the colour stream with this image model")
    ap.add_argument("--recording", help="play this .db3/.bag recording instead of a live camera")
    ap.add_argument("--fast", action="store_true", help="play the recording as fast as the models go, not paced")
    ap.add_argument("--serial", help="which camera, when several are plugged in")
    ap.add_argument(
        "--filters",
        default="spatial,temporal,hole_filling",
        help="RealSense post-filters for live depth (comma-separated; empty for none)",
    )
    ap.add_argument("--labels", default="a chair,a table,a person,a wall,a doorway,an empty floor")
    ap.add_argument("--headless", action="store_true", help="no window: print one line per result")
    ap.add_argument("--max-results", type=int)
    args = ap.parse_args(argv)

    color = bool(args.image_model)
    if args.recording:
        # every recorded frame, paced at the recorded rate by lbedge (not librealsense's lossy real-time playback)
        camera = RealSenseRecording(args.recording, realtime=not args.fast, color=color, align_to_color=color)
    else:
        filters = [f for f in args.filters.split(",") if f]
        camera = RealSense(args.serial, color=color, align_to_color=color, filters=filters)
    sources = rgbd_sources(camera) if color else {"depth": camera}
    encoders = {"depth": lbedge.load(args.depth_model)}
    if color:
        encoders["image"] = lbedge.load(args.image_model)
    pipeline = lbedge.Pipeline(sources, encoders, [s.strip() for s in args.labels.split(",")], sync_tolerance=0.05)
    if args.headless:
        pipeline.on_result(lambda result: print(format_result(result), flush=True))
    stats = run_demo(pipeline, output=None, jsonl=None, max_results=args.max_results, window=not args.headless)
    print(f"{stats['results']} results at {stats['fps']} FPS")
    for name, st in stats["sources"].items():  # lost: recorded frames the source never delivered
        counts = f"{st['processed']} processed, {st['dropped']} dropped, {st['skipped']} skipped, {st['lost']} lost"
        print(f"  {name}: {counts}")


if __name__ == "__main__":
    main()
