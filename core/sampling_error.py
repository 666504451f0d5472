"""Sampling error of a mean score measured on a handful of prompts: what a plan's predicted accuracy and a run's
measured one can be expected to differ by, from the sample sizes alone."""
from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959964   # two-sided 95 % normal quantile


def score_stderr(scores: Sequence[float]) -> float:
    """Standard error of the mean of per-prompt scores in [0, 1]: the binomial one at the mean shrunk towards 1/2
    by two pseudo successes and two pseudo failures (Agresti-Coull's centre), so that 0/n and n/n samples still
    carry their uncertainty."""
    n = len(scores)
    if n == 0:
        return 0.5
    p = (sum(scores) + 2.0) / (n + 4.0)
    return math.sqrt(p * (1.0 - p) / n)


def within_sampling_error(mean_a: float, se_a: float, mean_b: float, se_b: float) -> bool:
    """Whether two independently sampled means differ by no more than the 95 % margin of their difference."""
    return abs(mean_a - mean_b) <= Z95 * math.hypot(se_a, se_b) + 1e-12
