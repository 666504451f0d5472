"""Clients clustered by data signature, and each cluster's home subset of the added blocks.

Signatures are task (or label) histograms, normalised to sum 1. Clusters: k-means (Lloyd, deterministic)
started from the mean signature of each group of clients sharing a dominant task, with k = the number of
distinct dominant tasks capped at P (each cluster needs at least one home block). Home subsets: the P added
blocks split into k contiguous runs, the top-most run to the cluster with the most samples (a top block is
the cheapest to train: the backward stops above everything below it), the next run to the next cluster.
"""
from __future__ import annotations

import numpy as np


def cluster_signatures(signatures: np.ndarray, max_clusters: int, iterations: int = 25) -> np.ndarray:
    """(n,) cluster index per client, clusters numbered 0..k−1 in order of first appearance."""
    sig = np.asarray(signatures, dtype=float)
    n = len(sig)
    if n == 0:
        return np.zeros(0, dtype=int)
    sig = sig / np.maximum(sig.sum(axis=1, keepdims=True), 1e-12)
    dominant = np.argmax(sig, axis=1)
    groups = sorted(set(int(d) for d in dominant), key=lambda d: -np.sum(dominant == d) * 1000 + d)
    groups = groups[:max(1, max_clusters)]
    centers = np.stack([sig[dominant == g].mean(axis=0) for g in groups])
    label = np.zeros(n, dtype=int)
    for _ in range(iterations):
        dist = ((sig[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        new = np.argmin(dist, axis=1)
        if _ > 0 and np.array_equal(new, label):
            break
        label = new
        for k in range(len(centers)):
            if np.any(label == k):
                centers[k] = sig[label == k].mean(axis=0)
    # renumber in order of first appearance, dropping empty clusters
    order: dict[int, int] = {}
    for v in label:
        order.setdefault(int(v), len(order))
    return np.array([order[int(v)] for v in label], dtype=int)


def home_subsets(cluster: np.ndarray, samples: np.ndarray, num_added: int) -> np.ndarray:
    """(n, P) bool: the added blocks in the home subset of each client's cluster (see the module docstring)."""
    cluster = np.asarray(cluster, dtype=int)
    n = len(cluster)
    out = np.zeros((n, num_added), dtype=bool)
    if n == 0 or num_added == 0:
        return out
    k = int(cluster.max()) + 1
    weight = np.array([float(np.sum(np.asarray(samples)[cluster == g])) for g in range(k)])
    rank = sorted(range(k), key=lambda g: (-weight[g], g))
    runs = np.array_split(np.arange(num_added)[::-1], min(k, num_added))   # top-most run first
    for pos, g in enumerate(rank):
        out[np.ix_(cluster == g, runs[pos % len(runs)])] = True
    return out
