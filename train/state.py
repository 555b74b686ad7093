"""What every lbedge trainer (bind, distill) shares: the saved state of a run and its step/eval/save loop.

A run's ``output/`` folder holds ``last/``, the state that resumes the run: an official-layout checkpoint
(``config.json``, ``model.safetensors``, tokenizer files) that ``lbedge.from_pretrained`` loads, ``optimizer.pt``
(optimizer, scheduler and RNG states) and ``trainer_state.json`` (step, data order, the trainer's own record); and
``metrics.jsonl``, one JSON object per step and per evaluation, appended to by a resumed run. A resumed run ends
with the same weights as an uninterrupted one when every step draws its batch and randomness from
``(seed, step)``, as :class:`~lbedge.train.bind.Binder` and :class:`~lbedge.train.distill.Distiller` do.

The :class:`Process` a trainer passes says which process writes files (``is_main``) and how the processes wait
for each other (``barrier``, called around every save): one process alone by default; under torchrun the
trainers pass their :class:`~lbedge.train.distributed.World`'s (rank 0 writes, ``torch.distributed.barrier``).
Every process loads the state on resume. Nothing saved depends on the number of processes (a step's samples
are a function of the seed, the step and the global batch, :mod:`.sampler`), so a run resumes on another number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lbedge.checkpoint import write_checkpoint
from lbedge.errors import CheckpointError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
WEIGHTS_FILE = "model.safetensors"


def _alone() -> None:
    """The barrier of a single process: nobody to wait for."""


@dataclass(frozen=True)
class Process:
    """This process's part in a run: only the main process writes files; ``barrier`` waits for all of them."""

    is_main: bool = True
    barrier: Callable[[], None] = _alone


SINGLE = Process()


# --- optimizer ------------------------------------------------------------------------------------------------


def cosine_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(
    params: Sequence[torch.nn.Parameter], *, lr: float, weight_decay: float, warmup_steps: int, max_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``params`` and its warm-up + cosine schedule, the optimizer of every lbedge trainer."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(warmup_steps, max_steps))


# --- random states and data order -------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, Python), in a form ``torch.load(weights_only=True)``
    reads back."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only onto as many devices as were saved)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        log.warning(
            "the run was saved with %d CUDA device(s), this machine has another number: CUDA random "
            "states not restored",
            len(cuda),
        )


def data_order(seed: int, train: Sequence[str | Path], held_out: Sequence[str | Path]) -> dict[str, Any]:
    """What decides the samples each step draws: the seed and the training and held-out files in order (each by
    its last two path parts, so a data folder that moved is still the same data)."""
    h = hashlib.sha256()
    for name, files in (("train", train), ("held_out", held_out)):
        h.update(json.dumps([name, ["/".join(Path(f).parts[-2:]) for f in files]]).encode())
    return {"seed": seed, "train": len(train), "held_out": len(held_out), "sha256": h.hexdigest()}


# --- saving and resuming ----------------------------------------------------------------------------------------


@dataclass
class Resumed:
    """Where a resumed run continues: its step and the record its trainer saved."""

    step: int
    record: dict[str, Any] = field(default_factory=dict)


