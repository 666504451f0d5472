"""fed-graph's server-side math on models as {name: float32 array}: weighted FedAvg, FedGCF's fusion, the UCB1
bandit over beta and the GCFL-style update clustering. Free functions (Flower's idiom: the strategy calls them).

The runtime imports no solvers, so UCB1 and average-linkage clustering are kept here as well as in
solvers/fed_graph/ (bandit.py, clustering.py); tests check the two agree.

    theta_c = fuse(structural[g], common, beta)       # beta = 1 returns `structural[g]` itself (exact)
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

Model = Mapping[str, np.ndarray]


def fedavg(models: Sequence[Model], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Sample-weighted average, accumulated in float64 in the given order, returned as float32."""
    w = np.asarray(weights, dtype=np.float64)
    if len(models) == 0 or w.sum() <= 0:
        raise ValueError("FedAvg needs at least one model with positive weight")
    out = {}
    for k in models[0]:
        acc = np.zeros(np.shape(models[0][k]), dtype=np.float64)
        for m, wi in zip(models, w):
            acc += wi * np.asarray(m[k], dtype=np.float64)
        out[k] = (acc / w.sum()).astype(np.float32)
    return out


def fuse(structural: Model, common: Model, beta: float) -> dict[str, np.ndarray]:
    """beta * structural + (1 - beta) * common; beta = 1 (0) returns the structural (common) model unchanged."""
    if beta == 1.0:
        return {k: np.asarray(v, dtype=np.float32) for k, v in structural.items()}
    if beta == 0.0:
        return {k: np.asarray(v, dtype=np.float32) for k, v in common.items()}
    b = float(beta)
    return {k: (b * np.asarray(structural[k], np.float64) + (1.0 - b) * np.asarray(common[k], np.float64)).astype(np.float32)
            for k in structural}


class Ucb1:
    """UCB1 over `arms` arms (same rule as solvers/fed_graph/bandit.py): untried arms first in order, then
    mean + c * sqrt(2 ln t / n); an optional prior counts as `prior_count` observations of `prior_mean`."""

    def __init__(self, arms: int, c: float, prior_mean: Sequence[float] | None = None, prior_count: float = 0.0) -> None:
        self.c = float(c)
        self.count = np.full(arms, float(prior_count) if prior_mean is not None else 0.0)
        self.total = (np.asarray(prior_mean, dtype=np.float64) * self.count if prior_mean is not None else np.zeros(arms))

    def choose(self) -> int:
        unseen = np.flatnonzero(self.count <= 0)
        if unseen.size:
            return int(unseen[0])
        t = float(self.count.sum())
        return int(np.argmax(self.total / self.count + self.c * np.sqrt(2.0 * math.log(max(t, 1.0)) / self.count)))

    def update(self, arm: int, reward: float) -> None:
        self.count[arm] += 1.0
        self.total[arm] += float(reward)

    def best(self) -> int:
        mean = np.divide(self.total, self.count, out=np.full_like(self.total, -np.inf), where=self.count > 0)
        return int(np.argmax(mean))


def flat(model: Model) -> np.ndarray:
    """All parameters as one float64 vector (sorted names)."""
    return np.concatenate([np.asarray(model[k], np.float64).ravel() for k in sorted(model)])


def update_clusters(updates: np.ndarray, k: int) -> np.ndarray:
    """GCFL-style clusters: average-linkage agglomeration on the cosine similarity of the clients' summed
    updates (n, d) down to `k` clusters; labels numbered by smallest member."""
    norm = np.linalg.norm(updates, axis=1, keepdims=True)
    unit = np.divide(updates, norm, out=np.zeros_like(updates), where=norm > 1e-12)
    sim = unit @ unit.T
    clusters: list[list[int]] = [[i] for i in range(updates.shape[0])]
    while len(clusters) > max(1, k):
        best, pair = -np.inf, (0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                s = float(sim[np.ix_(clusters[a], clusters[b])].mean())
                if s > best + 1e-12:
                    best, pair = s, (a, b)
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    labels = np.empty(updates.shape[0], dtype=np.int64)
    for g, members in enumerate(sorted(clusters, key=min)):
        labels[members] = g
    return labels
