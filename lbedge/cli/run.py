"""Run and measure models: ``lbedge demo`` (sensors or recordings, live), ``lbedge eval`` (zero-shot top-1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..video_output import VIDEO_SUFFIXES
from . import EXIT_ERROR
from .common import echo_json, label_options, label_progress, load_model, model_option, parse_labels, writable_output
from .ros import audio_format_option, rosbag_sources, topic_option

if TYPE_CHECKING:
    from ..web import WebView


def _parsed_option(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    """A click callback: ``--gate THRESHOLD[:MAX_AGE_S]`` as a :class:`lbedge.gate.ChangeGate`, ``--web HOST:PORT``
    as (host, port); None when the option is not given, a usage error naming the option for a bad value."""
    if value is None:
        return None
    from ..errors import UsageError
    from ..gate import parse_gate
    from ..web import parse_address

    parse = {"gate": parse_gate, "web": parse_address}[param.name]
    try:
        return parse(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{param.name}") from None


@click.command()
@model_option(
    "--bundle",
    "--checkpoint",
    multiple=True,
    help="A bundle or checkpoint folder, one per modality (repeatable); --bundle and --checkpoint are the "
    "older names of this option.",
)
@click.option("--rgb", help="Camera index, /dev/videoN, GStreamer pipeline, URL, video file or image folder.")
@click.option("--depth", help="realsense, realsense:SERIAL, a .bag/.db3 recording or a folder of 16-bit frames.")
@click.option("--thermal", help="UVC camera index or /dev/videoN, a folder of 16-bit frames or a 16-bit FFV1 video.")
@click.option("--mic", help="Microphone: default, a device name (substring) or an index.")
@click.option("--audio", help="WAV/FLAC file.")
@click.option(
    "--rosbag",
    type=click.Path(path_type=Path),
    help="A ROS 2 recording (rosbag2 folder, or its .mcap/.db3 file, with lbedge[ros]): its --topic's are the "
    "sources, fused by their message stamps.",
)
@topic_option
@audio_format_option
@click.option(
    "--thermal-profile",
    default="lepton",
    show_default=True,
    type=click.Choice(["lepton", "infiray-p2", "boson"]),
    help="Thermal camera (or recording) profile.",
)
@click.option(
    "--agc",
    default="percentile",
    show_default=True,
    type=click.Choice(["minmax", "percentile", "histeq"]),
    help="Thermal gain control.",
)
@click.option(
    "--depth-unit",
    default="mm",
    show_default=True,
    type=click.Choice(["mm", "cm", "m", "100um"]),
    help="Unit of 16-bit depth frame folders.",
)
@click.option(
    "--window-s",
    "audio_window",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05, 600.0),
    help="Audio window in seconds.",
)
@click.option(
    "--hop-s",
    "audio_hop",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.01, 600.0),
    help="Audio hop in seconds.",
)
@label_options
@click.option("--smoothing", default="ema", show_default=True, type=click.Choice(["ema", "majority", "none"]))
@click.option("--headless", is_flag=True, help="No window: write --output and/or --jsonl.")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Video of every sensor (.mp4: H.264, .webm: VP9, with lbedge[video]; .avi, .mkv), or a folder for a PNG "
    "of the mosaic after every result.",
)
@click.option("--jsonl", help="Write one JSON result per line to this file, or - for stdout.")
@click.option(
    "--realtime",
    is_flag=True,
    help="Pace recordings at their own rate (default: as fast as possible); every recorded frame is still delivered.",
)
@click.option("--loop", is_flag=True, help="Start recordings over at their end.")
@click.option("--max-results", type=click.IntRange(1), help="Stop after this many results.")
@click.option(
    "--web",
    metavar="HOST:PORT",
    callback=_parsed_option,
    help="Serve the live view to a browser at http://HOST:PORT/ (lbedge[web]): the mosaic (MJPEG), results and "
    "events (Server-Sent Events) and a page that changes the labels while it runs. No authentication: bind "
    "127.0.0.1 (e.g. 127.0.0.1:8080) and use an ssh tunnel; 0.0.0.0:8080 serves every network, with a warning. "
    "Implies --headless.",
)
@click.option(
    "--web-linger",
    metavar="SECONDS",
    type=click.FloatRange(0),
    help="With --web: seconds the view stays up after the results end (recordings, --max-results); default: until "
    "Ctrl-C or SIGTERM.",
)
@click.option(
    "--lb-mini",
    "lb_mini",
    is_flag=True,
    help="The embedded default: lb-mini's bundles on recorded held-out scenes of its synthetic world "
    "(RGB MP4, RealSense recording, 16-bit thermal, WAV, written under out/), paced in real time; "
    "no other option needed (--output: the video of every sensor, default out/lb-mini-demo.mp4).",
)
@click.option(
    "--scenes",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="With --lb-mini: how many scenes (2 s each).",
)
@click.option("--student", is_flag=True, help="With --lb-mini: the distilled students instead of the teachers.")
@click.option(
    "--gate",
    metavar="THRESHOLD[:MAX_AGE_S]",
    callback=_parsed_option,
    help="Change-gated inference (default: off): a source's frame whose preprocessed input differs from its last "
    "classified frame by at most THRESHOLD (mean absolute difference of 16x16 thumbnails of its channels, in "
    "normalised input units; e.g. 0.02) re-emits that result, marked reused, without running the model; a frame is "
    "classified anyway MAX_AGE_S seconds (default 1.0) after the last classified one, and always after a label switch.",
)
def demo(
    models: tuple[Path, ...],
    rgb: str | None,
    depth: str | None,
    thermal: str | None,
    mic: str | None,
    audio: str | None,
    rosbag: Path | None,
    topics: tuple[str, ...],
    audio_format: str | None,
    thermal_profile: str,
    agc: str,
    depth_unit: str,
    audio_window: float,
    audio_hop: float,
    labels: str | None,
    labels_file: Path | None,
    smoothing: str,
    headless: bool,
    output: Path | None,
    jsonl: str | None,
    realtime: bool,
    loop: bool,
    max_results: int | None,
    web: tuple[str, int] | None,
    web_linger: float | None,
    lb_mini: bool,
    scenes: int,
    student: bool,
    gate,
) -> None:
    """Stream sensors or recordings through zero-shot classification.

    Shows every source in one window (labels, score bars, FPS, fused label; q quits), or with --headless writes
    the same view as a video and/or JSON lines. Ctrl-C or SIGTERM stop cleanly (the video is finished) with
    exit status 130 or 143; a run that produced no result at all exits with 1. `lbedge demo --lb-mini
    --headless` is `make demo`. With --web HOST:PORT a browser shows the same live, and changes the labels
    (docs/web-view.md).
    """
    from ..demo import display_problem, open_jsonl, run_demo
    from ..errors import SensorError
    from ..pipeline import Pipeline
    from ..sensors.spec import SourceOptions, source_from_spec

    if web_linger is not None and web is None:
        raise click.UsageError("--web-linger applies to --web: give --web HOST:PORT too")
    headless = headless or web is not None  # the browser is the screen
    problem = None if headless else display_problem()
    if problem:
        raise click.UsageError(problem)
    if output is not None:
        writable_output(output, folder=output.suffix.lower() not in VIDEO_SUFFIXES)
    if jsonl not in (None, "-"):
        writable_output(Path(jsonl), "--jsonl")
    if lb_mini:
        if models or rgb or depth or thermal or mic or audio or rosbag:
            raise click.UsageError("--lb-mini brings its own models and recordings: drop -m/--model and sources")
        from ..lbmini.demo import run_lb_mini_demo

        view = _start_web(web, err=False)
        stats = run_lb_mini_demo(
            out="out",
            video=output or "default",
            scenes=scenes,
            student=student,
            window=not headless,
            say=click.echo,
            gate=gate,
            web=view,
            web_linger=web_linger,
        )
        demo_exit(stats)
        return

    if audio and mic:
        raise click.UsageError("give --audio FILE or --mic DEVICE, not both")
    specs = {k: v for k, v in (("rgb", rgb), ("depth", depth), ("thermal", thermal), ("audio", audio)) if v}
    if mic:
        specs["audio"] = f"mic:{mic}"
    if rosbag is not None and specs:
        raise click.UsageError("--rosbag brings its own sources (--topic): drop --rgb/--depth/--thermal/--mic/--audio")
    if rosbag is None and (topics or audio_format):
        raise click.UsageError("--topic and --audio-format name what to read from a recording: give --rosbag too")
    if rosbag is not None and loop:
        raise click.UsageError("--loop does not apply to --rosbag recordings")
    if not specs and rosbag is None:
        raise click.UsageError("give at least one source: --rgb, --depth, --thermal, --mic, --audio or --rosbag")
    if not models:
        raise click.UsageError("give the model(s) with -m/--model PATH, one per modality (a bundle or a checkpoint)")
    names = parse_labels(labels, labels_file)
    if headless and not (output or jsonl or web):
        jsonl = "-"
    view = _start_web(web, err=jsonl == "-")  # before the models load: a port in use fails at once
    opts = SourceOptions(
        realtime=realtime,
        loop=loop,
        thermal_profile=thermal_profile,
        agc=agc,
        depth_unit=depth_unit,
        audio_window=audio_window,
        audio_hop=audio_hop,
    )
    sources = {}
    for kind, spec in specs.items():
        try:
            sources[kind] = source_from_spec(kind, spec, opts)
        except SensorError as exc:  # a spec that names no usable source: the command line is wrong
            raise click.BadParameter(str(exc), param_hint=f"--{'mic' if spec.startswith('mic') else kind}") from None
    if rosbag is not None:
        sources = rosbag_sources(
            rosbag,
            topics,
            realtime=realtime,
            thermal_profile=thermal_profile,
            agc=agc,
            window=audio_window,
            hop=audio_hop,
            audio_format=audio_format,
        )
    encoders = {}
    for path in models:
        enc = load_model(path)
        encoders[enc.modality] = enc
    for src in sources.values():  # fail now on a source that cannot open at all; later failures reopen
        src.open()
    pipe = Pipeline(
        sources,
        encoders,
        names,
        smoothing=smoothing,
        progress=label_progress(),
        sync_clock="host" if rosbag is None else "device",  # a recording's sources: fused by message stamps
        gate=gate,
    )
    log_to = None if jsonl == "-" else click.echo
    stats = run_demo(
        pipe,
        output=output,
        jsonl=open_jsonl(jsonl),
        max_results=max_results,
        window=not headless,
        say=log_to or (lambda s: click.echo(s, err=True)),
        web=view,
        web_linger=web_linger,
    )
    err = jsonl == "-"
    click.echo(f"{stats['results']} results at {stats['fps']} FPS" + (f"; output {output}" if output else ""), err=err)
    for name, st in stats["sources"].items():
        lost = f", {st['lost']} lost in the recording" if st.get("lost") else ""
        lost += f", {st['reused']} reused (change gate: model skipped)" if st.get("reused") else ""
        click.echo(
            f"  {name}: {st['processed']} processed, {st['dropped']} dropped, {st['skipped']} skipped{lost}, "
            f"{st['fps']} FPS, latency {st['latency_ms']} ms (preprocess {st['preprocess_ms']}, model "
            f"{st['infer_ms']})",
            err=err,
        )
    demo_exit(stats)


def _start_web(web: tuple[str, int] | None, *, err: bool) -> WebView | None:
    """The started web view of ``--web`` (None without it), stopped when the command ends, however it ends."""
    if web is None:
        return None
    from ..web import WebView

    view = WebView(*web, say=lambda s: click.echo(s, err=err)).start()
    click.get_current_context().call_on_close(view.stop)
    return view


def demo_exit(stats: dict) -> None:
    """Exit non-zero when the demo was interrupted (130/143) or produced nothing (1)."""
    from ..interrupt import EXIT_SIGINT, EXIT_SIGTERM

    if stats.get("interrupted"):
        sys.exit(EXIT_SIGTERM if stats["interrupted"] == "SIGTERM" else EXIT_SIGINT)
    if stats.get("results", 0) == 0:
        click.echo("error: no results: no source delivered a usable frame (see the events above)", err=True)
        sys.exit(EXIT_ERROR)


@click.command("eval")
@model_option(
    multiple=True,
    help="A bundle or checkpoint folder to evaluate (repeatable; default: lb-mini's bundles and students).",
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Labelled JSONL/CSV manifest (file + label, or texts: the first is the label). Default: held-out "
    "scenes of lbedge's synthetic world (lb-mini's task).",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label (repeatable; averaged). Default with --data: '{}'.",
)
@click.option(
    "--scenes", default=400, show_default=True, type=click.IntRange(1), help="Held-out world scenes per modality."
)
@click.option("--seed", default=1, show_default=True, help="Seed of the held-out world scenes (training used 0).")
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Bundle precisions to evaluate (default: all in the bundle).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Also write the results as JSON.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True, help="A Markdown table (modalities x variants), as in the README.")
def eval_cmd(
    models: tuple[Path, ...],
    paths: tuple[Path, ...],
    data: Path | None,
    templates: tuple[str, ...],
    scenes: int,
    seed: int,
    precisions: tuple[str, ...],
    output: Path | None,
    as_json: bool,
    markdown: bool,
) -> None:
    """Zero-shot top-1 of models (bundles or checkpoints; default: lb-mini's bundles and students) beside chance.

    Without --data, each model is measured on held-out scenes of the synthetic world lb-mini was trained on:
    attribute combinations never seen in training, prompts in phrasings never seen in training."""
    if output is not None:
        writable_output(output, "--output")
    from ..evaluate import evaluate, format_table, markdown_table
    from ..lbmini.evaluation import default_models, evaluate_lb_mini  # the application's default task

    chosen = (*models, *paths)
    if not chosen:
        chosen = tuple(default_models(say=lambda s: click.echo(s, err=True)))
    if data is not None:
        results = []
        for path in chosen:
            enc = load_model(path)
            precision = enc.precision.get("vision", "fp32") + (
                " (torch)" if enc.backends.get("vision") == "torch" else ""
            )
            results.append(evaluate(enc, data, templates=templates or ("{}",), model=path.name, precision=precision))
    else:
        results = evaluate_lb_mini(
            chosen,
            scenes=scenes,
            seed=seed,
            precisions=precisions or None,
            say=lambda s: click.echo(f"... {s}", err=True),
        )
    rows = [r.to_dict() for r in results]
    if output:
        output.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    if as_json:
        echo_json(rows)
    else:
        click.echo(markdown_table(results) if markdown else format_table(results))
