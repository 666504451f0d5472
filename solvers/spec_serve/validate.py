"""Checks a spec-serve configuration against the problem without calling a solver."""
from __future__ import annotations

from solvers.spec_serve.cost import Config, set_placed
from solvers.spec_serve.problem import SpecServeProblem


def validate(p: SpecServeProblem, cfg: Config) -> list[str]:
    """Every violated constraint, in words (empty when valid)."""
    bad = []
    if len(cfg.placement) != len(p.nodes):
        bad.append("placement does not cover every drafter node")
    for n, d in enumerate(cfg.placement):
        if d >= 0 and p.node_ok.size and not p.node_ok[n, d]:
            bad.append(f"drafter {p.drafters[d]} does not fit node {p.nodes[n]}")
    for c, (s, g) in enumerate(zip(cfg.routing, cfg.gamma)):
        if s < 0:
            continue
        if not set_placed(p, cfg, s):
            bad.append(f"domain {p.domains[c]} is routed to an unplaced drafter")
        if len(p.sets[s]) > p.max_fanout:
            bad.append(f"domain {p.domains[c]} uses more than {p.max_fanout} drafters")
        if not 1 <= g <= p.gamma_max:
            bad.append(f"γ {g} for {p.domains[c]} outside [1, {p.gamma_max}]")
    if cfg.group < 1:
        bad.append("batch cap below 1")
    return bad
