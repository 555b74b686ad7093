"""Get and inspect models and the machine: ``lbedge info``, ``lbedge download``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import echo_json, json_option, model_option, writable_output


def describe_model(path: Path) -> dict[str, Any]:
    """A bundle (manifest, graphs, sizes, agreement, shared text bundle, baked labels, engines) or a checkpoint
    (config)."""
    if (path / "manifest.json").is_file():
        from ..bake import baked_summary
        from ..bundle import Manifest, built_engines, engine_manifests, text_source
        from .common import bundle_rows

        man = Manifest.read(path)
        out: dict[str, Any] = {
            "kind": "bundle",
            "path": str(path),
            "modality": man.modality,
            "embed_dim": man.embed_dim,
            "graphs": bundle_rows(man, path),
            "text_bundle": man.text_bundle or None,
            "lbedge_version": man.lbedge_version,
        }
        if man.modality != "text" and man.has_text_tower:
            tfolder, tman = text_source(path, man)
            out["text_graphs"] = bundle_rows(tman, tfolder) if tman is not man else []
        elif man.modality != "text":
            out["text_graphs"] = []
            out["text_tower"] = "none: classifies only its baked labels"
        if man.baked_labels:
            out["baked_labels"] = baked_summary(path)
        out["engines"] = [{"tower": e["tower"], "precision": e["precision"], "file": e["file"]} for e in man.engines]
        out["engine_details"] = [
            {
                "tensorrt": m.tensorrt_version,
                "device": m.device_name,
                "compute_capability": m.compute_capability,
                "precision": m.precision,
                "agreement": m.agreement,
            }
            for m in engine_manifests(path)
        ]
        out["engines_present"] = {t: sorted(built_engines(man, path, t)) for t in man.towers}
        return out
    from ..config import ModelConfig
    from ..models_info import describe

    return {"kind": "checkpoint", **describe(path, ModelConfig.from_json(path))}


@click.command()
@model_option("--checkpoint", "-c", help="Also describe this bundle or checkpoint folder.")
@click.option("--load", is_flag=True, help="Also load a checkpoint's weights (needs torch): parameters, LoRA.")
@click.option("--no-devices", is_flag=True, help="Skip the scans for cameras and audio inputs.")
@json_option("Print JSON instead of text.")
def info(model: Path | None, load: bool, no_devices: bool, as_json: bool) -> None:
    """What this machine offers (versions, the CPU's INT8 and BF16 support, ONNX Runtime providers, CUDA, TensorRT,
    Jetson release, OpenCV's GStreamer and GUI support, cameras, audio inputs), and a model's description."""
    from ..sysinfo import report

    rep = report(devices=not no_devices)
    if model is not None:
        rep["model"] = describe_model(Path(model))
        if load and rep["model"]["kind"] == "checkpoint":
            from ..config import ModelConfig
            from ..models_info import describe

            rep["model"].update(describe(Path(model), ModelConfig.from_json(model), load=True))
    if as_json:
        echo_json(rep)
        return
    for key in ("lbedge", "python", "platform", "numpy", "opencv", "tokenizers"):
        click.echo(f"{key:<18}{rep.get(key)}")
    click.echo(f"{'optional':<18}" + ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in rep["optional"].items()))
    for key in ("cpu", "onnxruntime", "cuda", "tensorrt", "jetson", "opencv_features"):
        value = rep[key]
        text = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        click.echo(f"{key:<18}{text}")
    for key in ("cameras_v4l2", "cameras_realsense", "audio_inputs"):
        if key in rep:
            value = rep[key]
            text = "none" if value == [] else ", ".join(str(v) for v in value) if isinstance(value, list) else value
            click.echo(f"{key:<18}{text}")
    for key, value in rep.get("model", {}).items():
        click.echo(f"{key:<18}{value}")


@click.command()
@click.argument("name")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Destination folder.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@json_option()
def download(name: str, output: Path, revision: str | None, as_json: bool) -> None:
    """Download official checkpoint NAME (image, depth, thermal, audio, audio_ft, video, ...) from the hub."""
    writable_output(output, folder=True)
    from ..hub import download as _download
    from ..progress import stage

    stage("downloading %s into %s", name, output)
    path = Path(_download(name, output, revision=revision))
    files = sorted(p for p in path.iterdir() if p.is_file())
    if as_json:
        echo_json(
            {"name": name, "path": str(path), "files": [{"file": p.name, "bytes": p.stat().st_size} for p in files]}
        )
        return
    click.echo(f"downloaded {name} to {path} ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
