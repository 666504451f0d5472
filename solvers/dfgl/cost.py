"""Cost model (round time, bytes) and the training surrogate of dfgl (spec §3), apart from any search.

    t_cp,i  = kappa_i * |V_i^train| * (1 + r_i * dbar_i) * L_gcn
    t_com,i = max_{j: a_ij = 1} [(h_ij(r_i) * L_emb * emb_bytes + |w| bytes) / b_ij + lat_ij]
with h_ij(r) the expected distinct halo nodes requested at ratio r (r * E^x_ij when every halo node has one edge
into i; fewer edges are dropped than nodes when a halo node has several: `expected_halo`).
    t       = max_i (t_cp,i + t_com,i) + round_overhead_s
Neighbours behind a removed link are unreachable (the coupling), which the surrogate's `reach` carries. The
surrogate (SurrogateParams) predicts each worker's error of the accuracy metric round by round.
"""
from __future__ import annotations

import numpy as np

from core.dfgl_round import RoundCost, comm_seconds
from core.dfgl_round import expected_halo as core_expected_halo
from core.p2p_topology import metropolis_weights, rms_contraction
from solvers.dfgl.problem import DfglProblem, RoundMetrics, Schedule


def round_cost(p: DfglProblem) -> RoundCost:
    """The problem's per-round cost constants (core.dfgl_round, which the runtime shares)."""
    return RoundCost(p.kappa_s * p.nodes_train * p.gcn_layers, p.mean_degree, p.cross_edges, p.halo_multiplicity,
                     p.model_bytes, p.embedding_bytes, p.exchanged_layers, p.round_overhead_s)


def compute_s(p: DfglProblem, ratios: np.ndarray) -> np.ndarray:
    """Per-worker local training seconds (m,) at sampling ratios `ratios` (m,)."""
    return p.kappa_s * p.nodes_train * (1.0 + ratios * p.mean_degree) * p.gcn_layers


def _requested_share(p: DfglProblem, r: np.ndarray) -> np.ndarray:
    """(..., D) probability that a halo node with d = 1..D edges into the worker is requested at ratio(s) r (...)."""
    d = np.arange(1, p.halo_multiplicity.shape[2] + 1, dtype=float)
    return 1.0 - (1.0 - r[..., None]) ** d


def expected_halo(p: DfglProblem, ratios: np.ndarray) -> np.ndarray:
    """(m, m) expected distinct halo nodes of j that worker i requests when it samples at ratios[i]: each edge
    into i's nodes is kept with probability r, so a halo node with d edges into i is requested with probability
    1 - (1 - r)^d (r * E^x when the problem has no multiplicities)."""
    return core_expected_halo(p.cross_edges, p.halo_multiplicity, ratios)


def expected_halo_grid(p: DfglProblem, grid: np.ndarray) -> np.ndarray:
    """(G, m, m) `expected_halo` with every worker at ratio grid[g]."""
    g = np.asarray(grid, float)
    if p.halo_multiplicity is None:
        return g[:, None, None] * p.cross_edges[None]
    return np.einsum("ijd,gd->gij", p.halo_multiplicity, _requested_share(p, g))


