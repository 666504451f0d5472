"""The adaptive fragment rule: deadlines always kept, due fragments first, then never-sent, then drift."""
from __future__ import annotations

import random

import pytest

from runtime.geo_train.choice import choose_fragment, feasible_choices


@pytest.mark.parametrize("fragments,slots", [(2, 2), (2, 4), (3, 4), (4, 8), (5, 6)])
def test_every_fragment_is_sent_once_per_window_whatever_the_scores(fragments: int, slots: int) -> None:
    rng = random.Random(fragments * 100 + slots)
    last = [-1] * fragments
    sends: list[list[int]] = [[] for _ in range(fragments)]
    for k in range(40 * slots):
        scores = [rng.random() ** 3 for _ in range(fragments)]
        c = choose_fragment(k, last, scores, slots)
        last[c] = k
        sends[c].append(k)
    for p, ks in enumerate(sends):
        gaps = [b - a for a, b in zip([-1] + ks, ks)]
        assert max(gaps) <= slots, (p, gaps)      # at least once in every N consecutive slots (= H steps)


def test_equal_slots_and_fragments_is_round_robin() -> None:
    last = [-1, -1, -1]
    order = []
    for k in range(9):
        c = choose_fragment(k, last, [3.0, 2.0, 1.0][::-1], 3)
        last[c] = k
        order.append(c)
    assert order == [0, 1, 2] * 3


def test_drift_decides_when_nothing_is_due() -> None:
    assert choose_fragment(2, [0, 1], [0.1, 0.9], 4) == 1
    assert choose_fragment(2, [0, 1], [0.9, 0.1], 4) == 0
    assert choose_fragment(4, [0, 3], [0.0, 9.0], 4) == 0          # fragment 0 is due in slot 4


def test_more_fragments_than_slots_has_no_feasible_choice() -> None:
    assert feasible_choices(0, [-1, -1, -1], 2) == []
    with pytest.raises(ValueError):
        choose_fragment(0, [-1, -1, -1], [0, 0, 0], 2)
