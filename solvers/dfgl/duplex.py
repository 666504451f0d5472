"""Duplex: train the DDPG controller in the simulator, then roll it (and any other controller) into a schedule.

    sol = solve(problem, DdpgConfig(episodes=40, seed=0))
    sol.schedule.adjacency[k], sol.schedule.ratios[k]      # the plan of round k
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import Solution, Status, Stopwatch, TraceEvent
from solvers.dfgl.cost import evaluate
from solvers.dfgl.ddpg import DdpgConfig, TrainedAgent, ddpg_controller, train
from solvers.dfgl.problem import DfglProblem, Schedule
from solvers.dfgl.rollout import Controller, rollout


@dataclass(frozen=True, kw_only=True)
class DfglSolution(Solution):
    """A schedule with its predicted per-round metrics (`metrics`: RoundMetrics); objective = sum of round
    times (s); `agent` for the DDPG controller."""

    schedule: Schedule
    agent: TrainedAgent | None = None


def solution_of(p: DfglProblem, controller: Controller, params: dict, status: Status = Status.FEASIBLE,
                trace: tuple[TraceEvent, ...] = (), agent: TrainedAgent | None = None,
                wall_time_s: float = 0.0) -> DfglSolution:
    """Roll `controller` and score its schedule with the cost model."""
    sched, _ = rollout(p, controller)
    return schedule_solution(p, sched, params, status, trace, agent, wall_time_s)


def schedule_solution(p: DfglProblem, sched: Schedule, params: dict, status: Status = Status.FEASIBLE,
                      trace: tuple[TraceEvent, ...] = (), agent: TrainedAgent | None = None,
                      wall_time_s: float = 0.0) -> DfglSolution:
    """A fixed schedule scored with the cost model and surrogate."""
    met = evaluate(p, sched)
    return DfglSolution(status=status, objective=float(met.round_time_s.sum()), metrics=met,
                        wall_time_s=wall_time_s, trace=trace, params=params, schedule=sched, agent=agent)


def solve(p: DfglProblem, cfg: DdpgConfig = DdpgConfig()) -> DfglSolution:
    """Train the agent and roll its plan-time controller (actor + surrogate-scored proposals)."""
    p.check()
    watch = Stopwatch()
    agent = train(p, cfg)
    sol = solution_of(p, ddpg_controller(p, agent, cfg), {"controller": "ddpg", "episodes": cfg.episodes,
                                                            "grid_points": cfg.grid_points, "max_moves": cfg.max_moves, "seed": cfg.seed},
                      trace=agent.record, agent=agent)
    return DfglSolution(status=sol.status, objective=sol.objective, metrics=sol.metrics,
                        wall_time_s=watch.elapsed(), trace=sol.trace, params=sol.params,
                        schedule=sol.schedule, agent=agent)


def ring_adjacency(m: int) -> np.ndarray:
    """The ring 0-1-...-(m-1)-0 (a line for m = 2)."""
    adj = np.zeros((m, m), dtype=np.int8)
    for i in range(m):
        j = (i + 1) % m
        if i != j:
            adj[i, j] = adj[j, i] = 1
    return adj
