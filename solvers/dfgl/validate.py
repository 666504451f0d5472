"""Every constraint of a dfgl schedule, checked without a solver."""
from __future__ import annotations

import numpy as np

from core.p2p_topology import is_connected
from solvers.dfgl.problem import DfglProblem, Schedule


def validate(p: DfglProblem, sched: Schedule) -> list[str]:
    """Violations: a topology that is not symmetric, has self links, uses a link that is down, or is not
    connected; a ratio outside [r_min, 1]."""
    bad = []
    for k in range(p.rounds):
        a = sched.adjacency[k]
        if not np.array_equal(a, a.T):
            bad.append(f"round {k}: topology is not symmetric")
        if np.any(np.diag(a)):
            bad.append(f"round {k}: a worker links to itself")
        if np.any((a > 0) & ~p.allowed(k)):
            bad.append(f"round {k}: uses a link that is down")
        if not is_connected(a):
            bad.append(f"round {k}: topology is not connected")
        r = sched.ratios[k]
        if np.any(r < p.r_min - 1e-9) or np.any(r > 1 + 1e-9):
            bad.append(f"round {k}: a sampling ratio is outside [{p.r_min}, 1]")
    return bad
