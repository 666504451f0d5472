"""The workers' GNN: two PyG layers (GCNConv or SAGEConv)."""
from __future__ import annotations

import torch
from torch_geometric.nn import GCNConv, SAGEConv


class TwoLayerGnn(torch.nn.Module):
    """x (n, F) -> logits (n, C) over edge_index (2, E); `layer` is "gcn" or "sage"."""

    def __init__(self, features: int, hidden: int, classes: int, layer: str = "gcn") -> None:
        super().__init__()
        conv = {"gcn": GCNConv, "sage": SAGEConv}[layer]
        self.conv1 = conv(features, hidden)
        self.conv2 = conv(hidden, classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)


def _with_example(model: TwoLayerGnn, features: int) -> TwoLayerGnn:
    """Attach example inputs (a 4-node path graph) so the model can be traced or profiled."""
    model.example_inputs = (torch.zeros(4, features), torch.tensor([[0, 1, 2, 1, 2, 3], [1, 2, 3, 0, 1, 2]]))
    return model


def build_gcn(features: int = 32, hidden: int = 32, classes: int = 4) -> TwoLayerGnn:
    """Catalog factory of the `gcn` model."""
    return _with_example(TwoLayerGnn(features, hidden, classes, "gcn"), features)


def build_sage(features: int = 32, hidden: int = 32, classes: int = 4) -> TwoLayerGnn:
    """Catalog factory of the `sage` model."""
    return _with_example(TwoLayerGnn(features, hidden, classes, "sage"), features)


def flat(model: torch.nn.Module) -> torch.Tensor:
    """All parameters as one fp32 vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat(model: torch.nn.Module, vec: torch.Tensor) -> None:
    """Write a flat vector back into the parameters."""
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(vec[i:i + n].view_as(p))
            i += n
