"""``lbedge watch``: event detectors defined in a watch file (docs/watches.md), run on sensors or recordings
(``lbedge watch WATCHFILE``, the same as ``lbedge watch run WATCHFILE``) and calibrated on recordings
(``lbedge watch calibrate WATCHFILE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import LBEdgeError
from .common import label_progress, load_model, model_option, writable_output


class WatchGroup(click.Group):
    """``lbedge watch``: its first argument is a subcommand or, for ``run``, the watch file itself."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def source_options(fn: Callable) -> Callable:
    """The sources of a watch, as ``lbedge demo`` names them (lbedge.sensors.spec)."""
    for opt in reversed(
        [
            model_option(multiple=True, help="A bundle or checkpoint folder, one per modality (repeatable)."),
            click.option("--rgb", help="Camera index, /dev/videoN, GStreamer pipeline, URL, video file or folder."),
            click.option("--depth", help="realsense, realsense:SERIAL, a .bag/.db3 recording or a 16-bit folder."),
            click.option("--thermal", help="UVC camera index or /dev/videoN, a 16-bit folder or FFV1 video."),
            click.option("--mic", help="Microphone: default, a device name (substring) or an index."),
            click.option("--audio", help="WAV/FLAC file."),
            click.option(
                "--thermal-profile",
                default="lepton",
                show_default=True,
                type=click.Choice(["lepton", "infiray-p2", "boson"]),
            ),
            click.option(
                "--agc", default="percentile", show_default=True, type=click.Choice(["minmax", "percentile", "histeq"])
            ),
            click.option(
                "--depth-unit", default="mm", show_default=True, type=click.Choice(["mm", "cm", "m", "100um"])
            ),
            click.option(
                "--window-s", "audio_window", default=2.0, show_default=True, type=click.FloatRange(0.05, 600.0)
            ),
            click.option("--hop-s", "audio_hop", default=1.0, show_default=True, type=click.FloatRange(0.01, 600.0)),
            click.option(
                "--folder-fps",
                type=click.FloatRange(0.1, 1000.0),
                help="Frame rate of frame folders (RGB images, 16-bit depth or thermal): their frames' times.",
            ),
            click.option("--realtime", is_flag=True, help="Pace recordings at their own rate."),
            click.option(
                "--smoothing",
                default="none",
                show_default=True,
                type=click.Choice(["ema", "majority", "none"]),
                help="The pipeline's smoothing of each source's probabilities (detectors have their own "
                "min_duration and hysteresis).",
            ),
            click.option("--max-results", type=click.IntRange(1), help="Stop after this many results."),
        ]
    ):
        fn = opt(fn)
    return fn


def _pipeline(cfg: Any, models: tuple[Path, ...], kw: dict[str, Any], *, loop: bool = False) -> Any:
    """The pipeline of a watch: its sources, models and every label the watch needs."""
    from ..errors import SensorError
    from ..pipeline import Pipeline
    from ..sensors.spec import SourceOptions, source_from_spec

    if kw["audio"] and kw["mic"]:
        raise click.UsageError("give --audio FILE or --mic DEVICE, not both")
    specs = {k: kw[k] for k in ("rgb", "depth", "thermal", "audio") if kw[k]}
    if kw["mic"]:
        specs["audio"] = f"mic:{kw['mic']}"
    if not specs:
        raise click.UsageError("give at least one source: --rgb, --depth, --thermal, --mic or --audio")
    if not models:
        raise click.UsageError("give the model(s) with -m/--model PATH, one per modality (a bundle or a checkpoint)")
    opts = SourceOptions(
        realtime=kw["realtime"],
        loop=loop,
        thermal_profile=kw["thermal_profile"],
        agc=kw["agc"],
        depth_unit=kw["depth_unit"],
        audio_window=kw["audio_window"],
        audio_hop=kw["audio_hop"],
    )
    sources = {}
    for kind, spec in specs.items():
        try:
            sources[kind] = source_from_spec(kind, spec, opts)
        except SensorError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{'mic' if spec.startswith('mic') else kind}") from None
        if kw["folder_fps"] and Path(spec).is_dir() and hasattr(sources[kind], "fps"):
            sources[kind].fps = float(kw["folder_fps"])  # a folder's frames are timed by their index at this rate
    cfg.check_sources(list(sources))
    encoders = {}
    for path in models:
        enc = load_model(path)
        encoders[enc.modality] = enc
    for src in sources.values():  # fail now on a source that cannot open at all
        src.open()
    labels = cfg.label_set()
    live = any(s.live for s in sources.values())
    return Pipeline(
        sources,
        encoders,
        labels,
        templates=list(cfg.templates) if cfg.templates is not None else None,
        top_k=len(labels),
        smoothing=kw["smoothing"],
        progress=label_progress(),
        sync_clock="host" if live else "device",  # recordings: fused (and timed) by their own stamps
        max_batch=1 if not live else 8,  # recordings in step, so fusion sees each source's frame of the moment
    )


