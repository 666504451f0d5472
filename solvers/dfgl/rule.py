"""Duplex's rule-based fallback controller in the planner's simulator (core.dfgl_policy.RuleController)."""
from __future__ import annotations

import numpy as np

from core.dfgl_policy import RuleController
from solvers.dfgl.problem import DfglProblem
from solvers.dfgl.rollout import Controller, Observation


def rule_controller(p: DfglProblem, base_ratio: float) -> Controller:
    """A fresh rule controller for problem `p` (it keeps a small state: its extra degree)."""
    rc = RuleController(degree=p.degree, base_ratio=base_ratio, r_min=p.r_min, c_max=p.c_max,
                        cross_edges=p.cross_edges, local_edges=p.local_edges)

    def act(k: int, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        return rc.act(obs.consensus, obs.bandwidth_Bps, obs.allowed)

    return act
