"""Per-round neighbour sampling in torch: each edge into a worker's nodes is kept with probability r_i (so the
mean sampled share of one-hop neighbours is r_i); edges from workers behind a removed link are dropped (they
are unreachable this round)."""
from __future__ import annotations

import torch


def sample_edges(edge_index: torch.Tensor, part: torch.Tensor, rank: int, ratio: float, neighbours: set[int],
                 generator: torch.Generator) -> torch.Tensor:
    """Edges (2, E') src -> dst with dst on worker `rank`, src local or on a current neighbour, Bernoulli(ratio)."""
    src, dst = edge_index
    into = part[dst] == rank
    ps = part[src]
    reach = ps == rank
    for j in neighbours:
        reach |= ps == j
    keep = into & reach & (torch.rand(src.shape[0], generator=generator) < ratio)
    return edge_index[:, keep]


def halo_requests(edges: torch.Tensor, part: torch.Tensor, rank: int) -> dict[int, torch.Tensor]:
    """The distinct remote source nodes of the sampled edges, by owning worker (sorted global ids)."""
    src = edges[0]
    remote = src[part[src] != rank].unique()
    owners = part[remote]
    return {int(j): remote[owners == j] for j in owners.unique()}


def local_subgraph(edges: torch.Tensor, nodes: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """`edges` (global ids) renumbered to positions in `nodes`, edges with an end outside dropped, and made
    symmetric: a halo node then aggregates from the local nodes it is linked to (real edges of the graph),
    instead of from itself alone, which would give it GCN degree 1 and over-weight its messages."""
    remap = torch.full((num_nodes,), -1, dtype=torch.int64)
    remap[nodes] = torch.arange(nodes.numel())
    e = remap[edges]
    e = e[:, (e >= 0).all(0)]
    return torch.cat([e, e.flip(0)], 1).unique(dim=1)