def _consume(pipe: Any, max_results: int | None) -> int:
    n = 0
    with pipe:
        for _ in pipe:
            n += 1
            if max_results is not None and n >= max_results:
                break
    return n


@click.group("watch", cls=WatchGroup)
def watch() -> None:
    """Event detectors defined in a watch file (TOML): `lbedge watch WATCHFILE -m MODEL --rgb ...` runs them on
    sensors or recordings; `lbedge watch calibrate WATCHFILE ...` chooses their thresholds. See docs/watches.md."""


@watch.command("run")
@click.argument("watchfile", type=click.Path(path_type=Path))
@source_options
@click.option("--loop", is_flag=True, help="Start recordings over at their end.")
@click.option("--jsonl", help="Write each event (starts and ends) as one JSON line to this file, or - for stdout.")
@click.option(
    "--snapshots",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write each finished event's snapshot (the frame at its peak) as a PNG into this folder.",
)
def run_cmd(
    watchfile: Path, models: tuple[Path, ...], loop: bool, jsonl: str | None, snapshots: Path | None, **kw: Any
) -> None:
    """Run a watch file's detectors on sensors or recordings; print each event (or write JSON lines).

    Events start when a detector's score stays at or above its threshold for min_duration (frame times, so a
    recording gives the same events however fast it is read) and end below threshold - hysteresis."""
    from ..demo import open_jsonl
    from ..watch import WatchConfig, WatchEvent

    cfg = WatchConfig.load(watchfile)
    if jsonl not in (None, "-"):
        writable_output(Path(jsonl), "--jsonl")
    if snapshots is not None:
        try:
            snapshots.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot create {snapshots}: {exc.strerror or exc}", param_hint="--snapshots"
            ) from None
    pipe = _pipeline(cfg, models, kw, loop=loop)
    out = open_jsonl(jsonl)
    say = (lambda s: click.echo(s, err=True)) if jsonl == "-" else click.echo
    counts = {d.name: 0 for d in cfg.detectors}

    failed: list[str] = []  # an output that could not be written: the run stops and fails (never silently)

    def on_event(ev: WatchEvent) -> None:
        if failed:
            return
        doc = ev.to_dict()
        try:
            if ev.kind == "end":
                counts[ev.detector] += 1
                if snapshots is not None and ev.snapshot is not None:
                    doc["snapshot"]["file"] = str(_write_snapshot(snapshots, ev))
            say(ev.describe())
            if out is not None:
                out.write(json.dumps(doc) + "\n")
                out.flush()
        except OSError as exc:
            failed.append(f"cannot write the events ({exc.strerror or exc}); stopped")
            pipe.stop()

    engine = pipe.watch(cfg, on_event)
    try:
        n = _consume(pipe, kw["max_results"])
    finally:
        engine.close()
        if out is not None and jsonl != "-":
            try:
                out.close()
            except OSError as exc:
                failed.append(f"cannot write {jsonl} ({exc.strerror or exc})")
    if failed:
        raise LBEdgeError(failed[0])
    say(f"{n} results; events: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if n == 0:
        raise LBEdgeError("no results: no source delivered a usable frame")


def _write_snapshot(folder: Path, ev: Any) -> Path:
    from ..opencv import cv2
    from ..pictures import frame_picture

    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in ev.detector)
    path = folder / f"{safe}-{ev.stream}-{ev.start:09.3f}.png"
    if not cv2.imwrite(str(path), frame_picture(ev.snapshot)[..., ::-1]):
        raise OSError(f"OpenCV could not write {path}")
    return path


