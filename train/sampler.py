"""Which training samples each step trains on, the same whatever the number of processes.

A step's global batch is drawn from ``(seed, step)`` alone (a permutation of the training samples, its first
``batch_size``), and process ``r`` of ``N`` trains on the ``r``-th of ``N`` equal parts of it: the data order
is a function of the global sample position, never of the number of processes. So ``N`` processes with
``batch_size`` train on exactly the samples one process with ``batch_size`` trains on, and a run saved by one
number of processes resumes on another.

PyTorch's ``DistributedSampler`` is not used: its epoch permutations and its padding of the last batch depend
on the number of processes, and its order is not the one single-process runs have always drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .distributed import World


@dataclass(frozen=True)
class StepSampler:
    """The global batch of each step over ``indices`` (the training samples) and this process's share of it."""

    indices: Sequence[int]
    batch_size: int  # the global batch, all processes together
    world: World = field(default_factory=World)

    def __post_init__(self) -> None:
        self.share  # noqa: B018 - a global batch that does not split over the processes is an error now

    @property
    def share(self) -> slice:
        """This process's positions in every global batch."""
        return self.world.shard(self.batch_size, len(self.indices))

    @property
    def global_batch(self) -> int:
        """Samples per step, all processes together: ``batch_size``, or all of them when there are fewer."""
        return min(self.batch_size, len(self.indices))

    def draw(self, generator: torch.Generator) -> list[int]:
        """The step's global batch (sample indices), drawn from ``generator`` (seeded by the seed and step)."""
        n = len(self.indices)
        return [self.indices[i] for i in torch.randperm(n, generator=generator)[: self.global_batch].tolist()]


__all__ = ["StepSampler"]
