"""Roll a controller through the rounds of a problem in the planner's simulator (cost model + surrogate).

A controller is any callable `(k, obs) -> (adjacency, ratios)`; `obs` holds what the runtime would measure:
per-worker losses, the consensus estimate, the round's link rates, the last round times, the previous action.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.dfgl_policy import state_vector
from solvers.dfgl.cost import round_objective
from solvers.dfgl.problem import DfglProblem, Schedule


@dataclass
class Observation:
    """What a controller sees before round k."""

    losses: np.ndarray
    consensus: float
    bandwidth_Bps: np.ndarray
    allowed: np.ndarray
    round_times_s: np.ndarray
    prev_adj: np.ndarray
    prev_ratios: np.ndarray

    def state(self, c_max: float) -> np.ndarray:
        """The DDPG state vector of this observation."""
        return state_vector(self.losses, self.consensus, c_max, self.bandwidth_Bps, self.round_times_s,
                            self.prev_adj, self.prev_ratios)


Controller = Callable[[int, Observation], tuple[np.ndarray, np.ndarray]]


def initial_observation(p: DfglProblem, k: int = 0) -> Observation:
    """Before the first round: initial losses, no disagreement, a full topology at ratio 1 as the 'previous'."""
    m = p.num_workers
    adj = p.allowed(k).astype(np.int8)
    return Observation(np.full(m, p.surrogate.initial_loss), 0.0, p.bandwidth_Bps[k], p.allowed(k),
                       np.zeros(m), adj, np.ones(m))


def step(p: DfglProblem, k: int, obs: Observation, adj: np.ndarray, ratios: np.ndarray
         ) -> tuple[float, dict, Observation]:
    """Apply one action in round k: (objective J, its parts, the next observation)."""
    j, parts = round_objective(p, k, adj, ratios, obs.consensus, obs.losses)
    losses = parts["losses"]
    kn = min(k + 1, p.rounds - 1)
    nxt = Observation(losses, parts["consensus"], p.bandwidth_Bps[kn], p.allowed(kn),
                      parts["compute"] + parts["comm"], adj, ratios)
    return j, parts, nxt


def rollout(p: DfglProblem, controller: Controller) -> tuple[Schedule, list[float]]:
    """The schedule a controller produces over all rounds, and its per-round objectives."""
    m, r_n = p.num_workers, p.rounds
    adjs = np.zeros((r_n, m, m), dtype=np.int8)
    ratios = np.zeros((r_n, m))
    objs = []
    obs = initial_observation(p)
    for k in range(r_n):
        a, r = controller(k, obs)
        j, _, obs = step(p, k, obs, a, r)
        adjs[k], ratios[k] = a, r
        objs.append(j)
    return Schedule(adjs, ratios), objs
