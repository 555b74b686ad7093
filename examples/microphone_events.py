#!/usr/bin/env python
"""Zero-shot sound events from a microphone: sliding windows classified against text labels.

Hardware: any input device PortAudio sees (USB microphone, ReSpeaker array, a Jetson's I2S codec); list
them with --list. Needs lbedge[audio] and PortAudio (apt install libportaudio2). Without hardware: --file
plays a WAV/FLAC recording through the same windows.
"""

import argparse

import lbedge
from lbedge.demo import format_result, run_demo
from lbedge.sensors.spec import SourceOptions, source_from_spec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="bundle or checkpoint folder of an audio model")
    ap.add_argument("--device", default="default", help="input device: default, a name (substring) or an index")
    ap.add_argument("--file", help="classify this WAV/FLAC file instead of the microphone")
    ap.add_argument("--window", type=float, default=2.0, help="seconds of sound per result")
    ap.add_argument("--hop", type=float, default=1.0, help="seconds between results")
    ap.add_argument("--labels", default="speech,music,a dog barking,a siren,an engine,silence")
    ap.add_argument("--list", action="store_true", help="list the input devices and exit")
    ap.add_argument("--max-results", type=int)
    args = ap.parse_args(argv)
    if args.list:
        from lbedge.sensors.microphone import list_input_devices

        for device in list_input_devices():
            print(device)
        return
    if not args.model:
        ap.error("--model is required")

    encoder = lbedge.load(args.model)
    spec = args.file or f"mic:{args.device}"
    source = source_from_spec("audio", spec, SourceOptions(realtime=True, audio_window=args.window, audio_hop=args.hop))
    pipeline = lbedge.Pipeline(
        {"audio": source}, encoder, [s.strip() for s in args.labels.split(",")], smoothing="majority", majority_window=3
    )
    pipeline.on_result(lambda result: print(format_result(result), flush=True))
    stats = run_demo(pipeline, output=None, jsonl=None, max_results=args.max_results)
    print(f"{stats['results']} windows classified, {stats['sources']['audio']['lost']} lost")


if __name__ == "__main__":
    main()
