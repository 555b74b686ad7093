"""ROS 2 recordings on the command line: ``lbedge label-bag`` (a copy of a rosbag2 recording with lbedge's
vision_msgs classifications added), and the options ``lbedge demo --rosbag`` shares with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from .common import echo_json, label_options, label_progress, load_model, model_option, parse_labels

THERMAL_PROFILES = ("lepton", "infiray-p2", "boson")
AGC = ("minmax", "percentile", "histeq")


def topic_option(fn: Callable) -> Callable:
    return click.option(
        "--topic",
        "topics",
        multiple=True,
        metavar="TOPIC[:MODALITY]",
        help="A topic to classify (repeatable; several are fused by their message stamps). Its modality (image, "
        "depth, thermal, audio) comes from its message type and encoding, or is named after a colon: "
        "/thermal/image_raw:thermal.",
    )(fn)


def audio_format_option(fn: Callable) -> Callable:
    return click.option(
        "--audio-format",
        metavar="RATE[:CHANNELS[:FORMAT]]",
        help="The PCM of audio_common_msgs audio topics (e.g. 16000:1:S16LE); default: the recording's AudioInfo "
        "topic, else 16000:1:S16LE.",
    )(fn)


def rosbag_sources(
    path: Path,
    topics: tuple[str, ...],
    *,
    realtime: bool,
    thermal_profile: str,
    agc: str,
    window: float,
    hop: float,
    audio_format: str | None,
    param: str = "--rosbag",
) -> dict[str, Any]:
    """One RosbagSource per ``--topic`` of a recording, named after its topic; a wrong topic or option is a usage
    error naming what the recording holds."""
    from ..errors import SensorError
    from ..sensors.ros_messages import AudioFormat, DecodeOptions
    from ..sensors.rosbag import RosbagSource, parse_topic, source_name

    if not topics:
        raise click.UsageError("give the topics to classify with --topic TOPIC[:MODALITY] (repeatable)")
    try:
        fmt = AudioFormat.parse(audio_format) if audio_format else None
        options = DecodeOptions(thermal_profile, agc, fmt, window, hop)
        sources = {}
        for spec in topics:
            topic, modality = parse_topic(spec)
            name = source_name(topic)
            if name in sources:
                raise click.BadParameter(f"{topic} is given twice", param_hint="--topic")
            sources[name] = RosbagSource(path, topic, modality=modality, options=options, realtime=realtime)
    except SensorError as exc:
        raise click.BadParameter(str(exc), param_hint=param if "not found" in str(exc) else "--topic") from None
    return sources


@click.command("label-bag")
@click.argument("src", metavar="IN", type=click.Path(path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path))
@model_option(multiple=True, help="A bundle or checkpoint folder, one per modality (repeatable).")
@topic_option
@label_options
@click.option(
    "--template", "templates", multiple=True, help="Prompt template with {} (repeatable; default: per modality)."
)
@click.option(
    "--threshold",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Leave out hypotheses scoring below this (LabelInfo.threshold).",
)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Hypotheses per message.")
@click.option("--smoothing", default="ema", show_default=True, type=click.Choice(["ema", "majority", "none"]))
@click.option(
    "--sync-tolerance",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.0),
    help="Seconds between message stamps that are fused together.",
)
@click.option("--prefix", default="/lbedge", show_default=True, help="Namespace of the topics added.")
@click.option(
    "--storage",
    type=click.Choice(["mcap", "sqlite3"]),
    help="Storage of the copy (default: the input's).",
)
@click.option("--fused-frame-id", default="", help="Frame of the fused classifications (default: the input's).")
@click.option("--thermal-profile", default="lepton", show_default=True, type=click.Choice(THERMAL_PROFILES))
@click.option("--agc", default="percentile", show_default=True, type=click.Choice(AGC), help="Thermal gain control.")
@click.option("--window-s", "window", default=2.0, show_default=True, type=click.FloatRange(0.05, 600.0))
@click.option("--hop-s", "hop", default=1.0, show_default=True, type=click.FloatRange(0.01, 600.0))
@audio_format_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def label_bag(
    src: Path,
    dst: Path,
    models: tuple[Path, ...],
    topics: tuple[str, ...],
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    threshold: float,
    top_k: int,
    smoothing: str,
    sync_tolerance: float,
    prefix: str,
    storage: str | None,
    fused_frame_id: str,
    thermal_profile: str,
    agc: str,
    window: float,
    hop: float,
    audio_format: str | None,
    as_json: bool,
) -> None:
    """Copy the rosbag2 recording IN (a folder, or its .mcap/.db3 file) to the new folder OUT with lbedge's
    classifications of its --topic's added: vision_msgs/Classification per topic (<prefix>/<topic>/classification,
    each with its input's stamp and frame) and fused (<prefix>/fused/classification), vision_msgs/LabelInfo (class
    id -> label, latched). Every input message is copied unchanged; open OUT in Foxglove or rviz beside the input.

    Example: lbedge label-bag run run_labelled -m bundles/image --topic /camera/color/image_raw --labels "a person,a
    forklift"
    """
    from ..errors import InputError
    from ..ros2.bag import LabelBagOptions
    from ..ros2.bag import label_bag as run

    if not models:
        raise click.UsageError("give the model(s) with -m/--model PATH, one per modality (a bundle or a checkpoint)")
    if not src.exists():
        raise click.BadParameter(f"{src} does not exist", param_hint="IN")
    if dst.exists():
        raise click.BadParameter(f"{dst} exists: give a new folder for the labelled recording", param_hint="OUT")
    names = parse_labels(labels, labels_file)
    try:
        options = LabelBagOptions(
            prefix=prefix,
            storage=storage,
            threshold=threshold,
            top_k=top_k,
            smoothing=smoothing,
            sync_tolerance=sync_tolerance,
            fused_frame_id=fused_frame_id,
            templates=tuple(templates) or None,
        )
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    sources = rosbag_sources(
        src,
        topics,
        realtime=False,
        thermal_profile=thermal_profile,
        agc=agc,
        window=window,
        hop=hop,
        audio_format=audio_format,
        param="IN",
    )
    encoders = {}
    for path in models:
        enc = load_model(path)
        encoders[enc.modality] = enc
    summary = run(src, dst, encoders, names, sources, options, progress=label_progress())
    if as_json:
        echo_json(summary)
        return
    for st in summary["sources"].values():
        lost = f", {st['lost']} lost" if st["lost"] else ""
        click.echo(
            f"{st['topic']} ({st['modality']}): {st['messages']} messages, {st['results']} classified, "
            f"{st['skipped']} skipped{lost}"
        )
    for topic, n in summary["written"].items():
        click.echo(f"  wrote {n} messages on {topic}")
    for topic in summary["skipped_topics"]:
        click.echo(f"warning: not copied: {topic}", err=True)
    click.echo(f"{summary['output']} ({summary['storage']}): {summary['copied']} input messages copied")
