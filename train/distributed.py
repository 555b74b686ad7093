"""Training on several processes: the process group, this process's place in it, and what to do when one fails.

``lbedge train bind`` and ``lbedge train distill`` run unchanged under ``torchrun`` (one process per GPU, or per
CPU share, on one or several machines): :func:`distributed_run` joins the process group that torchrun's
environment describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), on NCCL for
CUDA devices and gloo for CPUs. The trainers ask :func:`current_world` where they stand: inside a process group
of several processes they wrap the trained modules in PyTorch's ``DistributedDataParallel``, train each process
on its share of every global batch, and leave writing files to the main process (rank 0). Outside one, or with
one process, nothing changes: a single process trains exactly as it always did.

Failures: a process that raises writes its error where torchrun's failure summary reads it and into the
rendezvous store; the others, whose next collective operation then fails (the peer's connection closes, or the
process-group timeout passes when a process hangs), end with an error naming the process that failed first.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lbedge.errors import LBEdgeError, UsageError

from .state import Process

log = logging.getLogger(__name__)

#: seconds a collective operation waits for the other processes before the job fails (``--dist-timeout``)
DEFAULT_TIMEOUT = 1800.0

#: how long a process whose collective operation failed waits for the failed process's report
REPORT_WAIT = 5.0


class DistributedError(LBEdgeError):
    """Another process of a distributed run failed or stopped answering, or the processes disagree."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: ``rank`` of ``size`` (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True with more than one process (a run of one process never touches ``torch.distributed``)."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, metrics and reports, and logs."""
        return self.rank == 0

    @property
    def process(self) -> Process:
        """The :class:`~lbedge.train.state.Process` the run state and loop take: main writes, all wait at saves."""
        return Process(self.is_main, self.barrier)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            torch.distributed.barrier()

    def device(self, want: str) -> torch.device:
        """The device this process trains on: ``want`` from the config, a CUDA device per local rank."""
        device = torch.device(want)
        if self.distributed and device.type == "cuda":
            if device.index not in (None, self.local_rank):
                log.warning("device %s ignored: process %d trains on cuda:%d", want, self.rank, self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, batch_size: int, samples: int) -> slice:
        """This process's positions in the global batch of a step: ``min(batch_size, samples)`` samples (all
        processes draw the same global batch; rank ``r`` trains on the ``r``-th equal part of it)."""
        batch = min(batch_size, samples)
        if batch % self.size:
            fewer = f" (the data has only {samples} training samples)" if samples < batch_size else ""
            raise UsageError(
                f"a global batch of {batch} samples{fewer} does not split evenly over {self.size} processes: set "
                f"batch_size to a multiple of {self.size} (batch_size is the global batch of all processes)"
            )
        local = batch // self.size
        return slice(self.rank * local, (self.rank + 1) * local)

    def seed(self, base: int) -> int:
        """This process's seed for randomness drawn inside the model (dropout): ``base`` for one process."""
        return base * self.size + self.rank

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (``value`` itself for one process)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.size

    def agree(self, value: int, what: str) -> None:
        """Raise unless every process holds the same ``value`` (e.g. the step each resumed from)."""
        if not self.distributed:
            return
        t = torch.tensor([value, -value], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        low, high = int(t[0]), -int(t[1])
        if low != high:
            raise DistributedError(
                f"the processes disagree on {what} ({low} to {high}; process {self.rank} has {value}): every "
                "process must see the same run folder, e.g. on a file system all machines share"
            )

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's ``x`` concatenated in rank order, with gradients flowing back to each process's own
        part (:class:`GatherWithGrad`)."""
        if not self.distributed:
            return x
        return GatherWithGrad.apply(x)

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` in PyTorch's ``DistributedDataParallel`` (gradients averaged over the processes)."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


class GatherWithGrad(torch.autograd.Function):
    """All-gather that keeps the gradient: forward concatenates every process's tensor in rank order; backward
    sums the gradients every process computed for this process's part (a reduce-scatter, as
    ``torch.distributed.nn.functional.all_gather``, deprecated in torch 2.13, and open_clip's
    ``gather_with_grad`` do). A loss over the gathered batch then gets the gradient it would in one process."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], torch.distributed.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def current_world() -> World:
    """Where this process stands: its rank in the initialised process group, or a single process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """True when a launcher (torchrun, SLURM with its environment) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed_run(device: str = "cpu", *, timeout: float = DEFAULT_TIMEOUT) -> Iterator[World]:
    """Within the block, this process is one of the run's processes when a launcher started several (the
    process group joined from the environment: NCCL for ``device`` CUDA, gloo for CPU, ``timeout`` seconds for
    every collective operation), a single process otherwise. Other processes than the main one log only errors.
    A failure inside the block is reported (see the module) and ends the block with a clear error."""
    if not launched():
        yield World()
        return
    joined = not torch.distributed.is_initialized()  # else the caller's group, left to the caller
    store = _join(device, timeout) if joined else None
    world = current_world()
    loggers = [logging.getLogger(name) for name in ("lbedge", "lbedge.progress")]
    levels = [lg.level for lg in loggers]
    if not world.is_main:  # one process logs
        for lg in loggers:
            lg.setLevel(logging.ERROR)
    try:
        yield world
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        error = _failure(world, store, exc, timeout)
        if error is exc:
            raise
        raise error from exc
    else:  # after a failure the process ends as it is: tearing down a group whose peers are gone can block
        if joined:
            torch.distributed.destroy_process_group()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _join(device: str, timeout: float) -> Any:
    """Join the process group the environment describes; returns the rendezvous store."""
    dist = torch.distributed
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed: install a build with it to use torchrun")
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asks for CUDA, which this machine lacks: use device = 'cpu' (gloo)")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    wait = datetime.timedelta(seconds=timeout)
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=wait))
        store.set_timeout(wait)
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo",
            store=dist.PrefixStore("default_pg", store),
            rank=rank,
            world_size=size,
            timeout=wait,
        )
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"cannot join the {os.environ.get('WORLD_SIZE')} processes of this run at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {timeout:g} s ({exc}): start "
            "every process (torchrun --nnodes on every machine) with the same --rdzv_endpoint"
        ) from exc
    log.info("process %d of %d joined (%s)", rank, size, dist.get_backend())
    return dist.PrefixStore("lbedge/failed", store)


