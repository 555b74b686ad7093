"""Label-baked bundles against bundles with a text tower: peak memory and start-up time of a fixed-label classifier.

Each measurement is a fresh Python process (so nothing is shared or cached in memory between variants) that
imports lbedge, loads the bundle, builds a ZeroShotClassifier of the labels and classifies one 640x480 RGB frame.
It reports the seconds from the call of ``load_bundle`` to the first result, split into load, labels and first
frame, the peak RSS (``VmHWM``) of the process, and whether the text graph was loaded and the tokenizer read.
Where the tokenizer was not read, the probe then reads it (after the first result) to show what that costs:
lbedge read it at load before baked bundles.

Variants per model:

- ``text tower, cold``: the bundle as built, prompt cache off: the text graph embeds the label prompts at start;
- ``text tower, warm cache``: the same with the prompt cache filled by an earlier run (lbedge's older way of
  skipping the text graph; it needs a writable cache folder and one run that embeds the labels first);
- ``baked, text kept``: ``lbedge bake`` of the labels, text tower kept (other labels still work);
- ``baked, text dropped``: ``lbedge bake --drop-text``: no text graph, no tokenizer in the bundle.

Models: lb-mini's image bundle with its shared text bundle (``lbmini/bundles/image`` and ``text``; ``make
lb-mini-text`` builds the text bundle), and a ViT-L/14 image bundle (random weights; INT8 vision and text graphs
for ONNX Runtime on CPUs, as ``benchmarks/bench_vitl.py`` builds them), built under ``--work`` on the first run
(about 4 minutes on 2 cores) and reused after. Run from the repository root:

    .venv/bin/python benchmarks/bench_baked.py --out benchmarks/results_baked.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LBMINI = ROOT / "lbmini" / "bundles"
LBMINI_LABELS = ("ball", "box", "cone", "ring", "bar")
VITL_LABELS = ("person", "car", "dog", "cat", "bicycle", "forklift", "pallet", "door", "chair", "fire")

# one measurement, in a fresh interpreter: argv = bundle, labels (comma-separated), threads, use_cache
PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import lbedge
from lbedge.bench import peak_rss_mb
import lbedge.backends.onnxruntime_backend as ob
t_import = time.perf_counter() - t0
rss_import = peak_rss_mb()
sessions = []
_init = ob.OnnxRuntimeBackend.__init__
def _record(self, path, *a, **k):
    sessions.append(str(path).rsplit("/", 1)[-1])
    _init(self, path, *a, **k)
ob.OnnxRuntimeBackend.__init__ = _record
bundle, labels, threads, use_cache = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4] == "1"
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
t1 = time.perf_counter()
enc = lbedge.load_bundle(bundle, threads=threads)
t2 = time.perf_counter()
clf = lbedge.ZeroShotClassifier(enc, labels, use_cache=use_cache)
t3 = time.perf_counter()
pred = clf.predict(frame)
t4 = time.perf_counter()
rss_first = peak_rss_mb()
tok = enc.tokenizer
read_before = bool(tok is not None and getattr(tok, "loaded", True))
tok_s = tok_rss = None
if tok is not None and not read_before:  # what reading it costs (at load, before lbedge read it lazily)
    t5 = time.perf_counter()
    tok.get()
    tok_s, tok_rss = time.perf_counter() - t5, peak_rss_mb()
print(json.dumps({
    "import_s": t_import, "load_s": t2 - t1, "labels_s": t3 - t2, "first_frame_s": t4 - t3, "startup_s": t4 - t1,
    "peak_rss_mib": rss_first, "rss_after_import_mib": rss_import, "sessions": sessions,
    "tokenizer_read": read_before, "from_baked": clf.from_baked, "tokenizer_read_s": tok_s,
    "peak_rss_after_tokenizer_mib": tok_rss,
    "label": pred.label, "torch": "torch" in sys.modules,
}))
"""


