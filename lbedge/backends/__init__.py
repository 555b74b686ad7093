"""Backends run one tower graph: ``run({input name: array}) -> {output name: array}``.

Implementations: PyTorch (reference, ``lbedge.backends.torch_backend``). The ONNX Runtime and
TensorRT backends keep the same interface and never import torch.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """One compiled or loaded tower graph."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on a batch; arrays in, arrays out."""
        ...
