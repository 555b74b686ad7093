"""``lbedge train bind``: bind a modality to the frozen language tower by contrastive LoRA tuning.

The recipe of the LanguageBind paper, in a resumable trainer: the language tower is frozen; the modality
tower starts from a given tower; LoRA (peft) on its attention projections; a learnable temperature;
symmetric InfoNCE between the tower's and the text tower's embeddings (samples sharing a text count as
positives of each other); one of each sample's texts (title, tags, captions...) drawn per step.

Determinism: each step's batch, text views, augmentation and dropout come from generators seeded by
``(seed, step)``, and checkpoints hold the model, optimizer, scheduler and RNG states (:mod:`.state`), so a run
interrupted and resumed ends with the same weights as an uninterrupted one.

Several processes (torchrun, :mod:`.distributed`): ``batch_size`` is the global batch; every process draws the
step's global batch and its texts and augmentation choices (:mod:`.sampler`), embeds and trains on its own
share through ``DistributedDataParallel``, and gathers the others' embeddings (with their gradients) so that the
loss has the negatives of the whole global batch. Each process takes the mean loss of its own rows; DDP's
gradient averaging then gives the gradients of one process training on the whole batch. The text table is
built by every process (the frozen tower gives every process the same numbers).

Outputs in ``output/``: ``last/`` (an official-layout LoRA checkpoint that ``lbedge.from_pretrained`` loads
with LoRA merged, plus ``optimizer.pt`` and ``trainer_state.json``), ``metrics.jsonl``, ``bad_samples.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lbedge.checkpoint import load_model
from lbedge.errors import InputError
from lbedge.models.towers import LanguageBindModel
from lbedge.preprocess import Preprocessor
from lbedge.tokenizer import load_tokenizer

from .config import BindConfig
from .data import (
    SampleStore,
    apply_augment,
    apply_photometric,
    attribute_free,
    draw_augment,
    draw_photometric,
    read_samples,
)
from .distributed import World, current_world
from .modality import convert_modality, with_lora_config
from .sampler import StepSampler
from .state import MetricsLog, RunState, data_order, make_optimizer, train_loop

log = logging.getLogger(__name__)


@dataclass
class BindResult:
    output: Path
    steps: int
    final: dict[str, Any]
    evals: list[dict[str, Any]] = field(default_factory=list)
    bad_samples: list[dict[str, str]] = field(default_factory=list)


def wrap_lora(model: LanguageBindModel, r: int, alpha: float, dropout: float, targets: list[str]) -> LanguageBindModel:
    """Wrap the vision encoder with peft LoRA (the official layout: ``vision_model.encoder.base_model.model...``)."""
    from lbedge.deps import require

    peft = require("peft")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    if model.config.vision.add_time_attn:  # as LanguageBind_Video: LoRA on the temporal attention
        targets = [f"temporal_attn.{t}" for t in targets]
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    model.vision_model.encoder = get_peft_model(model.vision_model.encoder, cfg)
    model.config = with_lora_config(model.config, r, alpha)
    return model


def trainable_parameters(model: LanguageBindModel, learn_temperature: bool) -> list[torch.nn.Parameter]:
    model.logit_scale.requires_grad_(learn_temperature)
    return [p for p in model.parameters() if p.requires_grad]


def symmetric_infonce(
    v: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, same: torch.Tensor, rows: slice | None = None
) -> torch.Tensor:
    """InfoNCE in both directions; rows sharing a text are each other's positives (soft targets).

    ``rows``: the mean over those rows of the batch only (vision rows against every text, text rows against every
    vision embedding), the part of the loss one process of a distributed run takes; the mean of the parts of
    equal shares is the loss of the whole batch."""
    if rows is None:
        logits = scale * v @ t.T
        target = same.float() / same.float().sum(1, keepdim=True)
        return 0.5 * (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
        )
    target = same[rows].float() / same[rows].float().sum(1, keepdim=True)  # `same` is symmetric
    return 0.5 * (
        torch.sum(-target * F.log_softmax(scale * v[rows] @ t.T, 1), 1).mean()
        + torch.sum(-target * F.log_softmax(scale * t[rows] @ v.T, 1), 1).mean()
    )


class ContrastiveForward(torch.nn.Module):
    """What ``DistributedDataParallel`` runs in a binding step: the vision embeddings and the temperature, so the
    gradients of both are averaged over the processes."""

    def __init__(self, model: LanguageBindModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_vision(x), self.model.logit_scale.exp()


class Binder:
    """One binding run; ``run()`` trains (resuming from ``output/last`` when present). In a process group of
    several processes (``world``, default :func:`~lbedge.train.distributed.current_world`) it is one of them."""

    def __init__(self, cfg: BindConfig, *, world: World | None = None):
        self.cfg = cfg.validate()
        self.world = world if world is not None else current_world()
        self.out = Path(cfg.output)
        base = Path(cfg.base)
        model = convert_modality(load_model(base), cfg.modality, cfg.modality_fields)
        self.tokenizer = load_tokenizer(base, model.config.text)
        for p in model.parameters():
            p.requires_grad_(False)
        self.text_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("text_")}
        torch.manual_seed(cfg.seed)  # LoRA initialisation is part of the run's determinism
        if cfg.lora_r:
            self.model = wrap_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, list(cfg.lora_targets))
            also = tuple(cfg.train_also)
            matched = [
                p.requires_grad_(True)
                for name, p in self.model.named_parameters()
                if also and name.startswith(also) and not name.startswith("text_")
            ]
            if also and not matched:
                raise InputError(f"train_also {list(also)} matches no vision parameter")
        else:  # full training of the vision side (e.g. a tower from scratch)
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(("vision_model.", "visual_projection.")))
            self.model = model
        self.pre = Preprocessor(model.config.preprocess)
        good, bad = read_samples(cfg.data, cfg.modality)
        self.store = SampleStore(good, self.pre, on_bad=cfg.on_bad_data, bad=bad)
        if cfg.val_data:
            vgood, vbad = read_samples(cfg.val_data, cfg.modality)
            self.val = SampleStore(vgood, self.pre, on_bad=cfg.on_bad_data, bad=vbad)
            self.train_idx, self.val_idx = list(range(len(self.store))), []
        else:
            self.val = None
            self.train_idx, self.val_idx = self.store.split(cfg.val_fraction, cfg.seed)
        self.sampler = StepSampler(self.train_idx, cfg.batch_size, self.world)
        params = trainable_parameters(self.model, cfg.learn_temperature)
        self.opt, self.sched = make_optimizer(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps
        )
        self.step = 0
        held_out = self.val.samples if self.val is not None else [self.store.samples[i] for i in self.val_idx]
        order = data_order(cfg.seed, [self.store.samples[i].path for i in self.train_idx], [s.path for s in held_out])
        self.state = RunState(
            self.model,
            self.opt,
            self.sched,
            folder=self.out / "last",
            tokenizer_dir=base,
            data_order=order,
            process=self.world.process,
        )
        self.device = self.world.device(cfg.device)
        self.model.to(self.device)
        self.model.eval()
        self._build_text_table()
        self.autocast = self._autocast()
        self.ddp = self.world.wrap(ContrastiveForward(self.model), self.device) if self.world.distributed else None

    def _autocast(self):
        want = self.cfg.precision
        if want == "auto":
            want = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if want == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        import contextlib

        return contextlib.nullcontext

    # --- checkpoints ---------------------------------------------------------------------------------------
    def save(self, folder: Path | None = None) -> None:
        """Save the run's state (default: to ``output/last``, where :meth:`try_resume` looks)."""
        self.state.save(self.step, {"config": asdict(self.cfg)}, folder=folder)

    def try_resume(self) -> bool:
        """Continue from ``output/last`` when an earlier run left its state there."""
        resumed = self.state.resume()
        self.world.agree(resumed.step if resumed else 0, f"the step to resume from ({self.out / 'last'})")
        if resumed is None:
            return False
        self.step = resumed.step
        return True

    # --- training ------------------------------------------------------------------------------------------
    def _texts_for(self, idx: list[int], gen: torch.Generator, store: SampleStore) -> list[str]:
        out = []
        for i in idx:
            texts = store.samples[i].texts
            out.append(texts[int(torch.randint(0, len(texts), (1,), generator=gen))])
        return out

    def _attribute_free_texts(self, idx: list[int], texts: list[str], gen: torch.Generator) -> list[str]:
        """With probability ``attribute_augment``, a sample's text becomes one of its texts that name no colour
        (RGB) / temperature (thermal), so its input can be re-coloured / re-tempered (data.photometric)."""
        out = list(texts)
        for j, i in enumerate(idx):
            if attribute_free(out[j], self.cfg.modality):
                continue
            if float(torch.rand(1, generator=gen)) >= self.cfg.attribute_augment:
                continue
            free = [t for t in self.store.samples[i].texts if attribute_free(t, self.cfg.modality)]
            if free:
                out[j] = free[int(torch.randint(0, len(free), (1,), generator=gen))]
        return out

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings through the frozen tower, trailing padding columns dropped (they change nothing:
        CLIP pools its first EOS, BERT masks padding)."""
        ids, mask = self.tokenizer(texts)
        ids = ids[:, : max(1, int(mask.sum(1).max()))]
        with torch.no_grad():
            return self.model.encode_text(torch.from_numpy(ids).to(self.device))

    def _build_text_table(self) -> None:
        """Embed every text the run will see once, in a fixed order (the language tower is frozen, so this is
        exact, and a resumed run sees the same numbers): the tower runs once per text, not once per step."""
        stores = [self.store] + ([self.val] if self.val is not None else [])
        texts = sorted({t for st in stores for s in st.samples for t in s.texts})
        self.text_table: dict[str, torch.Tensor] = {}
        for i in range(0, len(texts), 256):
            chunk = texts[i : i + 256]
            for t, e in zip(chunk, self._encode_texts(chunk)):
                self.text_table[t] = e

    def _embed_text(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.text_table]
        if missing:
            for t, e in zip(missing, self._encode_texts(missing)):
                self.text_table[t] = e
        return torch.stack([self.text_table[t] for t in texts])

    def _inputs(self, idx: list[int], texts: list[str], gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """This process's share of the step's inputs, augmented, and the texts of the whole global batch: the
        random choices are drawn for the whole batch, in one order, so every share is augmented as one process
        augments the whole batch."""
        cfg, share = self.cfg, self.sampler.share
        shape = (len(idx), *self.store.arrays.shape[1:])
        crops = draw_augment(shape, cfg.modality, gen, flip=cfg.augment_flip) if cfg.augment else None
        recolour = None
        if cfg.attribute_augment > 0:
            texts = self._attribute_free_texts(idx, texts, gen)
            recolour = draw_photometric(cfg.modality, gen, [attribute_free(t, cfg.modality) for t in texts])
        x = torch.from_numpy(self.store.arrays[idx[share]])
        if crops is not None:
            x = apply_augment(x, cfg.modality, crops.rows(share))
        if recolour is not None:
            pc = self.pre.cfg
            x = apply_photometric(x, cfg.modality, recolour[share], mean=pc.mean, std=pc.std)
        return x, texts

    def _loss(self, x: torch.Tensor, t: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """The loss of one (micro-)batch: of the whole batch in one process; of this process's rows against the
        whole global batch (every process's embeddings gathered) in a distributed run."""
        with self.autocast():
            if self.ddp is None:
                v = self.model.encode_vision(x.to(self.device))
                return symmetric_infonce(v.float(), t.float(), self.model.logit_scale.exp(), same.to(self.device))
            v, scale = self.ddp(x.to(self.device))
            everyone = self.world.gather(v.float())
            return symmetric_infonce(everyone, t.float(), scale, same.to(self.device), rows=self.sampler.share)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            torch.manual_seed(self.world.seed(cfg.seed * 1_000_003 + self.step * 101 + micro))  # dropout
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.step * 131 + micro)
            idx = self.sampler.draw(gen)
            x, texts = self._inputs(idx, self._texts_for(idx, gen, self.store), gen)
            t = self._embed_text(texts)
            same = torch.tensor([[a == b for b in texts] for a in texts])
            last = micro == cfg.grad_accum - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                loss = self._loss(x, t, same)
                (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        self.step += 1
        return {
            "step": self.step,
            "loss": self.world.mean(total),
            "lr": self.sched.get_last_lr()[0],
            "logit_scale": float(self.model.logit_scale.detach().exp()),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Zero-shot top-1 over the dataset's texts as labels, and retrieval R@1 (vision -> text); every process
        of a distributed run evaluates (the same weights, the same numbers)."""
        store, idx = (self.val, list(range(len(self.val)))) if self.val is not None else (self.store, self.val_idx)
        if not idx:
            return {}
        self.model.eval()
        truth = [store.samples[i].texts[0] for i in idx]
        labels = sorted({s.texts[0] for s in self.store.samples} | set(truth))
        v = torch.cat(
            [
                self.model.encode_vision(torch.from_numpy(store.arrays[idx[i : i + 32]]).to(self.device))
                for i in range(0, len(idx), 32)
            ]
        )
        lt = self._embed_text(labels)
        pred = (v @ lt.T).argmax(1).tolist()
        top1 = float(np.mean([labels[p] == t for p, t in zip(pred, truth)]))
        tt = self._embed_text(truth)
        r1 = float(np.mean([truth[j] == truth[i] for i, j in enumerate((v @ tt.T).argmax(1).tolist())]))
        return {
            "zero_shot_top1": top1,
            "retrieval_r1": r1,
            "n": len(idx),
            "labels": len(labels),
            "chance_top1": 1.0 / len(labels),
        }

    def text_tower_unchanged(self) -> bool:
        sd = self.model.state_dict()
        return all(torch.equal(sd[k], v) for k, v in self.text_before.items())

    def run(self, *, resume: bool = True, stop_after: int | None = None, progress: bool = True) -> BindResult:
        """Train to ``max_steps`` (``stop_after`` ends early, as an interruption would)."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.try_resume()
        bad = [{"file": str(b.path), "reason": b.reason} for b in self.store.bad]
        if self.world.is_main:
            (self.out / "bad_samples.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bad))
        process = self.world.process
        with MetricsLog(self.out, tensorboard=cfg.tensorboard, process=process) as metrics:
            loop = train_loop(
                self,
                max_steps=cfg.max_steps,
                eval_every=cfg.eval_every,
                save_every=cfg.save_every,
                save=self.save,
                metrics=metrics,
                stop_after=stop_after,
                progress="bind" if progress else "",
                process=process,
            )
        return BindResult(self.out, self.step, loop.last, loop.evals, bad)


def bind(cfg: BindConfig, **kw: Any) -> BindResult:
    """Run (or resume) a binding; see :class:`Binder`."""
    return Binder(cfg).run(**kw)


__all__ = ["BindResult", "Binder", "ContrastiveForward", "bind", "symmetric_infonce", "wrap_lora"]