def measure(bundle: Path, labels: tuple[str, ...], threads: int, use_cache: bool, cache: Path) -> dict:
    env = {**os.environ, "LBEDGE_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-c", PROBE, str(bundle), ",".join(labels), str(threads), "1" if use_cache else "0"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def link_copy(src: Path, dst: Path) -> Path:
    """A copy of bundle ``src`` at ``dst`` whose graphs are hard links (manifests and small files are copied, so
    baking the copy never changes the original)."""
    if dst.exists():
        shutil.rmtree(dst)
    for f in sorted(src.rglob("*")):
        target = dst / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if f.suffix not in (".onnx", ".data", ".engine"):
                raise OSError("copied")
            os.link(f, target)
        except OSError:  # a small file, or another file system
            shutil.copy2(f, target)
    return dst


def bundle_mib(folder: Path) -> float:
    """MiB of the files the bundle's manifest names (and the manifest), its shared text bundle included."""
    from lbedge.bundle import Manifest

    man = Manifest.read(folder)
    names = {"manifest.json", *([man.baked_labels["file"]] if man.baked_labels else [])}
    for by_p in man.towers.values():
        for e in by_p.values():
            names |= {e.file, *e.extra_files}
    names |= {f"tokenizer/{n}" for n in man.tokenizer}
    size = sum((folder / n).stat().st_size for n in names if (folder / n).is_file())
    if man.text_bundle:
        size += bundle_mib(folder / man.text_bundle) * 2**20
    return size / 2**20


def build_vitl(work: Path, threads: int) -> Path:
    """The ViT-L/14 image bundle (random weights, INT8 vision and text for CPUs), built once under ``work``."""
    bundle = work / "bundle_image"
    if (bundle / "manifest.json").is_file() and "int8" in json.loads((bundle / "manifest.json").read_text())[
        "towers"
    ].get("vision", {}):
        return bundle
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_vitl import calib_inputs, vitl_config

    from lbedge.checkpoint import save_pretrained
    from lbedge.config import ModelConfig
    from lbedge.models.towers import LanguageBindModel
    from lbedge.preprocess import Preprocessor
    from lbedge.quantize.bundle_build import add_int8, export_bundle
    from lbedge.quantize.calibration import InputSet
    from lbedge.quantize.int8 import Int8Config

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    cfg = ModelConfig.from_dict(vitl_config("image"))
    model = LanguageBindModel(cfg).eval()
    ckpt = save_pretrained(model, work / "ckpt_image", tokenizer_dir=ROOT / "tests/fixtures/official/tokenizer")
    del model
    calib, held = calib_inputs("image", Preprocessor(cfg.preprocess))
    export_bundle(ckpt, bundle, inputs=held[:2])
    add_int8(
        bundle,
        InputSet(calib, [Path(f"c{i}") for i in range(len(calib))]),
        holdout=InputSet(held, [Path(f"h{i}") for i in range(len(held))]),
        config=Int8Config(target="cpu"),
    )
    return bundle


def variants(name: str, src: Path, labels: tuple[str, ...], work: Path) -> dict[str, tuple[Path, bool]]:
    """Variant -> (bundle folder, use the prompt cache). Baked copies sit beside ``src`` (sharing its text bundle)."""
    from lbedge.bake import bake_bundle

    kept = link_copy(src, src.parent / f"{src.name}-baked")
    bake_bundle(kept, labels)
    dropped = link_copy(src, src.parent / f"{src.name}-baked-notext")
    bake_bundle(dropped, labels, drop_text=True)
    return {
        "text tower, cold": (src, False),
        "text tower, warm cache": (src, True),
        "baked, text kept": (kept, False),
        "baked, text dropped": (dropped, False),
    }


def run_model(name: str, src: Path, labels: tuple[str, ...], work: Path, threads: int, repeats: int) -> dict:
    """Every variant measured ``repeats`` times, round-robin (so drift in the machine's load hits all alike),
    after one warm-up run each (page cache; for the warm variant, the prompt cache); medians."""
    cache = Path(tempfile.mkdtemp(prefix="lbedge-baked-cache-", dir=work))
    todo = variants(name, src, labels, work)
    for folder, use_cache in todo.values():
        measure(folder, labels, threads, use_cache, cache)
    runs: dict[str, list[dict]] = {v: [] for v in todo}
    for _ in range(repeats):
        for variant, (folder, use_cache) in todo.items():
            runs[variant].append(measure(folder, labels, threads, use_cache, cache))
    out = {}
    for variant, rs in runs.items():
        numbers = [k for k in rs[0] if isinstance(rs[0][k], float)]
        row = {k: round(statistics.median(r[k] for r in rs), 3) for k in numbers}
        row["startup_s_min_max"] = [
            round(min(r["startup_s"] for r in rs), 3),
            round(max(r["startup_s"] for r in rs), 3),
        ]
        row.update({k: rs[0][k] for k in ("sessions", "tokenizer_read", "from_baked", "label", "torch")})
        row["bundle_mib"] = round(bundle_mib(todo[variant][0]), 1)
        row["runs"] = repeats
        out[variant] = row
        print(name, variant, json.dumps(row), flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def table(results: dict) -> str:
    lines = [
        "| model | variant | start-up s (load / labels / first frame) | peak RSS MiB | text graph loaded | tokenizer "
        "read | bundle MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rows in results["models"].items():
        for variant, r in rows.items():
            text = "yes" if any(s.startswith("text.") for s in r["sessions"]) else "no"
            lines.append(
                f"| {model} | {variant} | {r['startup_s']:.2f} ({r['load_s']:.2f} / {r['labels_s']:.2f} / "
                f"{r['first_frame_s']:.2f}) | {r['peak_rss_mib']:.0f} | {text} | "
                f"{'yes' if r['tokenizer_read'] else 'no'} | {r['bundle_mib']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lbedge_baked"), help="Bundle copies and the ViT-L build.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="Fresh processes per variant (medians are reported).")
    ap.add_argument("--models", default="lb-mini,vit-l")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "benchmarks" / "results_baked.json",
        help="output JSON",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_before": os.getloadavg(),
        "models": {},
    }
    for model in args.models.split(","):
        if model == "lb-mini":
            if not (LBMINI / "text" / "manifest.json").is_file():
                sys.exit("lb-mini's text bundle is missing: run `make lb-mini-text` first")
            site = args.work / "lbmini"
            link_copy(LBMINI / "image", site / "image")
            link_copy(LBMINI / "text", site / "text")
            results["models"]["lb-mini image"] = run_model(
                model, site / "image", LBMINI_LABELS, args.work, args.threads, args.repeats
            )
        elif model == "vit-l":
            src = build_vitl(args.work / "vitl", args.threads)
            results["models"]["ViT-L/14 image"] = run_model(
                model, src, VITL_LABELS, args.work, args.threads, args.repeats
            )
        else:
            sys.exit(f"unknown model {model!r}: lb-mini, vit-l")
    results["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
