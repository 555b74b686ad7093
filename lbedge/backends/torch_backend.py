"""The PyTorch reference backend: runs a tower ``nn.Module`` on numpy batches."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


class TorchBackend:
    """Wraps a module whose ``forward`` takes the named inputs positionally and returns one tensor."""

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
        self.module = module.to(device=device).eval()
        if dtype != torch.float32:
            self.module = self.module.to(dtype)
        self.device = torch.device(device)
        self.dtype = dtype
        self.input_names = tuple(input_names)
        self.output_names = (output_name,)

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = []
        for name in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device)
            args.append(t.to(self.dtype) if t.is_floating_point() else t)
        out = self.module(*args)
        return {self.output_names[0]: out.float().cpu().numpy()}
