"""CoSine's plan: drafter placement, routing table, draft length per domain, batch cap (cost-model search).

Enumerates every placement of the neural drafters on the drafter nodes (small: nodes^drafters), and per
placement runs coordinate ascent over (routing set, γ) per domain, then picks the batch cap; the objective is
predicted goodput (accepted tokens per emulated second). The switches give the ablations: `routing=False` one
set for every domain, `fusion=False` singleton sets only, `pipelined=False` the draft-then-verify barrier,
`one_gamma=True` one γ for every domain (the fixed-γ ablation; the runtime also stops adapting it).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from core.errors import InfeasibleError
from solvers.common import Solution, Status, Stopwatch, TraceEvent
from solvers.spec_serve.cost import NGRAM, Config, Metrics, metrics, set_placed
from solvers.spec_serve.problem import SpecServeProblem

GROUPS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True, kw_only=True)
class SpecServeSolution(Solution):
    """A configuration and its predicted metrics."""

    config: Config
    metrics: Metrics


def _score(p: SpecServeProblem, cfg: Config) -> float:
    return metrics(p, cfg).goodput_tps


def _placements(p: SpecServeProblem) -> list[tuple[int, ...]]:
    neural = [d for d, name in enumerate(p.drafters) if name != NGRAM]
    out = []
    for combo in itertools.product([-1] + neural, repeat=len(p.nodes)):
        if p.node_ok.size and any(d >= 0 and not p.node_ok[n, d] for n, d in enumerate(combo)):
            continue
        out.append(tuple(combo))
    return out


def _candidate_sets(p: SpecServeProblem, fusion: bool) -> list[int]:
    return [s for s, members in enumerate(p.sets) if len(members) <= (p.max_fanout if fusion else 1)]


def _groups(p: SpecServeProblem, pipelined: bool) -> list[int]:
    per = max(1, p.requests // 2 if pipelined else p.requests)
    return sorted({min(g, per) for g in GROUPS})


def solve(p: SpecServeProblem, *, routing: bool = True, fusion: bool = True, pipelined: bool = True,
          one_gamma: bool = False, sweeps: int = 3) -> SpecServeSolution:
    """The best configuration found under the switches (see the module docstring)."""
    sw = Stopwatch()
    sets = _candidate_sets(p, fusion)
    gammas = range(1, p.gamma_max + 1)
    k = len(p.domains)
    best: tuple[float, Config] | None = None
    trace = []
    for it, place in enumerate(_placements(p)):
        placed = [s for s in sets if set_placed(p, Config(place, (0,) * k, (1,) * k, 1), s)]
        if not placed:
            continue
        group = _groups(p, pipelined)[len(_groups(p, pipelined)) // 2]
        cfg = Config(place, (placed[0],) * k, (4,) * k, group, pipelined)
        cur = _score(p, cfg)
        for _ in range(sweeps):
            improved = False
            domains = [None] if (not routing or one_gamma) else list(range(k))
            for c in domains:
                for s in placed:
                    for g in gammas:
                        if c is None:
                            routing_ = (s,) * k if not routing else cfg.routing
                            gamma_ = (g,) * k
                            if routing and one_gamma:        # routing per domain kept; γ shared
                                routing_ = cfg.routing
                        else:
                            routing_ = tuple(s if j == c else cfg.routing[j] for j in range(k))
                            gamma_ = tuple(g if j == c else cfg.gamma[j] for j in range(k))
                        cand = Config(place, routing_, gamma_, cfg.group, pipelined)
                        v = _score(p, cand)
                        if v > cur + 1e-12:
                            cfg, cur, improved = cand, v, True
            if routing and one_gamma:                     # routing per domain at the shared γ
                for c in range(k):
                    for s in placed:
                        cand = Config(place, tuple(s if j == c else cfg.routing[j] for j in range(k)), cfg.gamma,
                                      cfg.group, pipelined)
                        v = _score(p, cand)
                        if v > cur + 1e-12:
                            cfg, cur, improved = cand, v, True
            for g in _groups(p, pipelined):
                cand = Config(place, cfg.routing, cfg.gamma, g, pipelined)
                v = _score(p, cand)
                if v > cur + 1e-12 or (abs(v - cur) <= 1e-12 * max(1.0, abs(cur)) and g < cfg.group):
                    cfg, cur, improved = cand, v, True
            if not improved:
                break
        trace.append(TraceEvent("placement", it, {"placement": list(place), "goodput_tps": round(cur, 6)}))
        if best is None or cur > best[0] + 1e-12:
            best = (cur, cfg)
    if best is None:
        raise InfeasibleError("no drafter fits any drafter node", "give a node with `drafter: true` and memory for a "
                                                                  "drafter, or list the n-gram drafter")
    cfg = best[1]
    m = metrics(p, cfg)
    return SpecServeSolution(status=Status.FEASIBLE, objective=m.goodput_tps, config=cfg, metrics=m,
                             wall_time_s=sw.elapsed(), trace=tuple(trace),
                             params={"routing": routing, "fusion": fusion, "pipelined": pipelined,
                                     "one_gamma": one_gamma})


def target_only(p: SpecServeProblem) -> SpecServeSolution:
    """Target-only serving on the verifier: every domain decoded one token per forward."""
    k = len(p.domains)
    best = None
    for g in _groups(p, True):
        cfg = Config(tuple(-1 for _ in p.nodes), (-1,) * k, (0,) * k, g, True)
        m = metrics(p, cfg)
        if best is None or m.latency_p50_s < best[1].latency_p50_s - 1e-12:
            best = (cfg, m)
    cfg, m = best
    return SpecServeSolution(status=Status.FEASIBLE, objective=m.goodput_tps, config=cfg, metrics=m)


def colocated(p: SpecServeProblem, d: int) -> SpecServeSolution:
    """Single-drafter speculative decoding co-located on the verifier (transformers' assisted generation): one
    request at a time, draft γ tokens on the verifier then verify; the best single γ for the whole mix."""
    s = p.set_index((d,))
    best = None
    from solvers.spec_serve.cost import expected_tokens, prefill_share, verify_s

    for g in range(1, p.gamma_max + 1):
        pre = [prefill_share(p, c, 1.0) * (p.prefill_verify_cpu_s + (float(p.prefill_draft_cpu_s[d])
                                                                       if len(p.prefill_draft_cpu_s) else 0.0))
               * p.verifier_scale for c in range(len(p.domains))]
        per = [(expected_tokens(p, s, c, g),
                g * p.draft_cpu_s[d] * p.verifier_scale + verify_s(p, g)
                + pre[c] * expected_tokens(p, s, c, g)) for c in range(len(p.domains))]
        e = float(np.dot(p.domain_share, [x[0] for x in per]))
        t = float(np.dot(p.domain_share, [x[1] for x in per]))
        good = e / t
        if best is None or good > best[0]:
            best = (good, g, per, e)
    good, g, per, e = best
    serve = [np.ceil(p.new_tokens / x[0]) * x[1] for x in per]
    mean_serve = float(np.dot(p.domain_share, serve))
    if p.arrival_rps > 0:
        util = p.arrival_rps * mean_serve
        stable = util < 1.0
        wait = util / (1 - util) * mean_serve if stable else float("inf")
        lat = sorted(x + wait for x in serve)
    else:
        util, stable = 1.0, True
        lat = sorted((k + 1) * mean_serve for k in range(p.requests))
    p50 = float(np.percentile(lat, 50))
    p95 = float(np.percentile(lat, 95))
    m = Metrics(good, e, p50, p95, float(np.dot(p.domain_share, [g * p.draft_cpu_s[d] * p.verifier_scale / x[1]
                                                                   for x in per])),
                1.0, mean_serve, 0.0, 0.0, util, stable)
    k = len(p.domains)
    cfg = Config(tuple(-1 for _ in p.nodes), (s,) * k, (g,) * k, 1, False)
    return SpecServeSolution(status=Status.FEASIBLE, objective=good, config=cfg, metrics=m,
                             params={"drafter": p.drafters[d], "gamma": g, "colocated": True})
