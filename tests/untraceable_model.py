"""A model whose forward branches on tensor values: torch.export cannot capture it (CLI error test)."""
from __future__ import annotations

import torch
from torch import nn


class DataDependent(nn.Module):
    """Runs one of two layers depending on the sign of the input's sum."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.a(x)
        return self.b(x)


def factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """(module, example inputs)."""
    return DataDependent(), (torch.ones(2, 4),)


def traceable_factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """A plain two-layer MLP for the factory path."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.ones(2, 4),)
