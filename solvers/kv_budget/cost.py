"""Cost model of a configuration from its measured rows: memory per request, accuracy, concurrency, overhead.

Concurrency: requests whose KV fits in the free device memory at once, sized by the p95 request (admission
that holds for 95 % of requests) and by the mean (steady state with many requests in flight).
Kept fraction per task lets `run` predict bytes for prompts of another length (bytes = fraction x tokens x
token_bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.kv_budget.problem import KvBudgetProblem


@dataclass(frozen=True)
class KvMetrics:
    """Predicted figures of one configuration (bytes, fractions, requests)."""

    mean_kv_bytes: float
    p95_kv_bytes: float
    accuracy: float                 # mean score in [0, 1]
    accuracy_drop: float            # full-cache accuracy minus this one (fraction)
    kept_fraction: float            # mean over requests of kept bytes / full bytes
    kept_fraction_by_task: dict[str, float]
    mean_kv_bytes_by_task: dict[str, float]
    concurrency_p95: int
    concurrency_mean: int
    overhead_fraction_of_prefill: float   # median over requests of select_s / prefill_s
    oracle_recall: float            # mean over requests


def p95(x: np.ndarray) -> float:
    """95th percentile (linear interpolation, numpy's default)."""
    return float(np.percentile(x, 95))


def metrics(problem: KvBudgetProblem, row: int) -> KvMetrics:
    """The figures of one table row."""
    p = problem
    b = p.kv_bytes[row].astype(float)
    full = p.lengths.astype(float) * p.token_bytes
    acc = float(p.score[row].mean())
    full_acc = float(p.score[p.full_index].mean())
    frac = b / full
    tasks = sorted(set(p.tasks))
    idx = {t: [i for i, x in enumerate(p.tasks) if x == t] for t in tasks}
    mean_b, p95_b = float(b.mean()), p95(b)
    return KvMetrics(
        mean_kv_bytes=mean_b, p95_kv_bytes=p95_b, accuracy=acc, accuracy_drop=full_acc - acc,
        kept_fraction=float(frac.mean()),
        kept_fraction_by_task={t: float(frac[i].mean()) for t, i in idx.items()},
        mean_kv_bytes_by_task={t: float(b[i].mean()) for t, i in idx.items()},
        concurrency_p95=int(p.free_memory_bytes // p95_b) if p95_b > 0 else 0,
        concurrency_mean=int(p.free_memory_bytes // mean_b) if mean_b > 0 else 0,
        overhead_fraction_of_prefill=float(np.median(p.select_s[row] / p.prefill_s)),
        oracle_recall=float(p.recall[row].mean()),
    )


def meets(problem: KvBudgetProblem, row: int, tol: float = 1e-9) -> bool:
    """Whether a row keeps accuracy within the allowed drop and (if set) the p95 bytes under the cap."""
    m = metrics(problem, row)
    ok = m.accuracy_drop <= problem.max_accuracy_drop + tol
    if problem.max_kv_bytes_per_request is not None:
        ok = ok and float(problem.kv_bytes[row].max()) <= problem.max_kv_bytes_per_request
    return ok
