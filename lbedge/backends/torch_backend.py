"""The PyTorch reference backend: runs a tower ``nn.Module`` on numpy batches."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ..errors import UsageError


class TorchBackend:
    """Wraps a module whose ``forward`` takes the named inputs positionally and returns one tensor.

    :meth:`close` drops the module (and returns cached CUDA memory to the driver on a GPU)."""

    name = "torch"
    max_batch: int | None = None  # any batch
    static_batch = False

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: tuple[str, ...],
        output_name: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        module = module.to(device=device).eval()
        if dtype != torch.float32:
            module = module.to(dtype)
        self.module: torch.nn.Module | None = module
        self.device = torch.device(device)
        self.dtype = dtype
        self.input_names = tuple(input_names)
        self.output_names = (output_name,)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self.module is None

    def close(self) -> None:
        """Drop the module; a run in progress keeps it until it returns. A second call does nothing."""
        if self.module is None:
            return
        self.module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = self.module  # one reference for the whole run, whatever close() does meanwhile
        if module is None:
            raise UsageError("this PyTorch tower was closed: load the model again")
        args = []
        for name in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device)
            args.append(t.to(self.dtype) if t.is_floating_point() else t)
        out = module(*args)
        return {self.output_names[0]: out.float().cpu().numpy()}
