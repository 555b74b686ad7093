"""Train: ``lbedge train bind``, ``merge``, ``distill`` and ``lb-mini`` (needs ``lbedge[train]``).

``bind`` and ``distill`` run unchanged under ``torchrun`` (docs/distributed-training.md): each process joins the
run's process group, the main one prints and writes.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import writable_output

_DEVICE_HELP = "cpu or cuda (under torchrun each process trains on its own GPU, cuda:LOCAL_RANK)."
_TIMEOUT_HELP = (
    "Under torchrun: seconds a process waits for the others at a collective step before the run fails [default: 1800]."
)


def _silent(*args: object, **kwargs: object) -> None:
    """click.echo of the processes other than the main one."""


@click.group()
def train() -> None:
    """Bind a modality by contrastive LoRA, merge LoRA, distil a smaller student (needs lbedge[train])."""


@train.command("bind")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML file ([bind] table or top-level keys)."
)
@click.option("--base", help="Checkpoint whose towers start the run (a new modality starts from the image tower).")
@click.option("--modality", type=click.Choice(["image", "depth", "thermal", "audio", "video"]))
@click.option("--data", help="Folder (class subfolders or .txt sidecars) or CSV/JSONL manifest of (file, texts).")
@click.option("--val-data", help="Held-out set (default: --val-fraction of the data).")
@click.option("--output", "-o", help="Run folder (resumed when it holds a checkpoint).")
@click.option("--lora-r", type=int)
@click.option("--lora-alpha", type=float)
@click.option("--lr", type=float)
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--max-steps", type=int)
@click.option("--seed", type=int)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]))
@click.option("--on-bad-data", type=click.Choice(["skip", "stop"]))
@click.option("--device", help=_DEVICE_HELP)
@click.option("--no-resume", is_flag=True, help="Start over even if the run folder has a checkpoint.")
@click.option("--dist-timeout", type=float, help=_TIMEOUT_HELP)
def train_bind(config_file: Path | None, no_resume: bool, dist_timeout: float | None, **opts) -> None:
    """Bind a modality tower to the frozen language tower (LoRA, symmetric InfoNCE). Under torchrun, every
    process trains on its share of each global batch (--batch-size is the global batch)."""
    from ..train.bind import Binder
    from ..train.config import BindConfig, load_config
    from ..train.distributed import DEFAULT_TIMEOUT, distributed_run

    cfg = load_config(BindConfig, config_file, opts)
    with distributed_run(cfg.device, timeout=dist_timeout or DEFAULT_TIMEOUT) as world:
        say = click.echo if world.is_main else _silent
        b = Binder(cfg, world=world)
        say(
            f"binding {cfg.modality}: {len(b.train_idx)} training samples, {len(b.val_idx) or len(b.val or [])} "
            f"held out, {len(b.store.bad)} bad (see {cfg.output}/bad_samples.jsonl)"
            + (f"; {world.size} processes, global batch {b.sampler.global_batch}" if world.distributed else "")
        )
        res = b.run(resume=not no_resume)
    for ev in res.evals:
        say(
            f"step {ev['step']}: zero-shot top-1 {ev['zero_shot_top1']:.3f} (chance {ev['chance_top1']:.3f}), "
            f"retrieval R@1 {ev['retrieval_r1']:.3f}"
        )
    say(f"checkpoint {res.output / 'last'} (step {res.steps}); metrics in {res.output / 'metrics.jsonl'}")


@train.command("merge")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path))
def train_merge(run: Path, output: Path) -> None:
    """Fold RUN's LoRA into plain weights (official layout, safetensors) and check they agree."""
    writable_output(output, folder=True)
    from ..train.merge import merge

    rep = merge(run, output)
    click.echo(f"merged {rep.lora_pairs} LoRA pairs into {rep.output}: min cosine vs LoRA model {rep.min_cosine:.6f}")


@train.command("distill")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file ([distill] table).")
@click.option("--teacher", help="Teacher checkpoint (official layout).")
@click.option("--student", help="Preset (vit-b16, vit-s16, vit-ti16, vit-s16-d6) or 'width,depth,heads,patch'.")
@click.option("--resolution", type=int, help="Student input size in pixels (default: the teacher's 224).")
@click.option("--data", help="Unlabeled inputs of the teacher's modality (folder).")
@click.option("--output", "-o", help="Run folder; the student lands in OUTPUT/student.")
@click.option("--max-steps", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--seed", type=int)
@click.option("--device", help=_DEVICE_HELP)
@click.option("--dist-timeout", type=float, help=_TIMEOUT_HELP)
def train_distill(config_file: Path | None, dist_timeout: float | None, **opts) -> None:
    """Distil the teacher's vision tower into a smaller student in the same language space. Under torchrun,
    every process trains on its share of each global batch (--batch-size is the global batch)."""
    from ..train.config import DistillConfig, load_config
    from ..train.distill import Distiller
    from ..train.distributed import DEFAULT_TIMEOUT, distributed_run

    cfg = load_config(DistillConfig, config_file, opts)
    with distributed_run(cfg.device, timeout=dist_timeout or DEFAULT_TIMEOUT) as world:
        res = Distiller(cfg, world=world).run()
    say = click.echo if world.is_main else _silent
    after, before = res.heldout["after"], res.heldout["before"]
    say(
        f"student {res.output}: {res.student['params'] / 1e6:.2f} M params, {res.student['gflops']:.2f} GFLOP "
        f"(teacher {res.teacher['params'] / 1e6:.2f} M, {res.teacher['gflops']:.2f} GFLOP)"
    )
    say(
        f"held-out cosine to teacher {before.get('mean_cosine', 0):.3f} -> {after.get('mean_cosine', 0):.3f}, "
        f"zero-shot agreement {after.get('zero_shot_agreement', 0):.3f}"
    )


@train.command("lb-mini")
@click.option("--quick", is_flag=True, help="A few steps of every stage on a tiny world (what CI runs).")
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("build/lb-mini"),
    show_default=True,
    help="Data, runs and checkpoints.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("lbmini/bundles"), show_default=True, help="Bundles."
)
@click.option("--threads", default=2, show_default=True, help="Torch threads (part of exact reproduction).")
def train_lb_mini(quick: bool, work: Path, out: Path, threads: int) -> None:
    """Build lb-mini, lbedge's embedded default, from scratch: world data, RGB tower, LoRA binding of depth,
    thermal and audio, merge, students, INT8 bundles (resumable: finished stages are skipped)."""
    import dataclasses
    import os

    from ..errors import UsageError
    from ..lbmini.recipe import LbMiniRecipe, quick_recipe, run_recipe

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("lbedge train lb-mini runs in one process: run it without torchrun (bind and distill use it)")

    recipe = quick_recipe(work, out) if quick else LbMiniRecipe(work=str(work), out=str(out))
    record = run_recipe(dataclasses.replace(recipe, threads=threads), say=click.echo)
    click.echo(
        f"lb-mini bundles in {out}: {record['bundle_bytes'] / 1e6:.1f} MB (recipe {record['recipe_fingerprint']})"
    )
