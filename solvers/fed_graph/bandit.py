"""UCB1 over the fusion ratio's arms, with an optional prior (pseudo-observations per arm).

index(a) = mean(a) + c * sqrt(2 ln t / n(a)); an arm never observed (and without a prior) is played first, in
arm order. `t` counts every observation, prior ones included. The runtime keeps its own copy of this rule
(runtime/fed/graph_fusion.py; the runtime imports no solvers); a test checks the two choose alike.
"""
from __future__ import annotations

import math

import numpy as np


class Ucb1:
    """One bandit (one structural cluster): `arms` values, exploration constant `c`, prior means seen `n0` times."""

    def __init__(self, arms: int, c: float, prior_mean: np.ndarray | None = None, prior_count: float = 0.0) -> None:
        self.c = float(c)
        self.count = np.full(arms, float(prior_count) if prior_mean is not None else 0.0)
        self.total = (np.asarray(prior_mean, dtype=np.float64) * self.count if prior_mean is not None
                      else np.zeros(arms))

    def choose(self) -> int:
        """The arm to play now."""
        unseen = np.flatnonzero(self.count <= 0)
        if unseen.size:
            return int(unseen[0])
        t = float(self.count.sum())
        index = self.total / self.count + self.c * np.sqrt(2.0 * math.log(max(t, 1.0)) / self.count)
        return int(np.argmax(index))

    def update(self, arm: int, reward: float) -> None:
        """Record one observed reward of `arm`."""
        self.count[arm] += 1.0
        self.total[arm] += float(reward)

    def best(self) -> int:
        """The arm with the highest mean (greedy, for the final model)."""
        mean = np.divide(self.total, self.count, out=np.full_like(self.total, -np.inf), where=self.count > 0)
        return int(np.argmax(mean))
