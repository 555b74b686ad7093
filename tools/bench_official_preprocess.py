#!/usr/bin/env python
"""Time the OFFICIAL LanguageBind processors on the sample media (one thread), for the side-by-side table
that benchmarks/bench_preprocess.py prints. Runs in the official environment (see make_official_fixtures.py),
never imports lbedge, and prints one JSON object: {case: median milliseconds}.

    /path/to/official-venv/bin/python tools/bench_official_preprocess.py --official /path/to/LanguageBind
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch  # before decord (see make_official_fixtures.py)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_official_fixtures as fx  # noqa: E402  (its tiny configs and pytorchvideo stub)


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True)
    ap.add_argument("--samples", default=os.path.join(fx.REPO_ROOT, "..", "shared", "languagebind_samples"))
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    fx.install_pytorchvideo_stub()
    sys.path.insert(0, os.path.abspath(args.official))
    import languagebind as lb
    from PIL import Image

    s = os.path.abspath(args.samples)
    img = lb.LanguageBindImageProcessor(fx.make_config(lb, "image"))
    th = lb.LanguageBindThermalProcessor(fx.make_config(lb, "thermal"))
    dp = lb.LanguageBindDepthProcessor(fx.make_config(lb, "depth"))
    au = lb.LanguageBindAudioProcessor(fx.make_config(lb, "audio"))
    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    frame720 = (np.random.default_rng(0).random((720, 1280, 3)) * 255).astype(np.uint8)
    r = args.repeat
    out = {
        "image file (image/0.jpg)": median_ms(lambda: img(images=[os.path.join(s, "image", "0.jpg")]), r),
        "thermal file (thermal/0.jpg)": median_ms(lambda: th(images=[os.path.join(s, "thermal", "0.jpg")]), r),
        "depth file (depth/0.png)": median_ms(lambda: dp(images=[os.path.join(s, "depth", "0.png")]), r),
        "audio file (audio/0.wav, 10.2 s)": median_ms(lambda: au(images=[os.path.join(s, "audio", "0.wav")]), r),
        # the official processors take paths; an in-memory frame goes through their transform as a PIL image
        "RGB frame 640x480 (in memory)": median_ms(lambda: img.transform(Image.fromarray(frame)), r),
        "RGB frame 1280x720 (in memory)": median_ms(lambda: img.transform(Image.fromarray(frame720)), r),
    }
    print(json.dumps({"official": out, "threads": 1, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