def _failure(world: World, store: Any, exc: Exception, timeout: float) -> Exception:
    """The error this process ends with. When a collective operation failed: the report of the process that
    failed first, or a lost-contact error when none reported. Otherwise this process's own error, reported first
    to the others (the rendezvous store) and to torchrun's failure summary."""
    if _lost_contact(exc):
        others = _reports(world, store, wait=REPORT_WAIT)
        if others:
            rank, message = min(others.items())
            return DistributedError(
                f"process {rank} of {world.size} failed: {message} (process {world.rank} stopped with it)"
            )
        return DistributedError(
            f"process {world.rank} of {world.size} lost the others ({_one_line(exc)}): another process stopped "
            f"without a report (killed, out of memory) or did not answer within the {timeout:g} s timeout; see "
            "torchrun's failure summary and the other processes' output"
        )
    with contextlib.suppress(Exception):
        store.set(str(world.rank), f"{type(exc).__name__}: {_one_line(exc)}")
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        with contextlib.suppress(Exception):
            ErrorHandler().record_exception(exc)
    return exc


def _reports(world: World, store: Any, *, wait: float) -> dict[int, str]:
    """The failure reports of the other processes, waiting up to ``wait`` seconds for the first one."""
    others = [str(r) for r in range(world.size) if r != world.rank]
    deadline = time.monotonic() + wait
    while True:
        try:
            found = {int(r): store.get(r).decode() for r in others if store.check([r])}
        except Exception:  # noqa: BLE001 - the store went with its host: nobody left to report
            return {}
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _lost_contact(exc: BaseException) -> bool:
    """A collective operation failed: a peer closed its connection, or the timeout passed."""
    if isinstance(exc, LBEdgeError):
        return False
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _COLLECTIVE_FAILURES)


#: words of the errors a collective operation raises when a peer is gone (gloo, NCCL)
_COLLECTIVE_FAILURES = ("gloo", "nccl", "connection closed", "connection reset", "timed out")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "GatherWithGrad",
    "World",
    "current_world",
    "distributed_run",
    "launched",
]
