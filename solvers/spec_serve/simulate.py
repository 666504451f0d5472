"""A replay of the serving engine's cycle loop on calibrated expected times (the plan's predictor).

The steady-state formula of cost.py (`max(E[T_verify], E[T_draft])` over a domain-averaged group) is what the
search optimises; it misses what the measured runs showed: the two alternating groups hold different domain
mixes, so per cycle one phase or the other dominates (E[max] > max E), the last requests drain without a partner
group, prompts are prefilled on the first draft and verification, and the verifier runs one batched forward per
cycle. This module lays the engine's loop (runtime/spec_serve/engine.py) out with each request's expected
figures instead of real forwards:

  requests in the workload's round-robin domain order, each needing the calibration's mean tokens of its domain;
  admission into the smaller group up to the cap; pipelined: the drafters draft group B while the verifier
  checks group A (cycle = max(T_verify + hub drafting, T_draft + link)); not pipelined: draft then verify;
  per verification a request gains E[n(γ)] tokens (fluid); per-node draft seconds add up (several requests on one
  node run one after another); every ready request is verified in ONE batched forward (padded to the longest
  draft; cost.verify_batch_s from the calibration's (B, T) grid) plus a prefill forward for each new request (the
  engine's LP budget is the token cap only; an earlier engine deferred by the drafters' cycle and this replay
  showed it halving goodput at cap 2).

Every configuration (CoSine's, its ablations, target-only, co-located single-drafter speculation) is scored by
the same replay, so the plan's recommendation compares like with like. Deterministic; no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from core.request_router import assign
from solvers.spec_serve.cost import NGRAM, Config, Metrics, draft_token_s, expected_tokens, link_s, verify_batch_s
from solvers.spec_serve.problem import SpecServeProblem


@dataclass
class _Req:
    c: int
    arrival: float
    left: float
    drafted: bool = False
    started_v: bool = False
    started_d: bool = False
    finish: float = 0.0
    done: bool = False


def _tokens(p: SpecServeProblem, c: int) -> float:
    t = p.meta.get("tokens_by_domain")
    return float(t[c]) if t else float(p.new_tokens)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]) if s else 0.0


def _workload(p: SpecServeProblem, n: int) -> list[_Req]:
    """The replay's requests: the workload's round-robin domain order, arrivals evenly spaced at the rate."""
    k = len(p.domains)
    order = np.argsort(-p.domain_share, kind="stable")
    rate = p.arrival_rps
    return [_Req(int(order[j % k]), (j / rate) if rate > 0 else 0.0, _tokens(p, int(order[j % k])))
            for j in range(n)]


@dataclass
class _Trace:
    """What one replay of the loop measured (emulated seconds)."""

    end: float
    cycles: int
    verify_s: float
    verifications: int
    tokens_verified: float
    node_busy_s: dict[int, float]


def _replay(p: SpecServeProblem, cfg: Config, reqs: list[_Req]) -> _Trace:
    """Lay the engine's cycle loop out over `reqs` (mutated: finish times); see the module docstring."""
    k, n = len(p.domains), len(reqs)
    # per-domain constants of this configuration
    e, tok, nodes_per, link, hub_draft, pre_d, pre_v = [], [], [], [], [], [], []
    for c in range(k):
        s, g = cfg.routing[c], cfg.gamma[c]
        pre_v.append(float(p.prompt_tokens[c]) * p.prefill_verify_cpu_s * p.verifier_scale
                     if len(p.prompt_tokens) else 0.0)
        if s < 0 or g <= 0:
            e.append(1.0)
            tok.append(0.0)
            nodes_per.append({})
            link.append(0.0)
            hub_draft.append(False)
            pre_d.append({})
            continue
        e.append(expected_tokens(p, s, c, g))
        t, per = draft_token_s(p, cfg, s)
        tok.append(g * t)
        nodes_per.append({m: g * v for m, v in per.items()})
        link.append(link_s(p, cfg, s, g))
        hub_draft.append(not per)
        pd: dict[int, float] = {}
        if len(p.prefill_draft_cpu_s) and len(p.prompt_tokens):
            for d in p.sets[s]:
                if p.drafters[d] == NGRAM:
                    continue
                cost = float(p.prompt_tokens[c]) * float(p.prefill_draft_cpu_s[d])
                if d == cfg.colocated:
                    pd[-1] = pd.get(-1, 0.0) + cost * p.verifier_scale
                else:
                    hosts = [m for m, x in enumerate(cfg.placement) if x == d]
                    for m in hosts[:1]:
                        pd[m] = pd.get(m, 0.0) + cost * float(p.node_scale[m])
        pre_d.append(pd)
    t_need = [(cfg.gamma[c] if cfg.routing[c] >= 0 else 0) + 1 for c in range(k)]
    groups: list[list[_Req]] = [[], []] if cfg.pipelined else [[]]
    cap = max(1, cfg.group)
    waiting = list(reqs)
    t = 0.0
    finished = cyc = 0
    busy_total: dict[int, float] = {}
    tv_total = 0.0
    verifs = 0
    tokens_verified = 0.0
    while finished < n:
        while waiting and waiting[0].arrival <= t + 1e-12 and sum(len(g) for g in groups) < cap * len(groups):
            min(groups, key=len).append(waiting.pop(0))
        if not any(groups):
            t = waiting[0].arrival
            continue
        ver_g, dr_g = (groups[cyc % 2], groups[(cyc + 1) % 2]) if cfg.pipelined else (groups[0], groups[0])
        busy: dict[int, float] = {}
        chains, links, hub = [0.0], [0.0], 0.0
        for r in dr_g:
            if r.drafted or cfg.routing[r.c] < 0 or cfg.gamma[r.c] <= 0:
                continue
            first = not r.started_d
            r.started_d = r.drafted = True
            pre = pre_d[r.c] if first else {}
            if hub_draft[r.c]:
                hub += tok[r.c] + pre.get(-1, 0.0)
                continue
            chain = tok[r.c]
            for m, v in nodes_per[r.c].items():
                busy[m] = busy.get(m, 0.0) + v + pre.get(m, 0.0)
            chain += max((x for m, x in pre.items() if m >= 0), default=0.0)
            chains.append(chain)
            links.append(link[r.c])
        t_draft = max(max(busy.values(), default=0.0), max(chains)) + max(links)
        for m, v in busy.items():
            busy_total[m] = busy_total.get(m, 0.0) + v
        ready = [r for r in ver_g if r.drafted or cfg.routing[r.c] < 0 or cfg.gamma[r.c] <= 0]
        chosen = list(range(len(ready)))      # the engine verifies every ready request (see its budget note)
        # one batched forward over the chosen drafts (padded to the longest), plus each new request's prefill
        t_verify = (verify_batch_s(p, len(chosen), max((t_need[ready[i].c] for i in chosen), default=1))
                    + sum(pre_v[ready[i].c] for i in chosen if not ready[i].started_v) + hub)
        dur = max(t_verify, t_draft) if cfg.pipelined else t_draft + t_verify
        t += max(dur, 1e-12)
        tv_total += t_verify
        for i in chosen:
            r = ready[i]
            r.started_v = True
            r.drafted = False
            r.left -= e[r.c]
            verifs += 1
            tokens_verified += e[r.c]
            if r.left <= 1e-9:
                r.done, r.finish = True, t
        for g in groups:
            for r in [x for x in g if x.done]:
                g.remove(r)
                finished += 1
        cyc += 1
    return _Trace(t, cyc, tv_total, verifs, tokens_verified, busy_total)


