"""Real data for the federated runtimes: scikit-learn's digits, split non-IID over clients.

`load_digits_split(seed)` returns images (n, 8, 8) scaled to [0, 1] and labels, split into train and
held-out test; `dirichlet_partition(labels, n_clients, alpha, seed)` gives every client a seeded
Dirichlet(alpha) share of every class (smaller alpha = more skewed), then moves samples from the
largest clients to any empty one so that no client is empty. Both are deterministic for a seed.

scikit-learn ships digits inside the package (`load_digits` needs no network); nothing here calls a
`fetch_*` function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DigitsSplit:
    """Digits as numpy arrays: `x_*` float32 (n, 8, 8) in [0, 1], `y_*` int64 (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """scikit-learn's 1 797 digits (offline), shuffled with `seed`, the last `test_fraction` held out."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = ds.images.astype(np.float32) / 16.0
    y = ds.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1) -> list[np.ndarray]:
    """Indices of `labels` for each of `n_clients` clients, class shares ~ Dirichlet(alpha), none below `min_size`.

    For every class, a Dirichlet(alpha · 1) vector over clients splits that class's (shuffled) samples.
    Clients left with fewer than `min_size` samples then take samples one at a time from the currently
    largest client, so the split stays as skewed as possible while no client is empty.
    """
    labels = np.asarray(labels)
    if n_clients < 1:
        raise ValueError("n_clients must be >= 1")
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    if n_clients * min_size > len(labels):
        raise ValueError(f"{len(labels)} samples cannot give {n_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(n_clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).round().astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(int(i) for i in chunk)
    for client in range(n_clients):
        while len(parts[client]) < min_size:
            donor = max(range(n_clients), key=lambda c: (len(parts[c]), -c))
            parts[client].append(parts[donor].pop())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]
