"""The dfgl (Duplex) planning problem: workers on a P2P network, each holding a subgraph.

Arrays are in worker order (sorted worker ids, fixed by the lowering). Units are in the names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SurrogateParams:
    """The planner's training surrogate (docs/dfgl.md §3): the per-worker error of the accuracy metric per round.

    Per round, with C' = a(W) * (C + drift_per_round) the consensus distance after this round's gossip
    (a(W): RMS modulus of W's non-consensus eigenvalues, core.p2p_topology.rms_contraction):
        progress_i = reach_i^alpha * q(r_i) * exp(-consensus_effect * C'^beta),  q(r) = 1 / (1 + nu (1/r - 1) / dbar_i)
        floor_i    = loss_floor + reach_penalty * (1 - reach_i) + personal * mismatch_i(W)
        loss_i'    = floor_i + (loss_i - floor_i) * (1 - step_gain * progress_i)       (what the workers learned)
        observed_i = loss_i' + consensus_obs * C'^beta                               (what the metric sees)
    (beta = consensus_power). The observed error adds the models' disagreement at evaluation time: right after a
    sparse round each model is pulled towards its own data (measured: an alternating complete/tree schedule scores
    0.87-0.90 global accuracy after every complete round and 0.50-0.56 after every tree round).
    `reach_i` is the share of worker i's edges whose far end is local or behind a kept link (the coupling: a
    removed link makes those neighbours unreachable); q(r) is the gradient quality at sampling ratio r.
    `mismatch_i(W) = 1/2 || P_i - sum_j W_ij P_j ||_1` is the personalisation term: the total-variation distance
    between worker i's training-label distribution P_i and that of the models its gossip mixes in (Metropolis W of
    the round's topology); a sparse topology that links workers with similar labels keeps each model close to
    its own data, which the local metric rewards (0 without label shares; `personal` fitted per metric).
    `consensus_effect` and `consensus_obs` may be negative: on a metric that rewards personalised models
    (each worker scored on its own skewed labels) disagreement helps. The defaults are assumptions;
    `source` says where a set of constants comes from (planner/families/dfgl/surrogate_csbm.json holds the
    constants fitted to measured training by benchmarks/dfgl_calibration.py)."""

    alpha: float = 1.0
    nu: float = 1.0
    drift_per_round: float = 0.05
    consensus_effect: float = 2.0
    consensus_power: float = 1.0    # beta: progress falls as exp(-consensus_effect * C'^beta)
    consensus_obs: float = 0.0      # observed error per unit of C'^beta at evaluation time
    initial_loss: float = 0.75      # error of the untrained model (chance on 4 classes)
    loss_floor: float = 0.1
    reach_penalty: float = 0.2      # extra error floor per unit of unreachable edge share
    personal: float = 0.0           # extra error floor per unit of label mismatch with the gossip mixture
    step_gain: float = 0.15         # fraction of the gap to the floor closed per round at progress 1
    fit_rmse: float = 0.0           # RMSE of the fit on its calibration sample (error units): the plan's safety margin
    source: str = "assumed (not fitted)"


@dataclass(frozen=True)
class DfglProblem:
    """One decentralised federated GNN training job.

    nodes_train (m,): training nodes per worker |V_i^train|; local_edges (m,): intra-worker edges (directed
    count); cross_edges (m, m): halo count E^x_ij, the distinct nodes of worker j adjacent to worker i's nodes;
    mean_degree (m,): mean one-hop degree dbar_i; kappa_s (m,): compute seconds per node-neighbour unit per
    layer; bandwidth_Bps (R, m, m): link rate per round in bytes/s (0: no link); latency_s (R, m, m);
    model_bytes: |w| * s; embedding_bytes: bytes of one exchanged node embedding (d * s); exchanged_layers L_emb;
    gcn_layers L_gcn; degree d (top-d decoding); r_min; c_max: consensus-distance threshold; rho: penalty
    weight of a consensus overshoot in the round objective; halo_multiplicity (m, m, D): how many of the halo
    nodes of j seen by i have 1, 2, .., D (D: D or more) edges into i's nodes, so that the expected number of
    distinct halo nodes requested at ratio r (each edge kept with probability r) is sum_d n_d (1 - (1 - r)^d)
    (None: r * E^x, exact only when every halo node has one edge into i); round_overhead_s: seconds every round adds
    beyond the rooflines and links (measured with `planner run`, given with --round-overhead)."""

    worker_ids: tuple[str, ...]
    nodes_train: np.ndarray
    local_edges: np.ndarray
    cross_edges: np.ndarray
    mean_degree: np.ndarray
    kappa_s: np.ndarray
    bandwidth_Bps: np.ndarray
    latency_s: np.ndarray
    model_bytes: float
    embedding_bytes: float
    exchanged_layers: int = 1
    gcn_layers: int = 2
    degree: int = 2
    r_min: float = 0.1
    c_max: float = 0.5
    rho: float = 10.0
    surrogate: SurrogateParams = field(default_factory=SurrogateParams)
    round_overhead_s: float = 0.0   # per-round software overhead (Python, PyG, gloo) added to t^(k); user-calibrated
    halo_multiplicity: np.ndarray | None = None   # (m, m, D): halo nodes of j by their edge count into i (1..D)
    label_share: np.ndarray | None = None         # (m, C): each worker's training-label distribution (rows sum to 1)

    @property
    def num_workers(self) -> int:
        """m."""
        return int(self.nodes_train.shape[0])

    @property
    def rounds(self) -> int:
        """R: rounds of the schedule."""
        return int(self.bandwidth_Bps.shape[0])

    def allowed(self, k: int) -> np.ndarray:
        """(m, m) bool: links usable in round k (positive bandwidth both ways), no self links."""
        b = self.bandwidth_Bps[k]
        ok = (b > 0) & (b.T > 0)
        np.fill_diagonal(ok, False)
        return ok

    def check(self) -> None:
        """ValueError naming the first malformed array."""
        m, r = self.num_workers, self.rounds
        for name, arr, shape in (("local_edges", self.local_edges, (m,)), ("cross_edges", self.cross_edges, (m, m)),
                                 ("mean_degree", self.mean_degree, (m,)), ("kappa_s", self.kappa_s, (m,)),
                                 ("bandwidth_Bps", self.bandwidth_Bps, (r, m, m)),
                                 ("latency_s", self.latency_s, (r, m, m))):
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"{name} holds negative or non-finite values")
        if self.halo_multiplicity is not None and (self.halo_multiplicity.shape[:2] != (m, m) or not np.allclose(
                self.halo_multiplicity.sum(axis=2), self.cross_edges)):
            raise ValueError("halo_multiplicity must be (m, m, D) and sum to cross_edges over D")
        if not 0 < self.r_min <= 1:
            raise ValueError(f"r_min {self.r_min} is outside (0, 1]")
        if self.degree < 1:
            raise ValueError("degree must be at least 1")


@dataclass(frozen=True)
class Schedule:
    """Decisions of every round: adjacency (R, m, m) 0/1 symmetric, sampling ratios (R, m) in [r_min, 1]."""

    adjacency: np.ndarray
    ratios: np.ndarray


@dataclass(frozen=True)
class RoundMetrics:
    """Predicted per-round figures of a schedule under the cost model and surrogate (arrays over rounds R)."""

    round_time_s: np.ndarray        # (R,) t^(k) = max_i (t_cp,i + t_com,i)
    compute_s: np.ndarray           # (R, m)
    comm_s: np.ndarray              # (R, m)
    bytes: np.ndarray               # (R,) all bytes sent in the round (embeddings + models)
    consensus: np.ndarray           # (R,) C after the round (surrogate)
    loss: np.ndarray                # (R,) mean observed error of the metric after the round (surrogate)
    progress: np.ndarray            # (R,) mean observed-error drop of the round
    objective: np.ndarray           # (R,) the round objective J = t / error drop + rho * overshoot