def link_bytes(p: DfglProblem, adj: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """(m, m) bytes moved from j to i in a round: i's sampled halo embeddings of j plus j's model."""
    emb = expected_halo(p, ratios) * p.exchanged_layers * p.embedding_bytes
    return adj * (emb + p.model_bytes)


def comm_s(p: DfglProblem, k: int, adj: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per-worker communication seconds (m,) in round k: the slowest incoming neighbour link."""
    return comm_seconds(link_bytes(p, adj, ratios), adj, p.bandwidth_Bps[k], p.latency_s[k])


def reach(p: DfglProblem, adj: np.ndarray) -> np.ndarray:
    """(m,) share of each worker's neighbourhood (local edges + halo) that is local or behind a kept link."""
    total = p.local_edges + p.cross_edges.sum(axis=1)
    got = p.local_edges + (adj * p.cross_edges).sum(axis=1)
    return np.where(total > 0, got / np.maximum(total, 1e-12), 1.0)


_GOSSIP_CACHE: dict[bytes, tuple[np.ndarray, float]] = {}
_GOSSIP_CACHE_SIZE = 4096


def gossip_terms(adj: np.ndarray) -> tuple[np.ndarray, float]:
    """(Metropolis weights, their RMS contraction a(W)) of a 0/1 adjacency, memoised on the adjacency's bytes
    (they depend on nothing else; the surrogate's fit and the plan-time searches revisit the same topologies)."""
    a = np.ascontiguousarray(adj, dtype=np.int8)
    key = a.shape[0].to_bytes(2, "little") + a.tobytes()
    hit = _GOSSIP_CACHE.get(key)
    if hit is None:
        if len(_GOSSIP_CACHE) >= _GOSSIP_CACHE_SIZE:
            _GOSSIP_CACHE.clear()
        w = metropolis_weights(a)
        w.setflags(write=False)
        hit = _GOSSIP_CACHE[key] = (w, rms_contraction(w))
    return hit


def next_consensus(p: DfglProblem, adj: np.ndarray, consensus: float) -> float:
    """Surrogate consensus distance after one round: local training adds `drift_per_round`, then gossip with
    Metropolis weights on `adj` contracts it by a(W), the RMS of W's non-consensus eigenvalues (a typical
    disagreement, not the worst-case lambda2; a complete topology averages exactly: 0)."""
    return gossip_terms(adj)[1] * (consensus + p.surrogate.drift_per_round)


def quality(p: DfglProblem, ratios: np.ndarray) -> np.ndarray:
    """Gradient quality q(r) of sampling ratio(s): (m,) for ratios (m,), (m, G) for a grid (1, G)."""
    dbar = np.maximum(p.mean_degree, 1e-9)
    r = np.asarray(ratios, float)
    if r.ndim == 2:
        dbar = dbar[:, None]
    return 1.0 / (1.0 + p.surrogate.nu * (1.0 / r - 1.0) / dbar)


def progress(p: DfglProblem, adj: np.ndarray, ratios: np.ndarray, c_next: float) -> np.ndarray:
    """(m,) surrogate progress of each worker in one round, `c_next` the consensus after it (SurrogateParams)."""
    s = p.surrogate
    return reach(p, adj) ** s.alpha * quality(p, ratios) * np.exp(-s.consensus_effect * c_next ** s.consensus_power)


def label_mismatch(p: DfglProblem, adj: np.ndarray) -> np.ndarray:
    """(m,) total-variation distance between each worker's training-label distribution and that of its gossip
    mixture under `adj` (Metropolis weights): 0 when the problem has no label shares."""
    if p.label_share is None:
        return np.zeros(p.num_workers)
    return 0.5 * np.abs(p.label_share - gossip_terms(adj)[0] @ p.label_share).sum(axis=1)


def error_floor(p: DfglProblem, adj: np.ndarray) -> np.ndarray:
    """(m,) the learned error each worker approaches under topology `adj` (SurrogateParams)."""
    s = p.surrogate
    floor = s.loss_floor + s.reach_penalty * (1.0 - reach(p, adj))
    return floor + s.personal * label_mismatch(p, adj) if s.personal else floor


def observed(p: DfglProblem, losses: np.ndarray, consensus: float) -> np.ndarray:
    """(m,) the error the metric sees: learned error + consensus_obs * C^beta (disagreement at evaluation)."""
    s = p.surrogate
    return losses + s.consensus_obs * max(consensus, 0.0) ** s.consensus_power


def next_losses(p: DfglProblem, adj: np.ndarray, ratios: np.ndarray, losses: np.ndarray, c_next: float) -> np.ndarray:
    """(m,) each worker's surrogate error after the round."""
    floor = error_floor(p, adj)
    return floor + (losses - floor) * (1.0 - p.surrogate.step_gain * progress(p, adj, ratios, c_next))


def round_objective(p: DfglProblem, k: int, adj: np.ndarray, ratios: np.ndarray, consensus: float,
                    losses: np.ndarray | None = None) -> tuple[float, dict]:
    """The one-round objective J = t / mean observed-error drop + rho * max(0, C' - C_max) (seconds per unit of
    the metric's error removed; a round that removes none scores 1e9 s), with its parts. `losses` (m,) are the
    learned errors before the round (default: the surrogate's initial error), `consensus` the C before it. The
    oracle and every controller minimise this same figure."""
    tc, tm = compute_s(p, ratios), comm_s(p, k, adj, ratios)
    t = float((tc + tm).max()) + p.round_overhead_s
    c_next = next_consensus(p, adj, consensus)
    if losses is None:
        losses = np.full(p.num_workers, p.surrogate.initial_loss)
    new = next_losses(p, adj, ratios, losses, c_next)
    drop = float((observed(p, losses, consensus) - observed(p, new, c_next)).mean())
    j = (t / drop if drop > 1e-9 else 1e9) + p.rho * max(0.0, c_next - p.c_max)
    return j, {"t": t, "compute": tc, "comm": tm, "progress": drop, "consensus": c_next, "losses": new,
               "bytes": float(link_bytes(p, adj, ratios).sum())}


def evaluate(p: DfglProblem, sched: Schedule, consensus0: float = 0.0) -> RoundMetrics:
    """Roll the schedule through the cost model and surrogate: per-round time, bytes, consensus, observed error."""
    s = p.surrogate
    r_n, m = p.rounds, p.num_workers
    out = {k: np.zeros(r_n) for k in ("t", "bytes", "cons", "loss", "prog", "obj")}
    tc_all, tm_all = np.zeros((r_n, m)), np.zeros((r_n, m))
    loss = np.full(m, s.initial_loss)
    c = consensus0
    for k in range(r_n):
        adj, r = sched.adjacency[k], sched.ratios[k]
        j, parts = round_objective(p, k, adj, r, c, loss)
        loss, c = parts["losses"], parts["consensus"]
        out["t"][k], out["bytes"][k], out["cons"][k] = parts["t"], parts["bytes"], c
        out["loss"][k], out["prog"][k], out["obj"][k] = observed(p, loss, c).mean(), parts["progress"], j
        tc_all[k], tm_all[k] = parts["compute"], parts["comm"]
    return RoundMetrics(out["t"], tc_all, tm_all, out["bytes"], out["cons"], out["loss"], out["prog"], out["obj"])