@watch.command("calibrate")
@click.argument("watchfile", type=click.Path(path_type=Path))
@source_options
@click.option(
    "--truth",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON list of {start, end, present: [detector...]} intervals (the recording's seconds): labelled clips. "
    "Without it the recording is the empty scene: every frame is a negative for every detector.",
)
@click.option(
    "--false-alarm-rate",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="The fraction of negative frames allowed to reach a threshold.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The calibrated watch file (default: WATCHFILE's name with .calibrated.toml).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what calibration measured as JSON.")
def calibrate_cmd(
    watchfile: Path,
    models: tuple[Path, ...],
    truth: Path | None,
    false_alarm_rate: float,
    output: Path | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Choose each detector's threshold on each of its streams from recordings: the lowest score that at most
    --false-alarm-rate of the negative frames reach. Writes the calibrated watch file (per-stream thresholds and
    what was measured) and prints the measurements: negative and positive score statistics, frame recall."""
    from ..watch import ScoreRecorder, WatchConfig, calibrate, load_truth

    cfg = WatchConfig.load(watchfile)
    intervals = load_truth(truth, cfg.names()) if truth is not None else None
    output = output or watchfile.with_name(watchfile.name.removesuffix(".toml") + ".calibrated.toml")
    writable_output(output, "--output")
    pipe = _pipeline(cfg, models, kw)
    if any(s.live for s in pipe.sources.values()) and kw["max_results"] is None:
        raise click.UsageError("calibrating on live sensors needs --max-results (or record them first)")
    clock = "device" if pipe.sync_clock == "device" else "host"
    rec = ScoreRecorder(cfg, list(pipe.sources), clock=clock, fusion_tolerance=pipe.sync_tolerance, fusion_skew=10.0)
    pipe.on_result(rec.update)
    n = _consume(pipe, kw["max_results"])
    rec.close()
    if n == 0:
        raise LBEdgeError("no results: no source delivered a usable frame")
    data = ", ".join(
        f"{k}={v}"
        for k, v in (("rgb", kw["rgb"]), ("depth", kw["depth"]), ("thermal", kw["thermal"]), ("audio", kw["audio"]))
        if v
    )
    note = f"{n} results of {data}" + (f", truth {truth}" if truth else " (empty scene)")
    tuned, rows = calibrate(cfg, rec.scores, false_alarm_rate=false_alarm_rate, truth=intervals, note=note)
    output.write_text(tuned.to_toml(), encoding="utf-8")
    if as_json:
        click.echo(json.dumps({"output": str(output), "results": n, "streams": rows}, indent=1))
        return
    click.echo(f"calibrated on {note}; false-alarm rate {false_alarm_rate:g} per frame")
    for r in rows:
        pos = (
            f", positives {r['positives']} mean {r['positive_mean']:.3f} frame recall {100 * r['frame_recall']:.1f}%"
            if r.get("positives")
            else ""
        )
        neg = (
            f"negatives {r['negatives']} mean {r['negative_mean']:.3f} p99 {r['negative_p99']:.3f} "
            f"max {r['negative_max']:.3f} -> threshold {r['threshold']:.4f} "
            f"(measured rate {100 * r['frame_false_alarm_rate']:.2f}%)"
            if r.get("negatives")
            else f"threshold {r['threshold']} kept"
        )
        click.echo(f"  {r['detector']:<12} {r['stream']:<8} {neg}{pos}" + (f"; {r['note']}" if r.get("note") else ""))
    click.echo(f"calibrated watch file: {output}")
