"""Digits data and the Dirichlet non-IID split used by the federated runtimes."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.fed.data import dirichlet_partition, load_digits_split


def test_digits_split_is_seeded_and_disjoint() -> None:
    a, b = load_digits_split(0), load_digits_split(0)
    assert np.array_equal(a.y_train, b.y_train) and np.array_equal(a.x_test, b.x_test)
    assert a.x_train.shape[1:] == (8, 8) and a.x_train.dtype == np.float32
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert len(a.y_train) + len(a.y_test) == 1797 and abs(len(a.y_test) - 359) <= 1


@pytest.mark.parametrize("n, alpha", [(3, 0.3), (20, 0.3), (100, 0.1), (10, 100.0)])
def test_dirichlet_partition_covers_everything_once_and_no_client_is_empty(n: int, alpha: float) -> None:
    labels = load_digits_split(0).y_train
    parts = dirichlet_partition(labels, n, alpha, seed=1)
    assert len(parts) == n and all(len(p) >= 1 for p in parts)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(len(labels)))
    again = dirichlet_partition(labels, n, alpha, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = load_digits_split(0).y_train

    def mean_classes(alpha: float) -> float:
        parts = dirichlet_partition(labels, 20, alpha, seed=0)
        return float(np.mean([len(np.unique(labels[p])) for p in parts]))

    assert mean_classes(0.1) < 5 < 9 <= mean_classes(100.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        dirichlet_partition(np.zeros(5), 10, 0.3)
    with pytest.raises(ValueError):
        dirichlet_partition(np.zeros(5), 2, 0.0)
