#!/usr/bin/env python
"""Zero-shot classification of a radiometric thermal camera, with the scene's temperature range.

Hardware: a UVC thermal camera: FLIR Lepton on a PureThermal board (--profile lepton), InfiRay P2 / Topdon
TC001 (infiray-p2) or FLIR Boson (boson), as /dev/videoN. Without hardware: pass a folder of 16-bit
PNG/TIFF frames or a 16-bit FFV1 video in the profile's raw units as --camera.
"""

import argparse

import numpy as np

import lbedge
from lbedge.demo import format_result, run_demo
from lbedge.sensors.spec import SourceOptions, source_from_spec


def describe(result: lbedge.Result) -> str:
    """The result line plus the hottest and coldest temperature of the classified frame (radiometric cameras)."""
    frame = result.update.frame
    celsius = frame.meta.get("celsius") if frame is not None else None
    span = f" | {np.nanmin(celsius):.1f}..{np.nanmax(celsius):.1f} degC" if celsius is not None else ""
    return format_result(result) + span


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundle or checkpoint folder of a thermal model")
    ap.add_argument("--camera", default="/dev/video0", help="/dev/videoN or index; or a recording (see above)")
    ap.add_argument("--profile", default="lepton", choices=["lepton", "infiray-p2", "boson"])
    ap.add_argument(
        "--agc",
        default="percentile",
        choices=["minmax", "percentile", "histeq"],
        help="how temperatures become the 8-bit infrared image the model expects",
    )
    ap.add_argument("--labels", default="a person,a dog,a car,an empty road")
    ap.add_argument("--headless", action="store_true", help="no window: print one line per result")
    ap.add_argument("--max-results", type=int)
    args = ap.parse_args(argv)

    encoder = lbedge.load(args.model)
    camera = source_from_spec(
        "thermal", args.camera, SourceOptions(realtime=True, thermal_profile=args.profile, agc=args.agc)
    )
    pipeline = lbedge.Pipeline({"thermal": camera}, encoder, [s.strip() for s in args.labels.split(",")])
    if args.headless:
        pipeline.on_result(lambda result: print(describe(result), flush=True))
    stats = run_demo(pipeline, output=None, jsonl=None, max_results=args.max_results, window=not args.headless)
    print(f"{stats['results']} results at {stats['fps']} FPS, {stats['sources']['thermal']['lost']} frames lost")


if __name__ == "__main__":
    main()
