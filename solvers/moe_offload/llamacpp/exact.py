"""Exact references for llama.cpp placements on small instances (test oracles for the Pareto DP).

`Enumerate`: every (host-block count, output side, per-block group subset) tuple; tiny instances only.
`CpSat`: OR-tools CP-SAT with one Boolean per (block, option) including the host option, a prefix rule
on the host options, the VRAM budget in bytes, and times scaled to integer nanoseconds.
"""
from __future__ import annotations

import itertools

import numpy as np

from solvers.common import Status, Stopwatch
from solvers.cpsat_params import make_deterministic
from solvers.moe_offload.llamacpp.cost import evaluate, host_layer_time_s, layer_options
from solvers.moe_offload.llamacpp.problem import LlamaCppProblem, LlamaCppSolution


class Enumerate:
    """Brute force over every placement."""

    name = "enumerate"
    max_combinations = 200_000

    def unsupported(self, problem: LlamaCppProblem) -> str | None:
        n = 1
        for l in range(problem.num_layers):
            n *= 1 << int(problem.group_present[l].sum())
        n *= problem.num_layers + 2
        return f"{n} placements exceed {self.max_combinations}" if n > self.max_combinations else None

    def solve(self, problem: LlamaCppProblem, time_limit_s: float = 60.0) -> LlamaCppSolution:
        watch = Stopwatch()
        L = problem.num_layers
        opts = [layer_options(problem, l)[0] for l in range(L)]
        best = None
        for c in (range(L + 1) if problem.allow_host_layers else range(1)):
            for out_gpu in ((True, False) if c == 0 else (False,)):
                for combo in itertools.product(*[range(len(opts[l])) for l in range(c, L)]):
                    gpu = np.zeros((L, problem.num_groups), dtype=bool)
                    for l, k in zip(range(c, L), combo):
                        gpu[l] = opts[l][k]
                    m = evaluate(problem, c, gpu, out_gpu)
                    if m.vram_bytes <= problem.budget_bytes and (best is None or m.tpot_s < best[0].tpot_s - 1e-15):
                        best = (m, c, gpu, out_gpu)
        if best is None:
            raise ValueError("no placement fits")
        m, c, gpu, out_gpu = best
        return LlamaCppSolution(status=Status.OPTIMAL, objective=m.tpot_s, metrics=m, wall_time_s=watch.elapsed(),
                                host_layers=c, gpu_groups=gpu, output_on_gpu=out_gpu, params={"method": self.name})


class CpSat:
    """CP-SAT over one-hot block options (exact up to the nanosecond rounding of times)."""

    name = "cp-sat"
    max_options = 20_000

    def unsupported(self, problem: LlamaCppProblem) -> str | None:
        n = sum(1 << int(problem.group_present[l].sum()) for l in range(problem.num_layers))
        return f"{n} block options exceed {self.max_options}" if n > self.max_options else None

    def solve(self, problem: LlamaCppProblem, time_limit_s: float = 60.0) -> LlamaCppSolution:
        from ortools.sat.python import cp_model

        watch = Stopwatch()
        L = problem.num_layers
        ns = 1e9
        model = cp_model.CpModel()
        opts = [layer_options(problem, l) for l in range(L)]
        y = [[model.new_bool_var(f"y{l}_{k}") for k in range(len(opts[l][0]))] for l in range(L)]
        host = [model.new_bool_var(f"host{l}") for l in range(L)]
        out_gpu = model.new_bool_var("out_gpu")
        # [Constraint] one option per block: a GPU subset or the whole block in host memory
        for l in range(L):
            model.add(sum(y[l]) + host[l] == 1)
        # [Constraint] host blocks form a prefix (-ngl offloads the last blocks)
        for l in range(L - 1):
            model.add(host[l] >= host[l + 1])
        if not problem.allow_host_layers:
            for l in range(L):
                model.add(host[l] == 0)
        # [Constraint] the output head is on the GPU only when every block is
        model.add(out_gpu + host[0] <= 1)
        # [Constraint] VRAM
        model.add(sum(int(opts[l][1][k]) * y[l][k] for l in range(L) for k in range(len(y[l])))
                  + int(problem.output_bytes) * out_gpu <= int(problem.budget_bytes))
        # boundary hand-over between the host blocks and the GPU blocks: host[l-1] and not host[l]
        boundary = []
        for l in range(1, L):
            b = model.new_bool_var(f"boundary{l}")
            model.add(b >= host[l - 1] - host[l])
            boundary.append(b)
        cost = (sum(int(round(opts[l][2][k] * ns)) * y[l][k] for l in range(L) for k in range(len(y[l])))
                + sum(int(round(host_layer_time_s(problem, l) * ns)) * host[l] for l in range(L))
                + int(round(problem.switch_s * ns)) * sum(boundary)
                + int(round(problem.output_gpu_s * ns)) * out_gpu + int(round(problem.output_host_s * ns)) * (1 - out_gpu))
        model.minimize(cost)
        solver = cp_model.CpSolver()
        make_deterministic(solver, time_limit_s)
        st = solver.solve(model)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise ValueError("CP-SAT found no placement")
        c = sum(int(solver.value(h)) for h in host)
        gpu = np.zeros((L, problem.num_groups), dtype=bool)
        for l in range(c, L):
            k = next(k for k in range(len(y[l])) if solver.value(y[l][k]))
            gpu[l] = opts[l][0][k]
        m = evaluate(problem, c, gpu, bool(solver.value(out_gpu)))
        status = Status.OPTIMAL if st == cp_model.OPTIMAL else Status.TIME_LIMIT
        return LlamaCppSolution(status=status, objective=m.tpot_s, metrics=m, wall_time_s=watch.elapsed(),
                                bound=solver.best_objective_bound / ns, host_layers=c, gpu_groups=gpu,
                                output_on_gpu=bool(solver.value(out_gpu)), params={"method": self.name})