def simulate(p: SpecServeProblem, cfg: Config, requests: int | None = None) -> Metrics:
    """Predicted metrics of `cfg` by replaying the engine's loop (see the module docstring)."""
    n = int(requests or p.requests)
    reqs = _workload(p, n)
    tr = _replay(p, cfg, reqs)
    start = min(r.arrival for r in reqs)
    span = max(tr.end - start, 1e-12)
    total = sum(_tokens(p, r.c) for r in reqs)
    lat = [r.finish - r.arrival for r in reqs]
    busy_total = tr.node_busy_s
    used = [m for m, v in busy_total.items() if v > 0]
    d_idle = 1.0 - sum(busy_total[m] for m in used) / (len(used) * span) if used else 1.0
    goodput = total / span
    util = _utilisation(p, goodput if p.arrival_rps <= 0 else simulate(replace(p, arrival_rps=0.0), cfg, n).goodput_tps)
    return Metrics(goodput, tr.tokens_verified / max(tr.verifications, 1), _pct(lat, 50), _pct(lat, 95),
                   1.0 - tr.verify_s / span, d_idle, span / max(tr.cycles, 1), 0.0, tr.verify_s / max(tr.cycles, 1),
                   util, bool(p.arrival_rps <= 0 or util < 1.0))


def _utilisation(p: SpecServeProblem, capacity_tps: float) -> float:
    """Offered tokens/s over the configuration's capacity (its offline replay's goodput): online, the replayed
    goodput is capped by the arrivals, so the ratio to it would be ~1 whether or not the configuration keeps up."""
    if p.arrival_rps <= 0:
        return 1.0
    offered = p.arrival_rps * float(np.mean([_tokens(p, c) for c in range(len(p.domains))]))
    return offered / capacity_tps if capacity_tps > 0 else math.inf


def simulate_replicas(p: SpecServeProblem, cfg: Config, scales: Sequence[float], router: str,
                      requests: int | None = None) -> Metrics:
    """Predicted metrics of `cfg` (a one-node configuration: target-only or a co-located drafter) replicated on
    several nodes: replica i serves the requests that `router` (core/request_router.py) sends it, on its own
    node (`scales[i]` emulated seconds per CPU second; verification and co-located drafting both run there), with
    no interaction between replicas. Goodput = all tokens / the last replica's finish; latencies pooled;
    verifier idle = the replicas' mean."""
    n = int(requests or p.requests)
    reqs = _workload(p, n)
    where = assign(n, [1.0 / float(s) for s in scales], router)
    ends, verify, cycles, verifs, tv = [], 0.0, 0, 0, 0.0
    for i, s in enumerate(scales):
        sub = [r for j, r in enumerate(reqs) if where[j] == i]
        if not sub:
            continue
        tr = _replay(replace(p, verifier_scale=float(s)), cfg, sub)
        ends.append(tr.end)
        verify += tr.verify_s
        cycles += tr.cycles
        verifs += tr.verifications
        tv += tr.tokens_verified
    start = min(r.arrival for r in reqs)
    span = max(max(ends) - start, 1e-12)
    goodput = sum(_tokens(p, r.c) for r in reqs) / span
    lat = [r.finish - r.arrival for r in reqs]
    cap = goodput if p.arrival_rps <= 0 else simulate_replicas(replace(p, arrival_rps=0.0), cfg, scales, router,
                                                               n).goodput_tps
    util = _utilisation(p, cap)
    return Metrics(goodput, tv / max(verifs, 1), _pct(lat, 50), _pct(lat, 95), 1.0 - verify / (len(ends) * span),
                   1.0, span * len(ends) / max(cycles, 1), 0.0, verify / max(cycles, 1), util,
                   bool(p.arrival_rps <= 0 or util < 1.0))
