"""dfgl's per-round cost model (time and bytes of one round), shared by the planner's cost model
(solvers/dfgl/cost.py) and the runtime's online controller, which predicts its own choices (numpy only).

    t_cp,i  = unit_i * (1 + r_i * dbar_i)                     unit_i = kappa_i |V_i^train| L_gcn (seconds)
    t_com,i = max_{j: a_ij = 1} [(h_ij(r_i) * L_emb * emb_bytes + |w| bytes) / b_ij + lat_ij]
    t       = max_i (t_cp,i + t_com,i) + round_overhead_s
with h_ij(r) = sum_d n_ijd (1 - (1 - r)^d) the expected distinct halo nodes of j that worker i requests at
ratio r (each edge into i's nodes kept with probability r), or r * E^x_ij without multiplicities.

    cost = RoundCost.from_record(job["cost"])
    t, nbytes = cost.round_time_and_bytes(adj, ratios, rate_Bps, latency_s)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


def expected_halo(cross_edges: np.ndarray, halo_multiplicity: np.ndarray | None, ratios: np.ndarray) -> np.ndarray:
    """(m, m) expected distinct halo nodes of j that worker i requests when it samples at ratios[i]."""
    r = np.asarray(ratios, float)
    if halo_multiplicity is None:
        return r[:, None] * cross_edges
    d = np.arange(1, halo_multiplicity.shape[2] + 1, dtype=float)
    return np.einsum("ijd,id->ij", halo_multiplicity, 1.0 - (1.0 - r[:, None]) ** d)


def comm_seconds(link_bytes: np.ndarray, adj: np.ndarray, rate_Bps: np.ndarray, latency_s: np.ndarray) -> np.ndarray:
    """(m,) each worker's slowest incoming neighbour link: bytes / rate + latency over its links."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(adj > 0, link_bytes / np.where(rate_Bps > 0, rate_Bps, 1.0) + latency_s, 0.0)
    return t.max(axis=1)


@dataclass(frozen=True)
class RoundCost:
    """The per-worker constants of the round cost model (arrays in worker order; units in the names)."""

    compute_unit_s: np.ndarray                 # (m,) kappa_i |V_i^train| L_gcn
    mean_degree: np.ndarray                    # (m,) dbar_i
    cross_edges: np.ndarray                    # (m, m) E^x_ij
    halo_multiplicity: np.ndarray | None       # (m, m, D) or None
    model_bytes: float
    embedding_bytes: float
    exchanged_layers: int = 1
    round_overhead_s: float = 0.0

    def compute_s(self, ratios: np.ndarray) -> np.ndarray:
        """(m,) local training seconds at sampling ratios (m,)."""
        return self.compute_unit_s * (1.0 + np.asarray(ratios, float) * self.mean_degree)

    def link_bytes(self, adj: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """(m, m) bytes moved from j to i: i's sampled halo embeddings of j plus j's model."""
        emb = expected_halo(self.cross_edges, self.halo_multiplicity, ratios) * self.exchanged_layers
        return adj * (emb * self.embedding_bytes + self.model_bytes)

    def round_time_and_bytes(self, adj: np.ndarray, ratios: np.ndarray, rate_Bps: np.ndarray,
                             latency_s: np.ndarray) -> tuple[float, float]:
        """(predicted round seconds, predicted bytes of the round) of one action."""
        lb = self.link_bytes(adj, ratios)
        t = self.compute_s(ratios) + comm_seconds(lb, adj, rate_Bps, latency_s)
        return float(t.max()) + self.round_overhead_s, float(lb.sum())

    def record(self) -> dict[str, Any]:
        """JSON-ready lists (for a plan or a runtime job)."""
        return {"compute_unit_s": self.compute_unit_s.tolist(), "mean_degree": self.mean_degree.tolist(),
                "cross_edges": self.cross_edges.tolist(),
                "halo_multiplicity": None if self.halo_multiplicity is None else self.halo_multiplicity.tolist(),
                "model_bytes": float(self.model_bytes), "embedding_bytes": float(self.embedding_bytes),
                "exchanged_layers": int(self.exchanged_layers), "round_overhead_s": float(self.round_overhead_s)}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> "RoundCost":
        """Inverse of `record`."""
        hm = d.get("halo_multiplicity")
        return cls(np.asarray(d["compute_unit_s"], float), np.asarray(d["mean_degree"], float),
                   np.asarray(d["cross_edges"], float), None if hm is None else np.asarray(hm, float),
                   float(d["model_bytes"]), float(d["embedding_bytes"]), int(d.get("exchanged_layers", 1)),
                   float(d.get("round_overhead_s", 0.0)))
