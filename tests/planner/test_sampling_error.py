"""The sampling error used to judge a run's accuracy against its plan's (core/sampling_error.py)."""
from __future__ import annotations

import random

from core.sampling_error import Z95, score_stderr, within_sampling_error


def test_stderr_shrinks_with_the_sample_and_never_vanishes() -> None:
    assert score_stderr([1.0] * 4) > 0 and score_stderr([0.0] * 4) > 0      # 4/4 and 0/4 are not certainties
    assert score_stderr([1.0, 0.0] * 50) < score_stderr([1.0, 0.0] * 4) < score_stderr([1.0, 0.0])
    assert abs(score_stderr([1.0, 0.0] * 500) - 0.5 / 1000 ** 0.5) < 1e-9


def test_the_95_percent_margin_holds_about_95_percent_of_the_time() -> None:
    """Two samples of 8 prompts from the same accuracy differ beyond the margin in few trials (a little
    conservative: the shrunk centre widens the margin at small n), and 8 vs 8 prompts from 0.2 vs 0.9 mostly
    are told apart."""
    rng = random.Random(0)

    def draw(p: float, n: int) -> list[float]:
        return [float(rng.random() < p) for _ in range(n)]

    same = differ = 0
    for _ in range(2000):
        a, b = draw(0.6, 8), draw(0.6, 8)
        same += not within_sampling_error(sum(a) / 8, score_stderr(a), sum(b) / 8, score_stderr(b))
        a, b = draw(0.2, 8), draw(0.9, 8)
        differ += not within_sampling_error(sum(a) / 8, score_stderr(a), sum(b) / 8, score_stderr(b))
    assert same / 2000 <= 0.08 and differ / 2000 >= 0.8     # 6.7 %: scores of 8 prompts are coarse
    assert Z95 == 1.959964
