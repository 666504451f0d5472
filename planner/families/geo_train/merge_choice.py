"""Which merge the plan runs: CoCoDC's Taylor merge with adaptive choice, or torchft's Streaming DiLoCo.

The schedule search predicts time only; whether CoCoDC's merge converges faster than Streaming DiLoCo's
alpha blend is a measured fact, not a cost-model output. So the plan recommends CoCoDC only where a
measurement says it wins: an entry of `EVIDENCE` for the same model, data kind and regime (tau, h) in
which CoCoDC's held-out perplexity was below Streaming DiLoCo's at equal bytes in *every* seed. Anywhere
else (no measurement, a loss or a tie, or tau = 0 where nothing is in flight) the plan is torchft's
Streaming DiLoCo on the same fragments, slot and delay (round-robin, alpha 0.5), and the notes say why;
`--merge taylor` forces CoCoDC.

Example:
    >>> choose_merge("lm-small", "corpus", tau=0, slot_steps=8, requested="auto").merge
    'alpha-blend'
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MergeEvidence:
    """One measurement of CoCoDC (plan's merge and choice) vs torchft Streaming DiLoCo at equal bytes.

    `final_ppl_ratio` is CoCoDC's final held-out perplexity over Streaming DiLoCo's, per seed (< 1: CoCoDC
    better); `source` names the benchmark run and its output.
    """

    model: str
    data_kind: str
    tau: int
    slot_steps: int
    lam0: float
    final_ppl_ratio: tuple[float, ...]
    seeds: tuple[int, ...]
    source: str


# Measured on the shared 2-core CPU (loaded), WAN emulated (2 Mbit/s, RTT 80 ms), lm-small, 2 regions, 64 steps,
# final held-out perplexity of the regions' mean model, CoCoDC (bounded merge, lambda0 = 1, adaptive choice)
# over torchft Streaming DiLoCo at equal bytes (docs/geo-train.md, "Measurements").
EVIDENCE: tuple[MergeEvidence, ...] = (
    MergeEvidence("lm-small", "corpus", tau=7, slot_steps=8, lam0=1.0,
                  final_ppl_ratio=(1.0503, 1.0451, 1.0428), seeds=(0, 1, 2),
                  source="benchmarks/geo_train.py --quick, 2026-12-07"),
)


@dataclass(frozen=True)
class MergeDecision:
    """The merge the plan runs ("taylor": CoCoDC; "alpha-blend": torchft Streaming DiLoCo) and why."""

    merge: str
    reason: str


def choose_merge(model: str, data_kind: str, tau: int, slot_steps: int, requested: str,
                 evidence: tuple[MergeEvidence, ...] = EVIDENCE) -> MergeDecision:
    """CoCoDC only where measured to beat Streaming DiLoCo in every seed (see the module docstring)."""
    if requested == "taylor":
        return MergeDecision("taylor", "CoCoDC forced by --merge taylor")
    if requested == "alpha-blend":
        return MergeDecision("alpha-blend", "torchft Streaming DiLoCo forced by --merge alpha-blend")
    if tau == 0:
        return MergeDecision("alpha-blend", "tau = 0: no fragment is in flight, nothing to compensate; the plan "
                                            "runs torchft's Streaming DiLoCo")
    same = [e for e in evidence if (e.model, e.data_kind, e.tau, e.slot_steps) == (model, data_kind, tau, slot_steps)]
    if not same:
        return MergeDecision("alpha-blend", f"no measurement shows CoCoDC's merge beating Streaming DiLoCo for "
                                            f"{model} on {data_kind} data at tau = {tau}, h = {slot_steps}; the plan "
                                            "runs torchft's Streaming DiLoCo (force CoCoDC with --merge taylor)")
    e = same[-1]
    worst = max(e.final_ppl_ratio)
    if worst < 1.0:
        return MergeDecision("taylor", f"CoCoDC measured better than Streaming DiLoCo in every seed "
                                       f"(final perplexity ratio <= {worst:.3g}, {len(e.seeds)} seeds; {e.source})")
    return MergeDecision("alpha-blend", f"CoCoDC's merge measured worse than Streaming DiLoCo in some seed "
                                        f"(final perplexity ratio up to {worst:.3g}, {len(e.seeds)} seeds; {e.source}); "
                                        "the plan runs torchft's Streaming DiLoCo (force CoCoDC with --merge taylor)")
