"""The fed-graph problem: clients' uploaded signatures, sample counts, model size and the plan's knobs; and the
record of one configuration (how clients are grouped and how the fusion ratio beta is chosen).

Arrays are in client order (sorted ids, fixed by the lowering). Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BETA_MODES = ("bandit", "bandit_global", "fixed", "oracle", "gcfl")


# the bandit's defaults, chosen on decision seed 100 (never scored; `benchmarks.fed_graph --decide-bandit`):
# 3 arms, not the spec's 11 (0, 0.1, ..., 1) nor 5: with one reward per round and +-3 points of validation
# noise, every extra arm costs rounds of exploration that also drag the cluster models; c = 0.005 (rewards
# differ by 1-4 points between arms)
DEFAULT_ARMS: tuple[float, ...] = (0.0, 0.5, 1.0)
DEFAULT_UCB_C = 0.005

@dataclass(frozen=True)
class ClientData:
    """One client's pilot data: z (n, d) propagated features [X, AX, A^2X] (A: mean over local neighbours),
    y (n,) labels, and the train / validation / test node masks (n,) bool."""

    z: np.ndarray
    y: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class FedGraphProblem:
    """structure (n, ds) / features (n, df): the uploaded signatures; train_nodes (n,): FedAvg weights;
    model_bytes: fp32 bytes of the GCN; signature_bytes: one client's signature upload (once)."""

    client_ids: tuple[str, ...]
    structure: np.ndarray
    features: np.ndarray
    train_nodes: np.ndarray
    model_bytes: int
    signature_bytes: int
    rounds: int
    classes: int
    arms: tuple[float, ...] = DEFAULT_ARMS
    k: int | None = None
    threshold: float | None = 0.9
    delta: float | None = None          # None: the median off-diagonal feature similarity
    common_share: float = 0.5
    ucb_c: float = DEFAULT_UCB_C
    prior_count: float = 1.0
    gcfl_warmup: int = 3
    local_steps: int = 5
    lr: float = 0.5
    seed: int = 0
    pilot: tuple[ClientData, ...] = ()

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)


@dataclass(frozen=True)
class FusionConfig:
    """One configuration: `clusters` (n,) cluster of every client (all 0 = one cluster), `common` indices of U,
    beta `mode` (fixed: `beta`; bandit: one UCB1 per cluster over `arms` with `ucb_c` and per-cluster
    `prior_mean` (K, arms) seen `prior_count` times; bandit_global: the ablation, one UCB1 and one beta for every
    cluster, prior (1, arms), reward the gain over all clients; oracle: best arm on validation each round; gcfl: `gcfl_warmup` FedAvg rounds,
    then clusters from update similarity, beta = 1)."""

    name: str
    description: str
    clusters: np.ndarray
    common: np.ndarray
    mode: str
    beta: float = 1.0
    arms: tuple[float, ...] = ()
    ucb_c: float = 0.0
    prior_mean: np.ndarray | None = None
    prior_count: float = 0.0
    gcfl_warmup: int = 0
    gcfl_k: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, ids: tuple[str, ...]) -> dict[str, Any]:
        """The configuration as plan JSON, by client id (what codegen turns into a runtime job)."""
        return {"name": self.name, "description": self.description,
                "clusters": {cid: int(g) for cid, g in zip(ids, self.clusters)},
                "common": [ids[i] for i in self.common], "beta_mode": self.mode, "beta": round(float(self.beta), 6),
                "arms": [round(float(a), 6) for a in self.arms], "ucb_c": round(float(self.ucb_c), 6),
                "prior_mean": ([[round(float(v), 6) for v in row] for row in self.prior_mean]
                               if self.prior_mean is not None else None),
                "prior_count": round(float(self.prior_count), 6),
                "gcfl_warmup": int(self.gcfl_warmup), "gcfl_k": int(self.gcfl_k)}
