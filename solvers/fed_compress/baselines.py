"""Baselines (docs/fed-compress.md, "Baselines"), each returning a `FedCompressSolution` for the same schedule as Caesar.

| name                   | download (kept fraction)                  | upload (kept fraction)                       | batch |
|------------------------|-------------------------------------------|----------------------------------------------|-------|
| no_compression         | 1 (dense fp32)                            | 1 (dense fp32)                               | fixed |
| uniform_mean           | Caesar's mean, same codec, every device   | Caesar's mean, top-k                         | fixed |
| uniform_traffic        | one ratio matching Caesar's total downlink bytes | one ratio matching Caesar's uplink bytes | fixed |
| bandwidth_proportional | BWd_i / max BWd, clipped to [1 − θ_d_max, 1] | BWu_i / max BWu, clipped to [1 − θ_u_max, 1 − θ_u_min] | fixed |
| topk_ef                | Caesar's mean, same codec                 | Caesar's mean, top-k with error feedback     | fixed |
| fedpaq                 | 1 (dense fp32)                            | stochastic uniform quantisation, 8 bits      | fixed |

"Caesar's mean" is the mean over every (round, selected device) of Caesar's plan with the same
settings; "fixed" is one batch for every device (32 by default), clipped to its memory and sample
count. Accounting (docs/fed-compress.md, "Accounting"): no device holds a model before its first download,
so in every configuration a device's first download is the dense model (kept fraction 1), as in Caesar's
rule; the ratios above apply from a device's second participation on, and "Caesar's mean" download
ratio is its mean over those later participations. Every baseline follows its policy and reports
INFEASIBLE (with `params["violations"]`) when that breaks a constraint (memory at the smallest
batch, a budgeted downlink).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from solvers.common import Baseline, Status, Stopwatch
from solvers.fed_compress.caesar import CaesarConfig, solve as caesar_solve
from solvers.fed_compress.cost import download_bytes, evaluate, upload_bytes
from solvers.fed_compress.problem import FedCompressProblem, FedCompressSolution

FIXED_BATCH = 32
FEDPAQ_BITS = 8


def fixed_batch_schedule(problem: FedCompressProblem, batch: int = FIXED_BATCH,
                         cap_at_samples: bool = True) -> tuple[np.ndarray, list[str]]:
    """(R, N) batches: `batch` snapped to the grid, clipped per device; violations where β_min does not fit."""
    grid = np.asarray(problem.batch_grid, dtype=np.int64)
    cap = problem.batch_cap()
    bad = [f"device {problem.client_ids[i]} cannot fit the smallest batch {grid[0]} in memory"
           for i in np.flatnonzero(cap < grid[0])]
    cap = np.maximum(cap, grid[0])
    if cap_at_samples:
        n = problem.samples
        cap = np.minimum(cap, [grid[grid <= max(int(v), int(grid[0]))].max() for v in n])
    want = np.minimum(cap, batch)
    per_device = np.array([grid[grid <= max(int(w), int(grid[0]))].max() for w in want], dtype=np.int64)
    mask = problem.selected_mask()
    return np.where(mask, per_device[None, :], 0), bad


def _finish(problem: FedCompressProblem, name: str, params: dict, watch: Stopwatch, keep_down: np.ndarray,
            keep_up: np.ndarray, batch: np.ndarray, violations: list[str], *, down_codec: str = "caesar",
            up_codec: str = "topk", error_feedback: bool = False, quant_bits: int = 0) -> FedCompressSolution:
    mask = problem.selected_mask()
    keep_down = np.where(problem.first_contact_mask(), 1.0, keep_down)   # nothing to rebuild from yet
    keep_down, keep_up = np.where(mask, keep_down, 0.0), np.where(mask, keep_up, 0.0)
    m = evaluate(problem, keep_down, keep_up, batch, up_codec=up_codec, quant_bits=quant_bits)
    if problem.down_budget_bytes is not None:
        over = np.flatnonzero(m.bytes_down.sum(axis=1) > problem.down_budget_bytes * (1 + 1e-12))
        if over.size:
            violations = violations + [f"downlink of round {int(over[0]) + 1} is "
                                       f"{m.bytes_down[over[0]].sum():.0f} B > budget {problem.down_budget_bytes:.0f} B"]
    return FedCompressSolution(
        status=Status.INFEASIBLE if violations else Status.FEASIBLE, objective=m.total_traffic_bytes, metrics=m,
        wall_time_s=watch.elapsed(), params={"baseline": name, **params, "violations": violations},
        keep_down=keep_down, keep_up=keep_up, batch=batch, down_codec=down_codec, up_codec=up_codec,
        recovery=True, error_feedback=error_feedback, quant_bits=quant_bits)


def caesar_mean_keeps(problem: FedCompressProblem, config: CaesarConfig | None = None,
                      reference: FedCompressSolution | None = None) -> tuple[float, float, FedCompressSolution]:
    """(mean kept download fraction over every participation but a device's first, mean kept upload
    fraction over every participation, Caesar's solution); first downloads are dense in every configuration.

    `reference` is Caesar's solution when the caller already has it (else it is solved here with `config`).
    """
    sol = reference if reference is not None else caesar_solve(problem, config)
    mask = problem.selected_mask()
    later = mask & ~problem.first_contact_mask()
    down = sol.keep_down[later] if later.any() else sol.keep_down[mask]
    return float(down.mean()), float(sol.keep_up[mask].mean()), sol


def no_compression(problem: FedCompressProblem) -> FedCompressSolution:
    """Dense fp32 both ways, one fixed batch."""
    w = Stopwatch()
    batch, bad = fixed_batch_schedule(problem)
    ones = np.ones((problem.num_rounds, problem.num_clients))
    return _finish(problem, "no_compression", {"download": "dense fp32", "upload": "dense fp32",
                                               "batch": FIXED_BATCH}, w, ones, ones, batch, bad,
                   down_codec="dense", up_codec="dense")


def uniform_mean(problem: FedCompressProblem, config: CaesarConfig | None = None,
                 reference: FedCompressSolution | None = None) -> FedCompressSolution:
    """One download and one upload ratio for every device: Caesar's mean kept fractions."""
    w = Stopwatch()
    kd, ku, _ = caesar_mean_keeps(problem, config, reference)
    kd, ku = round(kd, 6), round(ku, 6)
    batch, bad = fixed_batch_schedule(problem)
    full = np.ones((problem.num_rounds, problem.num_clients))
    return _finish(problem, "uniform_mean", {"keep_down": kd, "keep_up": ku, "batch": FIXED_BATCH,
                                             "matched": "Caesar's mean ratio"}, w, full * kd, full * ku, batch, bad)


def _keep_for_bytes(numels: tuple[int, ...], min_numel: int, count: int, target: float, direction: str) -> float:
    """Largest keep fraction whose `count` payloads total at most `target` bytes (bisection, 1e-6)."""
    fn = download_bytes if direction == "down" else upload_bytes
    if count == 0:
        return 1.0
    lo, hi = 1e-6, 1.0
    if count * fn(numels, hi, min_numel) <= target:
        return 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if count * fn(numels, mid, min_numel) <= target:
            lo = mid
        else:
            hi = mid
    return math.floor(lo * 1e6) / 1e6      # rounding down keeps the total at or below the target


def uniform_traffic(problem: FedCompressProblem, config: CaesarConfig | None = None,
                    reference: FedCompressSolution | None = None) -> FedCompressSolution:
    """One ratio per direction for every device, chosen so each direction's total bytes match Caesar's."""
    w = Stopwatch()
    _, _, sol = caesar_mean_keeps(problem, config, reference)
    mask = problem.selected_mask()
    later = mask & ~problem.first_contact_mask()     # first downloads are dense in both (see the module notes)
    numels, mnc = tuple(problem.tensor_numels), problem.min_compress_numel
    kd = _keep_for_bytes(numels, mnc, int(later.sum()), float(sol.metrics.bytes_down[later].sum()), "down")
    ku = _keep_for_bytes(numels, mnc, int(mask.sum()), float(sol.metrics.bytes_up.sum()), "up")
    batch, bad = fixed_batch_schedule(problem)
    full = np.ones((problem.num_rounds, problem.num_clients))
    return _finish(problem, "uniform_traffic", {"keep_down": kd, "keep_up": ku, "batch": FIXED_BATCH,
                                                "matched": "Caesar's total bytes per direction"},
                   w, full * kd, full * ku, batch, bad)


def bandwidth_proportional(problem: FedCompressProblem, config: CaesarConfig | None = None) -> FedCompressSolution:
    """Kept fraction ∝ the device's bandwidth over the population's fastest, clipped to Caesar's ranges."""
    config = config or CaesarConfig()
    w = Stopwatch()
    bwd = np.asarray(problem.downlink_bytes_per_s, dtype=float)
    bwu = np.asarray(problem.uplink_bytes_per_s, dtype=float)
    kd = np.round(np.clip(bwd / bwd.max(), 1.0 - config.theta_d_max, 1.0), 6)
    ku = np.round(np.clip(bwu / bwu.max(), 1.0 - config.theta_u_max, 1.0 - config.theta_u_min), 6)
    batch, bad = fixed_batch_schedule(problem)
    R = problem.num_rounds
    return _finish(problem, "bandwidth_proportional",
                   {"keep_down_range": [round(1.0 - config.theta_d_max, 6), 1.0],
                    "keep_up_range": [round(1.0 - config.theta_u_max, 6), round(1.0 - config.theta_u_min, 6)],
                    "batch": FIXED_BATCH}, w, np.tile(kd, (R, 1)), np.tile(ku, (R, 1)), batch, bad)


def topk_ef(problem: FedCompressProblem, config: CaesarConfig | None = None,
            reference: FedCompressSolution | None = None) -> FedCompressSolution:
    """Top-k with error feedback at one ratio (the usual practice), download at Caesar's mean ratio."""
    w = Stopwatch()
    kd, ku, _ = caesar_mean_keeps(problem, config, reference)
    kd, ku = round(kd, 6), round(ku, 6)
    batch, bad = fixed_batch_schedule(problem)
    full = np.ones((problem.num_rounds, problem.num_clients))
    return _finish(problem, "topk_ef", {"keep_down": kd, "keep_up": ku, "error_feedback": True, "batch": FIXED_BATCH},
                   w, full * kd, full * ku, batch, bad, error_feedback=True)


def fedpaq(problem: FedCompressProblem, bits: int = FEDPAQ_BITS) -> FedCompressSolution:
    """FedPAQ-style: dense download, upload quantised stochastically (unbiased) to `bits` bits per value."""
    w = Stopwatch()
    batch, bad = fixed_batch_schedule(problem)
    ones = np.ones((problem.num_rounds, problem.num_clients))
    return _finish(problem, "fedpaq", {"download": "dense fp32", "upload_bits": bits, "quantiser": "stochastic uniform",
                                       "batch": FIXED_BATCH}, w, ones, ones, batch, bad,
                   down_codec="dense", up_codec="quant", quant_bits=bits)


BASELINES: dict[str, Callable[[FedCompressProblem], FedCompressSolution]] = {
    "no_compression": no_compression,
    "uniform_mean": uniform_mean,
    "uniform_traffic": uniform_traffic,
    "bandwidth_proportional": bandwidth_proportional,
    "topk_ef": topk_ef,
    "fedpaq": fedpaq,
}

DESCRIPTIONS = {
    "no_compression": "dense fp32 both ways, fixed batch",
    "uniform_mean": "one ratio per direction for all devices (Caesar's mean), fixed batch",
    "uniform_traffic": "one ratio per direction for all devices at Caesar's total bytes, fixed batch",
    "bandwidth_proportional": "kept fraction proportional to each device's link, clipped, fixed batch",
    "topk_ef": "top-k with error feedback at one ratio (Caesar's mean), fixed batch",
    "fedpaq": "FedPAQ-style: dense download, 8-bit stochastic quantised upload, fixed batch",
}


MATCHED = ("uniform_mean", "uniform_traffic", "topk_ef")   # read Caesar's plan


def baselines(config: CaesarConfig | None = None, reference: FedCompressSolution | None = None) -> list[Baseline]:
    """The baselines as `Baseline` records; those matched to Caesar use `config` and its plan `reference`."""
    config = config or CaesarConfig()
    params = {"batch": FIXED_BATCH}
    out = []
    for name, fn in BASELINES.items():
        if name in MATCHED:
            solve = (lambda p, fn=fn: fn(p, config, reference))
        elif name == "bandwidth_proportional":
            solve = (lambda p, fn=fn: fn(p, config))
        else:
            solve = fn
        extra = {"upload_bits": FEDPAQ_BITS} if name == "fedpaq" else {}
        out.append(Baseline(name, DESCRIPTIONS[name], solve, {**params, **extra}))
    return out
