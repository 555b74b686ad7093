"""One process of a distributed training test (tests/test_distributed.py starts several, as torchrun would).

    python tests/dist_worker.py SCENARIO CONFIG.json OUT [STEP]

Scenarios: ``bind-step`` / ``distill-step`` (one step; loss, gradients and weights to ``OUT/rank<r>.pt``),
``bind`` / ``distill`` (a run, to ``STEP`` steps when given, as an interruption would end it), ``fail`` (process
1 raises in step ``STEP``) and ``hang`` (process 1 stops answering in step ``STEP``). Every scenario runs inside
:func:`lbedge.train.distributed.distributed_run`, as ``lbedge train`` does; errors end the process as the CLI
ends it (``error: ...``, status 1).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from lbedge.errors import LBEdgeError
from lbedge.train.bind import Binder
from lbedge.train.config import BindConfig, DistillConfig
from lbedge.train.distill import Distiller
from lbedge.train.distributed import DEFAULT_TIMEOUT, distributed_run


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main(scenario: str, config: str, out: str, step: int | None) -> None:
    raw = json.loads(Path(config).read_text())
    timeout = float(raw.pop("dist_timeout", DEFAULT_TIMEOUT))
    with distributed_run(raw.get("device", "cpu"), timeout=timeout) as world:
        if scenario.startswith("distill"):
            trainer = Distiller(DistillConfig(**raw))
            model = trainer.student
        else:
            trainer = Binder(BindConfig(**raw))
            model = trainer.model
        if scenario.endswith("-step"):
            row = trainer.train_step()
            result = {"row": row, "grads": _grads(model), "weights": _weights(model), "world": world.size}
            torch.save(result, Path(out) / f"rank{world.rank}.pt")
            return
        if scenario in ("fail", "hang") and world.rank == 1:
            step_once = trainer.train_step

            def broken() -> dict:
                if trainer.step + 1 == step:
                    if scenario == "hang":
                        time.sleep(3600)
                    raise RuntimeError("simulated failure of this process")
                return step_once()

            trainer.train_step = broken  # type: ignore[method-assign]
        trainer.run(progress=False, stop_after=None if scenario in ("fail", "hang") else step)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
    except LBEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
