"""``lbedge train distill``: a smaller vision tower that reproduces a teacher's embeddings in the same
language space, trained on unlabeled sensor data (no captions).

Loss: ``(1 - cos(student, teacher))`` plus affinity mimicking (TinyCLIP): the KL divergence between the
student's and the teacher's similarity distributions over a set of text embeddings. The student keeps the
teacher's text tower and projection size, so prompt caches, labels and bundles still apply. Teacher
embeddings are cached on disk. Weight inheritance: the student starts from the teacher's weights where the
shapes allow (evenly spaced layers, leading slices of wider matrices, the position table resized).

Outputs in ``output/``: ``student/`` (the distilled checkpoint), ``report.json``, ``metrics.jsonl``, and ``last/``
(the state a resumed run continues from, :mod:`.state`).

Several processes (torchrun, :mod:`.distributed`): ``batch_size`` is the global batch; every process draws the
step's global batch and augmentation choices (:mod:`.sampler`) and trains the student on its own share through
``DistributedDataParallel``. The loss is a mean over samples, so the mean of the processes' losses (DDP's
gradient averaging) is the loss of the whole batch: no embeddings need gathering. The main process computes
the teacher's embeddings and writes their cache first; the others read it (or compute it where they cannot).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lbedge.checkpoint import load_model, save_pretrained, text_fingerprint
from lbedge.config import VisionConfig
from lbedge.errors import InputError
from lbedge.models.towers import LanguageBindModel, resize_position_embedding
from lbedge.preprocess import Preprocessor
from lbedge.tokenizer import load_tokenizer
from lbedge.zeroshot import PROBE_LABELS, PROBE_TEMPLATE, fill

from .config import DistillConfig
from .data import SampleStore, apply_augment, apply_photometric, draw_augment, draw_photometric, read_samples
from .distributed import World, current_world
from .sampler import StepSampler
from .state import MetricsLog, RunState, data_order, make_optimizer, train_loop

log = logging.getLogger(__name__)

#: student presets: width, depth, heads, patch (MLP 4x width)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "vit-b16": (768, 12, 12, 16),
    "vit-s16": (384, 12, 6, 16),
    "vit-ti16": (192, 12, 3, 16),
    "vit-s16-d6": (384, 6, 6, 16),
}


def student_vision_config(teacher: VisionConfig, spec: str, grid_rows_cols: tuple[int, int]) -> VisionConfig:
    """The student's VisionConfig from a preset name or ``"width,depth,heads,patch"``."""
    if spec in PRESETS:
        width, depth, heads, patch = PRESETS[spec]
    else:
        try:
            width, depth, heads, patch = (int(v) for v in spec.split(","))
        except ValueError as exc:
            raise InputError(
                f"unknown student {spec!r}: a preset ({', '.join(PRESETS)}) or 'width,depth,heads,patch'"
            ) from exc
    rows, cols = grid_rows_cols
    return dataclasses.replace(
        teacher,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        patch_size=patch,
        grid=(rows // patch, cols // patch),
        lora_r=0,
    )


def inherit_weights(student: LanguageBindModel, teacher: LanguageBindModel) -> int:
    """Copy teacher weights into the student where shapes allow; returns the number of tensors set."""
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    t_layers, s_layers = teacher.config.vision.num_hidden_layers, student.config.vision.num_hidden_layers
    layer_map = {s: round(s * (t_layers - 1) / max(1, s_layers - 1)) for s in range(s_layers)}
    n = 0
    with torch.no_grad():
        for key, dst in s_sd.items():
            src_key = key
            if key.startswith("vision_model.encoder.layers."):
                i = int(key.split(".")[3])
                src_key = key.replace(f"layers.{i}.", f"layers.{layer_map[i]}.", 1)
            if key.startswith(("text_model.", "text_projection", "logit_scale")):
                dst.copy_(t_sd[key])  # the language tower is the teacher's, unchanged
                n += 1
                continue
            src = t_sd.get(src_key)
            if src is None:
                continue
            if key.endswith("position_embedding.weight") and src.shape != dst.shape:
                if src.shape[1] >= dst.shape[1]:
                    try:
                        src = resize_position_embedding(src, student.config.vision.grid)
                    except ValueError:
                        continue
            if src.dim() != dst.dim() or any(a < b for a, b in zip(src.shape, dst.shape)):
                continue
            if src.dim() == 4 and src.shape[2:] != dst.shape[2:]:
                continue  # patch embedding of another patch size
            dst.copy_(src[tuple(slice(0, d) for d in dst.shape)])
            n += 1
    return n


def flops_and_params(model: LanguageBindModel) -> tuple[float, int]:
    """Forward FLOPs (GFLOP) of the vision tower at batch 1 and its parameter count."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *model.config.preprocess.input_shape, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.encode_vision(x)
    params = sum(p.numel() for p in model.vision_model.parameters()) + model.visual_projection.weight.numel()
    return fc.get_total_flops() / 1e9, params


@dataclass
class DistillResult:
    output: Path
    steps: int
    teacher: dict[str, Any]
    student: dict[str, Any]
    heldout: dict[str, Any] = field(default_factory=dict)


class VisionForward(torch.nn.Module):
    """What ``DistributedDataParallel`` runs in a distillation step: the student's vision embeddings."""

    def __init__(self, model: LanguageBindModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_vision(x)


class Distiller:
    """One distillation run; ``run()`` trains (resuming from ``output/last`` when present). In a process group of
    several processes (``world``, default :func:`~lbedge.train.distributed.current_world`) it is one of them."""

    def __init__(self, cfg: DistillConfig, *, world: World | None = None):
        self.cfg = cfg.validate()
        self.world = world if world is not None else current_world()
        self.device = self.world.device(cfg.device)
        self.out = Path(cfg.output)
        self.teacher_dir = Path(cfg.teacher)
        self.teacher = load_model(self.teacher_dir).to(self.device)
        tcfg = self.teacher.config
        rows, cols = (
            (tcfg.preprocess.num_mel_bins, tcfg.preprocess.target_length)
            if tcfg.modality == "audio"
            else (tcfg.vision.image_size, tcfg.vision.image_size)
        )
        res = cfg.resolution or 0
        if res and tcfg.modality == "audio":
            raise InputError("an audio student's input is the fixed 112 x 1036 fbank: resolution does not apply")
        if res:
            rows = cols = res
        svc = student_vision_config(tcfg.vision, cfg.student, (rows, cols))
        if res:
            svc = dataclasses.replace(svc, image_size=res)
        pre = dataclasses.replace(tcfg.preprocess, size=res) if res else tcfg.preprocess
        self.student_cfg = dataclasses.replace(tcfg, vision=svc, preprocess=pre)
        torch.manual_seed(cfg.seed)
        self.student = LanguageBindModel(self.student_cfg)
        self.inherited = inherit_weights(self.student, self.teacher) if cfg.inherit else 0
        if not cfg.inherit:
            inherit_weights_text_only(self.student, self.teacher)
        for name, p in self.student.named_parameters():
            p.requires_grad_(name.startswith(("vision_model.", "visual_projection")))
        self.pre = Preprocessor(tcfg.preprocess)
        good, bad = read_samples(cfg.data, tcfg.modality, need_text=False)
        self.store = SampleStore(good, self.pre, on_bad=cfg.on_bad_data, bad=bad)
        self.train_idx, self.val_idx = self.store.split(cfg.val_fraction, cfg.seed)
        self.sampler = StepSampler(self.train_idx, cfg.batch_size, self.world)
        if self.world.is_main:  # computes and caches them; the others read the cache
            self.teacher_embeds = self._teacher_embeddings()
        self.world.barrier()
        if not self.world.is_main:
            self.teacher_embeds = self._teacher_embeddings()
        tok = load_tokenizer(self.teacher_dir, tcfg.text)
        ids, _ = tok([fill(PROBE_TEMPLATE, label) for label in (cfg.probe_labels or PROBE_LABELS)])
        ids = np.minimum(ids, tcfg.text.vocab_size - 1)
        with torch.no_grad():
            self.text_embeds = self.teacher.encode_text(torch.from_numpy(ids).to(self.device))
        params = [p for p in self.student.parameters() if p.requires_grad]
        self.opt, self.sched = make_optimizer(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps
        )
        self.step = 0
        self.before: dict[str, Any] = {}
        files = [s.path for s in self.store.samples]
        order = data_order(cfg.seed, [files[i] for i in self.train_idx], [files[i] for i in self.val_idx])
        self.state = RunState(
            self.student,
            self.opt,
            self.sched,
            folder=self.out / "last",
            tokenizer_dir=self.teacher_dir,
            data_order=order,
            process=self.world.process,
        )
        self.student.to(self.device)
        self.ddp = self.world.wrap(VisionForward(self.student), self.device) if self.world.distributed else None

    def _teacher_embeddings(self) -> np.ndarray:
        """Teacher embeddings of every sample, cached on disk by teacher weights and inputs (written by the main
        process)."""
        h = hashlib.sha256(text_fingerprint(self.teacher).encode())
        h.update(hashlib.sha256(self.store.arrays.tobytes()).digest())
        for k, v in self.teacher.state_dict().items():
            if k.startswith("vision_model.") or k.startswith("visual_projection"):
                h.update(k.encode())
                h.update(v.cpu().numpy().tobytes()[:4096])
        cache = self.out / "teacher_cache" / f"{h.hexdigest()[:20]}.npy"
        if cache.is_file():
            arr = np.load(cache, allow_pickle=False)
            if arr.shape[0] == len(self.store):
                return arr
        outs = []
        with torch.no_grad():
            for i in range(0, len(self.store), 16):
                x = torch.from_numpy(self.store.arrays[i : i + 16]).to(self.device)
                outs.append(self.teacher.encode_vision(x).cpu().numpy())
        arr = np.concatenate(outs)
        if self.world.is_main:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, arr, allow_pickle=False)
        return arr

    def student_input(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's preprocessed batch at the student's resolution (bicubic, antialiased)."""
        size = self.student_cfg.preprocess.size
        if self.student_cfg.modality == "audio" or x.shape[-1] == size:
            return x
        planes = F.interpolate(
            x.reshape(-1, 1, *x.shape[-2:]), size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        return planes.reshape(*x.shape[:-2], size, size)

    def loss(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cos = 1 - F.cosine_similarity(s, t).mean()
        if self.cfg.affinity_weight <= 0:
            return cos
        tau = self.cfg.affinity_temperature
        ps = F.log_softmax(s @ self.text_embeds.T / tau, 1)
        pt = F.log_softmax(t @ self.text_embeds.T / tau, 1)
        return cos + self.cfg.affinity_weight * F.kl_div(ps, pt, log_target=True, reduction="batchmean")

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.student.train()
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.step)
        torch.manual_seed(self.world.seed(cfg.seed * 1_000_003 + self.step))
        idx = self.sampler.draw(gen)
        share = self.sampler.share  # every random choice is drawn for the global batch, applied to this share
        x = torch.from_numpy(self.store.arrays[idx[share]])
        t = torch.from_numpy(self.teacher_embeds[idx[share]])
        if cfg.augment:  # augmented views need fresh teacher targets
            pc = self.teacher.config.preprocess
            crops = draw_augment((len(idx), *self.store.arrays.shape[1:]), self.student_cfg.modality, gen)
            recolour = draw_photometric(pc.modality, gen, [True] * len(idx)) if cfg.photometric else None
            x = apply_augment(x, self.student_cfg.modality, crops.rows(share))
            if recolour is not None:
                x = apply_photometric(x, pc.modality, recolour[share], mean=pc.mean, std=pc.std)
            with torch.no_grad():
                t = self.teacher.encode_vision(x.to(self.device))
        x, t = x.to(self.device), t.to(self.device)
        forward = self.ddp if self.ddp is not None else self.student.encode_vision
        loss = self.loss(forward(self.student_input(x)), t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {"step": self.step, "loss": self.world.mean(float(loss.detach())), "lr": self.sched.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self, idx: list[int] | None = None) -> dict[str, Any]:
        """Held-out teacher-vs-student cosine and zero-shot agreement over the probe texts (every process of a
        distributed run evaluates: the same weights, the same numbers)."""
        idx = self.val_idx if idx is None else idx
        if not idx:
            return {}
        self.student.eval()
        batches = (torch.from_numpy(self.store.arrays[idx[i : i + 32]]) for i in range(0, len(idx), 32))
        s = torch.cat([self.student.encode_vision(self.student_input(x.to(self.device))) for x in batches])
        t = torch.from_numpy(self.teacher_embeds[idx]).to(self.device)
        cos = F.cosine_similarity(s, t)
        agree = ((s @ self.text_embeds.T).argmax(1) == (t @ self.text_embeds.T).argmax(1)).float().mean()
        return {
            "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
            "zero_shot_agreement": float(agree),
            "n": len(idx),
        }

    def save(self) -> None:
        """Save the run's state to ``output/last`` (with the held-out metrics before training)."""
        self.state.save(self.step, {"before": self.before, "config": dataclasses.asdict(self.cfg)})

    def try_resume(self) -> bool:
        """Continue from ``output/last`` when an earlier run left its state there."""
        resumed = self.state.resume()
        self.world.agree(resumed.step if resumed else 0, f"the step to resume from ({self.out / 'last'})")
        if resumed is None:
            return False
        self.step, self.before = resumed.step, resumed.record.get("before", {})
        return True

    def run(self, progress: bool = True, resume: bool = True, stop_after: int | None = None) -> DistillResult:
        """Train to ``max_steps`` (``stop_after`` ends early, as an interruption would); write ``student/``."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if not (resume and self.try_resume()):  # a resumed run keeps the "before" of its first start
            self.before = self.evaluate()
        process = self.world.process
        with MetricsLog(self.out, tensorboard=cfg.tensorboard, process=process) as metrics:
            if self.step == 0 and self.before:
                metrics.eval(0, self.before)
            train_loop(
                self,
                max_steps=cfg.max_steps,
                eval_every=cfg.eval_every,
                save_every=cfg.save_every,
                save=self.save,
                metrics=metrics,
                stop_after=stop_after,
                progress="distill" if progress else "",
                process=process,
            )
        self.student.eval()
        if self.world.is_main:
            save_pretrained(self.student, self.out / "student", tokenizer_dir=self.teacher_dir)
        self.world.barrier()
        t_flops, t_params = flops_and_params(self.teacher)
        s_flops, s_params = flops_and_params(self.student)
        result = DistillResult(
            self.out / "student",
            self.step,
            {"gflops": round(t_flops, 3), "params": t_params},
            {
                "gflops": round(s_flops, 3),
                "params": s_params,
                "inherited_tensors": self.inherited,
                "preset": cfg.student,
            },
            {"before": self.before, "after": self.evaluate()},
        )
        if self.world.is_main:
            (self.out / "report.json").write_text(json.dumps(dataclasses.asdict(result), default=str, indent=2))
        return result


def inherit_weights_text_only(student: LanguageBindModel, teacher: LanguageBindModel) -> None:
    t_sd = teacher.state_dict()
    with torch.no_grad():
        for key, dst in student.state_dict().items():
            if key.startswith(("text_model.", "text_projection", "logit_scale")):
                dst.copy_(t_sd[key])


def distill(cfg: DistillConfig, **kw: Any) -> DistillResult:
    return Distiller(cfg).run(**kw)


__all__ = [
    "PRESETS",
    "DistillResult",
    "Distiller",
    "VisionForward",
    "distill",
    "flops_and_params",
    "inherit_weights",
    "student_vision_config",
]
