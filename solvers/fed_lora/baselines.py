"""Baselines for fed-lora (issue 10 and docs/fed-lora.md, "Baselines"), each a fixed policy returning a `FedLoraSolution`.

| name                   | depth per device                                              | quantised blocks |
|------------------------|---------------------------------------------------------------|------------------|
| uniform_depth          | the deepest d that the weakest device can hold, for everyone   | 0                |
| memory_fit             | each device's deepest d that fits (no time balancing)          | 0                |
| full_depth             | L where it fits; other devices sit out                         | 0                |
| random_feasible        | a uniformly random fitting (d, q) per device (seeded)          | random           |
| full_depth_quant       | L, quantising the fewest blocks that fit; others sit out       | q_min(L)         |
| memory_fit_quant       | each device's deepest (d, q_min(d))                            | q_min(d)         |
| depth_only_greedy      | FedQuad's peeling over unquantised entries                     | 0                |

A device the policy cannot place sits out (depth 0) and is reported; a policy that places nobody is
INFEASIBLE. "Weakest" is the device with the least memory for training among those that can hold
depth `d_min` unquantised (a device that cannot sits out under every unquantised policy).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from solvers.common import Baseline, InfeasibleError, Status, Stopwatch
from solvers.fed_lora import greedy
from solvers.fed_lora.cost import evaluate, grid
from solvers.fed_lora.problem import FedLoraProblem, FedLoraSolution


def _solution(problem: FedLoraProblem, depth: np.ndarray, quant: np.ndarray, name: str, params: dict,
              watch: Stopwatch) -> FedLoraSolution:
    m = evaluate(problem, depth, quant)
    status = Status.FEASIBLE if m.participants > 0 and bool(m.memory_ok.all()) else Status.INFEASIBLE
    return FedLoraSolution(status=status, objective=m.progress_rate, metrics=m, wall_time_s=watch.elapsed(),
                           depth=np.asarray(depth, dtype=int), quant_blocks=np.asarray(quant, dtype=int),
                           params={"baseline": name, **params})


def _deepest(fits: np.ndarray) -> np.ndarray:
    """Per device, the deepest d that fits unquantised (fits[i, d, 0]); 0 where none."""
    ok = fits[:, :, 0]
    L1 = ok.shape[1]
    return np.where(ok.any(axis=1), L1 - 1 - np.argmax(ok[:, ::-1], axis=1), 0).astype(int)


def uniform_depth(problem: FedLoraProblem) -> FedLoraSolution:
    """One depth for every device: the deepest the weakest (least memory) participating device can hold, q = 0."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    deepest = _deepest(fits)
    able = deepest >= problem.d_min
    if not able.any():
        n = problem.num_devices
        return _solution(problem, np.zeros(n, int), np.zeros(n, int), "uniform_depth",
                         {"depth": 0, "reason": "no device holds depth d_min unquantised"}, w)
    budgets = np.asarray(problem.memory_budget_bytes, dtype=float)
    weakest = int(np.flatnonzero(able)[np.argmin(budgets[able])])
    d_u = int(deepest[weakest])
    depth = np.where(able & (deepest >= d_u), d_u, 0)
    return _solution(problem, depth, np.zeros_like(depth), "uniform_depth",
                     {"depth": d_u, "weakest_device": problem.device_ids[weakest]}, w)


def memory_fit(problem: FedLoraProblem) -> FedLoraSolution:
    """Each device at its deepest unquantised depth that fits memory (no time balancing)."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    d = _deepest(fits)
    return _solution(problem, d, np.zeros_like(d), "memory_fit", {"policy": "deepest d with q = 0 per device"}, w)


def full_depth(problem: FedLoraProblem) -> FedLoraSolution:
    """Depth L, no quantisation, where it fits; every other device sits out."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    L = problem.num_blocks
    d = np.where(fits[:, L, 0], L, 0)
    return _solution(problem, d, np.zeros_like(d), "full_depth", {"depth": L}, w)


def full_depth_quant(problem: FedLoraProblem) -> FedLoraSolution:
    """Depth L with the fewest quantised blocks that fit; devices that do not fit even at q = L sit out."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    L = problem.num_blocks
    row = fits[:, L, :]
    ok = row.any(axis=1)
    q = np.where(ok, np.argmax(row, axis=1), 0)
    return _solution(problem, np.where(ok, L, 0), q, "full_depth_quant", {"depth": L, "quant": "q_min(L)"}, w)


def memory_fit_quant(problem: FedLoraProblem) -> FedLoraSolution:
    """Each device at its deepest depth that fits with the fewest quantised blocks (no time balancing)."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    any_fit = fits.any(axis=2)
    L1 = problem.num_blocks + 1
    d = np.where(any_fit.any(axis=1), L1 - 1 - np.argmax(any_fit[:, ::-1], axis=1), 0)
    q = np.where(d > 0, np.argmax(fits[np.arange(problem.num_devices), d, :], axis=1), 0)
    return _solution(problem, d, q, "memory_fit_quant", {"policy": "deepest (d, q_min(d)) per device"}, w)


def random_feasible(problem: FedLoraProblem, seed: int = 0) -> FedLoraSolution:
    """A uniformly random fitting (d, q) per device (seeded); devices with no fitting option sit out."""
    w = Stopwatch()
    fits, _, _, _ = grid(problem)
    rng = np.random.default_rng(seed)
    n = problem.num_devices
    d = np.zeros(n, dtype=int)
    q = np.zeros(n, dtype=int)
    L1 = problem.num_blocks + 1
    for i in range(n):
        opts = np.flatnonzero(fits[i].reshape(-1))
        if opts.size:
            k = int(opts[rng.integers(opts.size)])
            d[i], q[i] = divmod(k, L1)
    return _solution(problem, d, q, "random_feasible", {"seed": seed}, w)


def depth_only_greedy(problem: FedLoraProblem) -> FedLoraSolution:
    """FedQuad's frontier and peeling restricted to q = 0 (depth balancing without quantisation)."""
    w = Stopwatch()
    try:
        s = greedy.solve(problem, allow_quant=False)
    except InfeasibleError as exc:
        n = problem.num_devices
        return _solution(problem, np.zeros(n, int), np.zeros(n, int), "depth_only_greedy",
                         {"reason": exc.problem}, w)
    return _solution(problem, s.depth, s.quant_blocks, "depth_only_greedy", {"allow_quant": False}, w)


BASELINES: dict[str, tuple[str, Callable[[FedLoraProblem], FedLoraSolution]]] = {
    "uniform_depth": ("same depth for all: the deepest the weakest device holds, no quantisation", uniform_depth),
    "memory_fit": ("each device's deepest depth without quantisation", memory_fit),
    "full_depth": ("full depth where it fits, others sit out", full_depth),
    "random_feasible": ("a random fitting (depth, quantised blocks) per device, seed 0", random_feasible),
    "full_depth_quant": ("full depth, quantising the fewest blocks that fit", full_depth_quant),
    "memory_fit_quant": ("each device's deepest depth, quantising the fewest blocks that fit", memory_fit_quant),
    "depth_only_greedy": ("FedQuad's peeling without quantisation", depth_only_greedy),
}


def baselines() -> list[Baseline]:
    """Every baseline as a `solvers.common.Baseline`, in table order."""
    return [Baseline(name=k, description=v[0], solve=v[1], params={"seed": 0} if k == "random_feasible" else {})
            for k, v in BASELINES.items()]
