"""Baselines on the same problem: DiLoCo (one fragment, blocking) and torchft's Streaming DiLoCo
(round-robin fragments, alpha blend), plus the CoCoDC ablations (lambda = 0; round-robin choice), which
keep the plan's schedule and so share its predicted time: their difference is convergence, measured in
benchmarks/geo_train.py."""
from __future__ import annotations

from dataclasses import dataclass, replace

from solvers.common import Status
from solvers.geo_train.cost import balanced_groups, group_bytes, needed_delay, schedule_metrics
from solvers.geo_train.problem import GeoTrainProblem, GeoTrainSolution


def diloco(problem: GeoTrainProblem) -> GeoTrainSolution:
    """DiLoCo: the whole model all-reduced every H steps, compute blocked while it travels."""
    groups = (tuple(range(problem.num_layers)),)
    fb = group_bytes(problem, groups)
    met = schedule_metrics(replace(problem, score_bytes_per_fragment=0), fb, 1, 0)
    # a one-step "slot" of H steps with tau = 0: everything exposed
    return GeoTrainSolution(status=Status.FEASIBLE, objective=met.step_time_s, metrics=met, groups=groups,
                            fragment_bytes=fb, inner_steps=problem.inner_steps, sends_per_window=1,
                            slot_steps=problem.inner_steps, delay_steps=0, choice="round-robin", merge="blocking",
                            params={"fragment_count": 1, "blocking": True})


def streaming_diloco(problem: GeoTrainProblem, fragments: int, alpha: float = 0.5,
                     window_steps: int | None = None) -> GeoTrainSolution:
    """torchft's Streaming DiLoCo: P fragments round-robin, one per slot of H/P steps, tau < H/P, alpha blend.

    `window_steps` (default H) sets its own H; with P * h of the plan it sends the plan's bytes per step."""
    H = window_steps or problem.inner_steps
    prob = replace(problem, inner_steps=H, score_bytes_per_fragment=0)
    groups = balanced_groups(problem.layer_bytes, problem.embed_bytes, problem.head_bytes, fragments)
    fb = group_bytes(problem, groups)
    h = H // fragments
    tau = min(needed_delay(prob, fb), h - 1)
    met = schedule_metrics(prob, fb, fragments, tau)
    return GeoTrainSolution(status=Status.FEASIBLE, objective=met.step_time_s, metrics=met, groups=groups,
                            fragment_bytes=fb, inner_steps=H, sends_per_window=fragments, slot_steps=h,
                            delay_steps=tau, choice="round-robin", merge="alpha-blend",
                            params={"fragment_count": fragments, "alpha": alpha, "window_steps": H})


def ablation(plan: GeoTrainSolution, what: str) -> GeoTrainSolution:
    """The plan's schedule with lambda = 0 ("lambda0") or round-robin choice ("round_robin")."""
    if what == "lambda0":
        return replace(plan, status=Status.FEASIBLE, params={**plan.params, "lam0": 0.0}, trace=())
    if what == "round_robin":
        return replace(plan, status=Status.FEASIBLE, choice="round-robin", trace=())
    raise ValueError(what)


@dataclass(frozen=True)
class BaselineSet:
    """Every baseline of a plan, by name."""

    items: dict[str, tuple[str, GeoTrainSolution]]


def all_baselines(problem: GeoTrainProblem, plan: GeoTrainSolution) -> BaselineSet:
    """DiLoCo, Streaming DiLoCo at the plan's H and at the plan's bytes per step, and the two ablations."""
    P, h = len(plan.groups), plan.slot_steps
    items = {
        "diloco": ("DiLoCo: whole model every H steps, blocking", diloco(problem)),
        "streaming_diloco": (f"torchft Streaming DiLoCo: {P} fragments round-robin over H, alpha 0.5",
                             streaming_diloco(problem, P)),
        "streaming_diloco_equal_bytes": (f"torchft Streaming DiLoCo with the plan's slot (window {P * h} steps): "
                                         "the plan's bytes per step", streaming_diloco(problem, P, window_steps=P * h)),
        "cocodc_lambda0": ("CoCoDC ablation: lambda = 0 (no curvature term)", ablation(plan, "lambda0")),
        "cocodc_round_robin": ("CoCoDC ablation: round-robin fragment choice", ablation(plan, "round_robin")),
    }
    return BaselineSet(items)
