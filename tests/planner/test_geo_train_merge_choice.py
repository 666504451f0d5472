"""The plan's merge: CoCoDC only where measured to beat Streaming DiLoCo in every seed of the same regime."""
from __future__ import annotations

from planner.families.geo_train.merge_choice import MergeEvidence, choose_merge


def _ev(ratios: tuple[float, ...], tau: int = 7, h: int = 8) -> tuple[MergeEvidence, ...]:
    return (MergeEvidence("lm-small", "corpus", tau, h, 0.5, ratios, tuple(range(len(ratios))), "test"),)


def test_cocodc_only_when_it_won_every_seed_in_the_same_regime() -> None:
    assert choose_merge("lm-small", "corpus", 7, 8, "auto", _ev((0.9, 0.95, 0.97))).merge == "taylor"
    lost = choose_merge("lm-small", "corpus", 7, 8, "auto", _ev((0.9, 1.02, 0.97)))
    assert lost.merge == "alpha-blend" and "1.02" in lost.reason and "--merge taylor" in lost.reason
    for other in (("lm-small", "corpus", 3, 8), ("lm-small", "synthetic", 7, 8), ("smollm2-135m", "corpus", 7, 8)):
        d = choose_merge(*other, "auto", _ev((0.9, 0.9, 0.9)))
        assert d.merge == "alpha-blend" and "no measurement" in d.reason
    assert choose_merge("lm-small", "corpus", 0, 8, "auto", _ev((0.5,), tau=0)).merge == "alpha-blend"   # tau = 0


def test_forced_merges_are_obeyed() -> None:
    assert choose_merge("lm-small", "corpus", 7, 8, "taylor", _ev((1.5,))).merge == "taylor"
    assert choose_merge("lm-small", "corpus", 7, 8, "alpha-blend", _ev((0.5,))).merge == "alpha-blend"
