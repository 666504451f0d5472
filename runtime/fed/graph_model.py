"""fed-graph's client model: a two-layer GCN from PyG (`GCNConv`) with a bias-free root (self) map per layer, so a
cluster can weigh a node's own features against its neighbours' (FedGCF's structural vs node-feature signal).

    model = build_model(features=32, classes=4, hidden=32, seed=0)
    g = normalized_graph(edge_index, n)   # edge_index (2, 2E) both directions
    h = model(x, g)                       # x (n, F) float32 -> (n, C) logits
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm


class GraphModel(torch.nn.Module):
    """relu(GCNConv(x) + W_r x) -> GCNConv(h) + W_r' h.

    The convolutions take the graph already normalised (`normalized_graph`: self-loops and D^-1/2 (A+I) D^-1/2
    weights, PyG's own `gcn_norm`), computed once per client instead of in every forward pass."""

    def __init__(self, features: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(features, hidden, normalize=False)
        self.root1 = torch.nn.Linear(features, hidden, bias=False)
        self.conv2 = GCNConv(hidden, classes, normalize=False)
        self.root2 = torch.nn.Linear(hidden, classes, bias=False)

    def forward(self, x: torch.Tensor, graph: "tuple[torch.Tensor, torch.Tensor]") -> torch.Tensor:
        ei, w = graph
        h = torch.relu(self.conv1(x, ei, w) + self.root1(x))
        return self.conv2(h, ei, w) + self.root2(h)


def normalized_graph(edge_index: torch.Tensor, num_nodes: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """(edge_index with self-loops, symmetric GCN weights): what GCNConv's default normalisation computes."""
    ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
    return ei, w


def build_model(features: int, classes: int, hidden: int, seed: int) -> GraphModel:
    """The seeded initial model every configuration starts from."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    model = GraphModel(features, classes, hidden)
    torch.random.set_rng_state(gen_state)
    return model


def state_arrays(model: torch.nn.Module) -> "OrderedDict[str, np.ndarray]":
    """The model's parameters as float32 numpy arrays, by name (sorted)."""
    sd = model.state_dict()
    return OrderedDict((k, sd[k].detach().cpu().numpy().astype(np.float32).copy()) for k in sorted(sd))


def load_arrays(model: torch.nn.Module, arrays: "dict[str, np.ndarray]") -> None:
    """Load float32 arrays by name into the model (every parameter must be present)."""
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in arrays.items()},
                          strict=True)


def train_local(model: GraphModel, x: torch.Tensor, edge_index: "tuple[torch.Tensor, torch.Tensor]", y: torch.Tensor, train: torch.Tensor,
                steps: int, lr: float) -> list[float]:
    """`steps` full-batch Adam steps (fresh optimizer) on the train nodes; returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(int(steps)):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x, edge_index)[train], y[train])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def correct(model: GraphModel, x: torch.Tensor, edge_index: "tuple[torch.Tensor, torch.Tensor]", y: torch.Tensor,
            masks: "list[torch.Tensor]") -> list[int]:
    """Correctly classified nodes under each mask (one forward pass)."""
    model.eval()
    pred = model(x, edge_index).argmax(dim=1)
    return [int((pred[m] == y[m]).sum()) for m in masks]
