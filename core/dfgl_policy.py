"""The dfgl controllers' online parts, shared by the planner's simulator and the runtime (numpy only).

A controller sees the round's state (per-worker losses, the consensus-distance estimate, the link rates of
the round, the last round times, the previous action) and returns an action: link scores (m, m) and
sampling ratios (m,), decoded into a symmetric connected topology with `decode_action`.

  * `actor_forward`: the DDPG actor (a 2-layer tanh MLP whose weights the plan carries);
  * `RuleController`: the rule-based fallback (fast links; raise r_i when a worker loses reachable
    neighbours; one more link per worker while the consensus estimate exceeds C_max).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from core.p2p_topology import decode_topology


def state_vector(losses: np.ndarray, consensus: float, c_max: float, bandwidth_Bps: np.ndarray,
                 round_times_s: np.ndarray, prev_adj: np.ndarray, prev_ratios: np.ndarray) -> np.ndarray:
    """The controller's state, each part scaled to about [0, 1]: losses / max, C-hat / C_max (capped at 4),
    link rates / the round's fastest link, round times / their max, previous adjacency and ratios."""
    bmax = float(bandwidth_Bps.max()) or 1.0
    tmax = float(np.max(round_times_s)) or 1.0
    lmax = float(np.max(losses)) or 1.0
    return np.concatenate([np.asarray(losses, float) / lmax, [min(consensus / max(c_max, 1e-12), 4.0)],
                           (bandwidth_Bps / bmax).ravel(), np.asarray(round_times_s, float) / tmax,
                           np.asarray(prev_adj, float).ravel(), np.asarray(prev_ratios, float)])


def state_size(m: int) -> int:
    """Length of `state_vector` for m workers."""
    return 2 * m * m + 3 * m + 1


def actor_forward(params: Mapping[str, np.ndarray], state: np.ndarray) -> np.ndarray:
    """DDPG actor: a = sigmoid(W2 tanh(W1 s + b1) + b2), in (0, 1)^(m*m + m) (link scores, then ratio knobs)."""
    h = np.tanh(params["w1"] @ state + params["b1"])
    return 1.0 / (1.0 + np.exp(-(params["w2"] @ h + params["b2"])))


def decode_action(raw: np.ndarray, m: int, degree: int, r_min: float, bandwidth_Bps: np.ndarray,
                  allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw action in (0, 1)^(m*m + m) -> (adjacency (m, m), ratios (m,) in [r_min, 1]): each worker's top-d
    link scores, symmetrised, connectivity repaired with a maximum spanning tree over the link rates."""
    scores = raw[: m * m].reshape(m, m)
    adj = decode_topology(scores, degree, bandwidth_Bps, allowed)
    ratios = np.clip(r_min + (1.0 - r_min) * raw[m * m:], r_min, 1.0)
    return adj, ratios


@dataclass
class RuleController:
    """Rule-based fallback: keep each worker's `degree` fastest links (by rate), sample a base ratio scaled up
    by how much of a worker's halo its links lost (raise r_i when its degree drops), and add a link per
    worker while the consensus estimate exceeds C_max (drop it again once below half of C_max)."""

    degree: int
    base_ratio: float
    r_min: float
    c_max: float
    cross_edges: np.ndarray        # (m, m) halo counts
    local_edges: np.ndarray        # (m,)
    extra: int = 0

    def act(self, consensus: float, bandwidth_Bps: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(adjacency, ratios) for the next round."""
        m = bandwidth_Bps.shape[0]
        if consensus > self.c_max:
            self.extra = min(self.extra + 1, m - 1 - self.degree)
        elif consensus < 0.5 * self.c_max:
            self.extra = max(self.extra - 1, 0)
        adj = decode_topology(bandwidth_Bps, self.degree + self.extra, bandwidth_Bps, allowed)
        total = self.local_edges + self.cross_edges.sum(axis=1)
        got = self.local_edges + (adj * self.cross_edges).sum(axis=1)
        lost = np.where(got > 0, total / np.maximum(got, 1e-12), 1.0)
        return adj, np.clip(self.base_ratio * lost, self.r_min, 1.0)


def params_from_lists(d: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """Actor weights from a plan's JSON lists."""
    return {k: np.asarray(v, dtype=float) for k, v in d.items()}


@dataclass
class OnlineController:
    """The plan's controller run online by every worker on the same measured state (all-gathered each round),
    so every worker decodes the same topology.

    Each round the DDPG actor (the plan's weights) maps the measured state (per-worker training errors, the
    consensus-distance estimate, the link-rate estimates, the measured round times, the previous action) to link
    scores and ratio knobs, decoded by `decode_action`. The rule-based fallback (`rule`, stepped every round so
    its state stays current) acts instead in a round where the measured consensus estimate exceeds C_max (the
    actor was trained on the simulator's consensus model, not on this run's) or the actor's output is not finite.
    Link-rate estimates start at the rates the plan was given and are updated from the measured link times of
    the links used (rate = bytes / (time - latency)); a link not used keeps its last estimate."""

    actor: Mapping[str, np.ndarray]
    rule: RuleController
    degree: int
    r_min: float
    c_max: float
    rate_Bps: np.ndarray
    losses: np.ndarray | None = None
    consensus: float = 0.0
    round_times_s: np.ndarray | None = None
    prev_adj: np.ndarray | None = None
    prev_ratios: np.ndarray | None = None

    def act(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(adjacency, ratios, "actor" | "rule") for the next round; `allowed` (m, m) bool: links that are up."""
        m = self.rate_Bps.shape[0]
        rates = np.where(allowed, self.rate_Bps, 0.0)
        losses = np.ones(m) if self.losses is None else self.losses
        times = np.zeros(m) if self.round_times_s is None else self.round_times_s
        prev_adj = allowed.astype(float) if self.prev_adj is None else self.prev_adj
        prev_r = np.ones(m) if self.prev_ratios is None else self.prev_ratios
        rule_adj, rule_r = self.rule.act(self.consensus, rates, allowed)
        raw = actor_forward(self.actor, state_vector(losses, self.consensus, self.c_max, rates, times, prev_adj, prev_r))
        if self.consensus > self.c_max or not np.all(np.isfinite(raw)):
            return rule_adj, rule_r, "rule"
        adj, ratios = decode_action(raw, m, self.degree, self.r_min, rates, allowed)
        return adj, ratios, "actor"

    def observe(self, adj: np.ndarray, ratios: np.ndarray, losses: np.ndarray, consensus: float,
                round_times_s: np.ndarray, link_s: np.ndarray, link_bytes: np.ndarray, latency_s: np.ndarray) -> None:
        """The round's measurements: per-worker training errors (m,), the consensus estimate, round seconds (m,),
        link_s (m, m): seconds the bytes link_bytes (m, m) from j took to reach i (NaN where not linked)."""
        self.prev_adj, self.prev_ratios = np.asarray(adj, float), np.asarray(ratios, float)
        self.losses, self.consensus = np.asarray(losses, float), float(consensus)
        self.round_times_s = np.asarray(round_times_s, float)
        busy = np.isfinite(link_s) & (link_s - latency_s > 1e-9) & (link_bytes > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            est = link_bytes / (link_s - latency_s)
        self.rate_Bps = np.where(busy, est, self.rate_Bps)