class RunState:
    """Saves and resumes the state of one run in ``folder`` (``output/last``): the model (an official-layout
    checkpoint), optimizer, scheduler, RNG states, step and data order."""

    def __init__(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        *,
        folder: str | Path,
        tokenizer_dir: str | Path,
        data_order: dict[str, Any],
        process: Process = SINGLE,
    ):
        self.model, self.opt, self.sched = model, opt, sched
        self.folder, self.tokenizer_dir = Path(folder), Path(tokenizer_dir)
        self.data_order = data_order
        self.process = process

    def save(self, step: int, record: dict[str, Any], *, folder: str | Path | None = None) -> Path:
        """Write the state at ``step`` with the trainer's JSON ``record`` (to ``folder``, default the run's)."""
        folder = Path(folder) if folder is not None else self.folder
        self.process.barrier()
        if self.process.is_main:
            write_checkpoint(self.model.state_dict(), self.model.config, folder, tokenizer_dir=self.tokenizer_dir)
            torch.save(
                {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "rng": rng_state()},
                folder / OPTIMIZER_FILE,
            )
            state = {"step": step, "data_order": self.data_order, **record}
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        self.process.barrier()
        return folder

    def resume(self) -> Resumed | None:
        """Load the saved state into the model, optimizer, scheduler and RNGs; None when there is none to load."""
        state_file = self.folder / STATE_FILE
        if not state_file.is_file():
            return None
        from safetensors.torch import load_file

        try:
            self.model.load_state_dict(load_file(str(self.folder / WEIGHTS_FILE)), strict=True)
            saved = torch.load(self.folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
            self.opt.load_state_dict(saved["optimizer"])
            self.sched.load_state_dict(saved["scheduler"])
            record = json.loads(state_file.read_text(encoding="utf-8"))
            step = int(record.pop("step"))
            if "rng" in saved:  # runs saved before RNG states were kept have none
                set_rng_state(saved["rng"])
        except Exception as exc:
            raise CheckpointError(f"cannot resume from {self.folder}: {exc}; delete it to start over") from exc
        order = record.pop("data_order", None)
        if order is not None and order != self.data_order:
            log.warning(
                "%s was saved with other data (%s, now %s): the resumed run will not equal an uninterrupted "
                "one; delete it to start over on this data",
                self.folder,
                order,
                self.data_order,
            )
        log.info("resumed %s at step %d", self.folder, step)
        return Resumed(step, record)


# --- metrics and the loop ---------------------------------------------------------------------------------------


class MetricsLog:
    """``metrics.jsonl`` in ``out`` (appended to), and TensorBoard scalars in ``out/tb`` with ``tensorboard``."""

    def __init__(self, out: str | Path, *, tensorboard: bool = False, process: Process = SINGLE):
        out = Path(out)
        self.file = open(out / "metrics.jsonl", "a", encoding="utf-8") if process.is_main else None  # noqa: SIM115
        self.board = _tensorboard(out) if tensorboard and process.is_main else None

    def step(self, row: dict[str, Any]) -> None:
        """One training step's row (``step``, ``loss``, ...)."""
        self._write(row, row["step"], "")

    def eval(self, step: int, metrics: dict[str, Any]) -> None:
        """One evaluation's metrics, after ``step`` steps."""
        self._write({"step": step, "eval": metrics}, step, "eval/", metrics)

    def _write(self, row: dict[str, Any], step: int, prefix: str, scalars: dict[str, Any] | None = None) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
        if self.board is not None:
            for name, value in (row if scalars is None else scalars).items():
                if isinstance(value, (int, float)) and name not in ("step", "seconds"):
                    self.board.add_scalar(prefix + name, value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()

    def __enter__(self) -> MetricsLog:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Trainer(Protocol):
    """What :func:`train_loop` drives: ``train_step`` advances ``step`` by one and returns its metrics row."""

    step: int

    def train_step(self) -> dict[str, Any]: ...

    def evaluate(self) -> dict[str, Any]: ...


@dataclass
class LoopResult:
    """The last step's metrics row and every evaluation (``{"step": n, **metrics}``) of one :func:`train_loop`."""

    last: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)


def train_loop(
    trainer: Trainer,
    *,
    max_steps: int,
    eval_every: int,
    save_every: int,
    save: Callable[[], Any],
    metrics: MetricsLog,
    stop_after: int | None = None,
    progress: str = "",
    process: Process = SINGLE,
) -> LoopResult:
    """Step ``trainer`` from its current step to ``max_steps`` (``stop_after`` ends earlier, as an interruption
    would): every row goes to ``metrics``; it is evaluated every ``eval_every`` steps and at ``max_steps`` (empty
    evaluations are not recorded) and saved every ``save_every`` steps and when the loop ends. ``progress``
    labels a tqdm bar ("" for none)."""
    end = max_steps if stop_after is None else min(max_steps, stop_after)
    bar = _progress_bar(progress, max_steps, trainer.step) if progress and process.is_main else None
    result, saved_at = LoopResult(), -1
    t0 = time.perf_counter()
    try:
        while trainer.step < end:
            row = trainer.train_step()
            row["seconds"] = round(time.perf_counter() - t0, 2)
            metrics.step(row)
            result.last = row
            if bar is not None:
                bar.update(1)
                if "loss" in row:
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
            step = trainer.step
            if step % eval_every == 0 or step == max_steps:
                ev = trainer.evaluate()
                if ev:
                    result.evals.append({"step": step, **ev})
                    metrics.eval(step, ev)
            if step % save_every == 0:
                save()
                saved_at = step
        if saved_at != trainer.step:
            save()
    finally:
        if bar is not None:
            bar.close()
    return result


def _progress_bar(label: str, total: int, start: int) -> Any:
    """A tqdm bar (None without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=start, desc=label, unit="step", leave=False)


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer in ``out/tb`` (None, with a warning, without tensorboard)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tb"))


__all__ = [
    "SINGLE",
    "LoopResult",
    "MetricsLog",
    "Process",
    "Resumed",
    "RunState",
    "Trainer",
    "cosine_schedule",
    "data_order",
    "make_optimizer",
    "rng_state",
    "set_rng_state",
    "train_loop",
]
