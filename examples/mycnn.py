"""Bring your own model to split inference: a small branched CNN (two parallel paths joined by an add).

    planner plan examples/mycnn.py:make --hardware raspberry_pi5_8gb --cloud a100_80gb --link 20mbps -o plan.json
    planner emit plan.json -o build/mycnn && planner run build/mycnn

The factory takes no arguments and returns `(module, example_args)`: the module in eval mode and a tuple of
example inputs at the serving batch (here one 3x32x32 image). `package.module:make` works too when the
package is importable (on PYTHONPATH); a file path needs nothing.
"""
from __future__ import annotations

import torch
from torch import nn


class BranchedCNN(nn.Module):
    """stem -> (3x3 conv path | 1x1 conv path) -> add -> conv -> pool -> linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.right = nn.Conv2d(32, 32, 1)
        self.tail = nn.Sequential(nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.tail(self.left(h) + self.right(h))


def make() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(the model with seeded weights, one example input of shape (1, 3, 32, 32))."""
    torch.manual_seed(0)
    return BranchedCNN().eval(), (torch.randn(1, 3, 32, 32),)
