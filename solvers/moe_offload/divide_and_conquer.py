"""Outer problem of MoEpic: share the budget across layers by divide and conquer (docs/moe-offload.md §4).

Each layer has a cost curve L_i(x), x = 0..G_i budget units. `dc(lo, hi)` returns the min-plus
convolution of the curves of layers lo..hi, capped at G units, remembering the argmin split at
every internal node; `allocate` walks the tree top-down to recover x_i. Exact over the budget grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Node:
    lo: int
    hi: int
    curve: np.ndarray
    split: np.ndarray | None = None   # split[x] = units given to the left child
    left: "_Node | None" = None
    right: "_Node | None" = None


def min_plus(fl: np.ndarray, fr: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """F[x] = min_y fl[y] + fr[x - y] for x <= cap; ties give more units to the left (lower layers)."""
    n = min(len(fl) + len(fr) - 1, cap + 1)
    out = np.full(n, np.inf)
    arg = np.zeros(n, dtype=np.int64)
    for y in range(min(len(fl), n)):
        m = min(len(fr), n - y)
        cand = fl[y] + fr[:m]
        window = out[y : y + m]
        better = cand <= window
        window[better] = cand[better]
        arg[y : y + m][better] = y
    return out, arg


def _build(curves: list[np.ndarray], lo: int, hi: int, cap: int, merges: list[int]) -> _Node:
    if lo == hi:
        return _Node(lo, hi, curves[lo][: cap + 1])
    mid = (lo + hi) // 2
    left = _build(curves, lo, mid, cap, merges)
    right = _build(curves, mid + 1, hi, cap, merges)
    f, arg = min_plus(left.curve, right.curve, cap)
    merges.append(len(left.curve) * len(right.curve))
    return _Node(lo, hi, f, arg, left, right)


def allocate(curves: list[np.ndarray], total_units: int) -> tuple[np.ndarray, float, int]:
    """Units per layer minimising sum_i L_i(x_i) subject to sum_i x_i <= total_units.

    Curves are made nonincreasing first (a layer can always leave budget unused). Returns
    (x, optimal value, number of pair evaluations in the merges).
    """
    mono = [np.minimum.accumulate(np.asarray(c, dtype=float)) for c in curves]
    merges: list[int] = []
    root = _build(mono, 0, len(mono) - 1, total_units, merges)
    x = np.zeros(len(mono), dtype=np.int64)
    best = int(np.argmin(root.curve))
    # prefer the largest budget among equal minima: unused units are harmless and keep caches full
    ties = np.flatnonzero(root.curve <= root.curve[best])
    start = int(ties[-1])

    def walk(node: _Node, units: int) -> None:
        if node.left is None:
            x[node.lo] = units
            return
        y = int(node.split[units])
        walk(node.left, y)
        walk(node.right, units - y)

    walk(root, start)
    value = float(sum(mono[i][x[i]] for i in range(len(mono))))
    return x, value, int(sum(merges))


def root_curve(curves: list[np.ndarray], total_units: int) -> np.ndarray:
    """F[x] = min over sum_i x_i <= x of sum_i L_i(x_i), for x = 0..total_units (the dual mode reads it)."""
    mono = [np.minimum.accumulate(np.asarray(c, dtype=float)) for c in curves]
    root = _build(mono, 0, len(mono) - 1, total_units, [])
    return np.minimum.accumulate(root.curve)
