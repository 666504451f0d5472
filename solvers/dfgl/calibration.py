"""Fit the dfgl training surrogate's constants (SurrogateParams) to measured learning curves (numpy + scipy).

    params, fit = fit_surrogate(problem, {"ring@1": (schedule, error_per_round, consensus_per_round), ...}, e0)

`error_per_round` (R,) is the measured mean error (1 - accuracy) of a probe schedule after each round,
`consensus_per_round` (R,) its measured relative consensus distance after gossip, e0 the initial model's
error. The drift of the consensus model is fitted first (least squares on C_k = a(W_k) (C_{k-1} + drift)),
then the progress and floor constants by bounded least squares on the error curves, from a few fixed starts
(deterministic).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np
from scipy.optimize import least_squares

from core.p2p_topology import metropolis_weights, rms_contraction
from solvers.dfgl.cost import evaluate
from solvers.dfgl.problem import DfglProblem, Schedule, SurrogateParams

# fitted constants, their bounds, and the starts of the multi-start fit
# (the last, `personal`, only with personal=True: the label-mismatch term, docs/dfgl.md §3)
FITTED = ("alpha", "nu", "consensus_effect", "consensus_power", "consensus_obs", "loss_floor", "reach_penalty",
          "step_gain", "personal")
LOWER = np.array([0.0, 0.0, -20.0, 0.1, -3.0, 0.0, 0.0, 0.005, -2.0])
UPPER = np.array([5.0, 50.0, 20.0, 3.0, 3.0, 1.0, 2.0, 1.0, 2.0])
STARTS = (np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.1, 0.1, 0.3, 0.0]),
          np.array([0.5, 5.0, 2.0, 0.5, -0.5, 0.2, 0.5, 0.1, 0.3]),
          np.array([2.0, 0.2, -2.0, 1.5, 0.5, 0.05, 0.0, 0.6, -0.3]))

Probe = tuple[Schedule, np.ndarray, np.ndarray]


def fit_drift(measured: Mapping[str, Probe]) -> float:
    """Least-squares drift of C_k = a(W_k) (C_{k-1} + drift) over every probe and round (C_{-1} = 0),
    one-step (from the measured C_{k-1})."""
    num = den = 0.0
    for sched, _, cons in measured.values():
        prev = 0.0
        for k, c in enumerate(cons):
            lam = rms_contraction(metropolis_weights(sched.adjacency[k]))
            num += lam * (float(c) - lam * prev)
            den += lam * lam
            prev = float(c)
    return float(max(num / max(den, 1e-12), 0.0))


def _params(base: SurrogateParams, theta: np.ndarray) -> SurrogateParams:
    return replace(base, **{k: float(v) for k, v in zip(FITTED, theta)})   # zip stops at len(theta)


def predicted_errors(p: DfglProblem, params: SurrogateParams, measured: Mapping[str, Probe]) -> dict[str, np.ndarray]:
    """The surrogate's mean error per round (R,) of every probe schedule under `params`."""
    q = replace(p, surrogate=params)
    return {n: evaluate(q, sched).loss for n, (sched, _, _) in measured.items()}


def fit_surrogate(p: DfglProblem, measured: Mapping[str, Probe], initial_error: float,
                  source: str = "fitted", personal: bool = False) -> tuple[SurrogateParams, dict]:
    """(fitted SurrogateParams, fit record: rmse, rmse of a configuration-blind curve, per-probe rmse);
    personal=True also fits the label-mismatch constant (else it stays 0)."""
    n_fit = len(FITTED) if personal else len(FITTED) - 1
    names = sorted(measured)
    target = np.concatenate([np.asarray(measured[n][1], float) for n in names])
    base = replace(p.surrogate, drift_per_round=fit_drift(measured), initial_loss=float(initial_error), source=source,
                   personal=0.0)

    def resid(theta: np.ndarray) -> np.ndarray:
        pred = predicted_errors(p, _params(base, theta), {n: measured[n] for n in names})
        return np.concatenate([pred[n] for n in names]) - target

    best = None
    for x0 in STARTS:
        sol = least_squares(resid, x0[:n_fit], bounds=(LOWER[:n_fit], UPPER[:n_fit]), max_nfev=200)
        if best is None or sol.cost < best.cost - 1e-15:
            best = sol
    params = replace(_params(base, best.x), fit_rmse=float(np.sqrt(np.mean(resid(best.x) ** 2))))
    pred = predicted_errors(p, params, measured)
    r_n = len(next(iter(measured.values()))[1])
    flat = np.tile(np.mean([measured[n][1] for n in names], axis=0), len(names))
    return params, {
        "rmse": float(np.sqrt(np.mean(resid(best.x) ** 2))),
        "rmse_flat": float(np.sqrt(np.mean((flat - target) ** 2))),
        "rounds": r_n,
        "per_probe_rmse": {n: float(np.sqrt(np.mean((pred[n] - measured[n][1]) ** 2))) for n in names},
        "per_probe_final": {n: {"measured": float(measured[n][1][-1]), "predicted": float(pred[n][-1])} for n in names},
    }
