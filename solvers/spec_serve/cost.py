"""spec-serve cost model: expected tokens per verification, cycle times, goodput, latency, idle shares.

E[n] per verification comes from the calibration's measured run lengths (greedy: the drafter conditions on the
target's own text, so the run of consecutive matches from a position is what verification accepts); the spec's
closed form `(1 − α^{γ+1})/(1 − α)` is kept beside it (`expected_tokens_iid`) for the report.

Cycle (pipelined, two groups of G requests alternate): the verifier checks group A while the drafters draft B,
    T_cycle = max(T_verify(G), T_draft(G) + 2·delay),   goodput = G·Ē / T_cycle,
where T_verify(G) is ONE batched forward over the group's drafts (padded to the longest; `verify_batch_s`).
non-pipelined: T_cycle = T_draft(R) + 2·delay + T_verify(R) with all R active requests in one group.
Times are emulated seconds: CPU seconds measured on this machine × the node's scale.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from solvers.spec_serve.problem import SpecServeProblem

NGRAM = "ngram"


@dataclass(frozen=True)
class Config:
    """One serving configuration.

    placement[n]  drafter index hosted by drafter node n (-1: idle); the n-gram drafter needs no node
    routing[c]    routing-set index per domain (-1: the domain is served target-only)
    gamma[c]      draft length per domain (0 for target-only domains)
    group         requests per verification batch (the batch cap)
    pipelined     two groups alternate (True) or draft-then-verify barrier (False)
    """

    placement: tuple[int, ...]
    routing: tuple[int, ...]
    gamma: tuple[int, ...]
    group: int
    pipelined: bool = True
    colocated: int = -1          # drafter index that drafts on the verifier itself (transformers' assisted
                                 # generation); -1: none. Its draft time is verifier time (serial).


@dataclass(frozen=True)
class Metrics:
    """Predicted figures of a configuration (emulated seconds)."""

    goodput_tps: float
    tokens_per_verify: float
    latency_p50_s: float
    latency_p95_s: float
    verifier_idle: float
    drafter_idle: float
    cycle_s: float
    t_draft_s: float
    t_verify_s: float
    utilisation: float
    stable: bool


def expected_tokens_iid(alpha: float, gamma: int) -> float:
    """The standard result E[n] = (1 − α^{γ+1}) / (1 − α) (tokens per verification, bonus included)."""
    if gamma <= 0:
        return 1.0
    a = min(max(alpha, 0.0), 0.999999)
    return (1.0 - a ** (gamma + 1)) / (1.0 - a)


def expected_tokens(p: SpecServeProblem, s: int, c: int, gamma: int) -> float:
    """Measured E[n(γ)] for set s on domain c when the calibration recorded run lengths, else the closed form."""
    if gamma <= 0 or s < 0:
        return 1.0
    t = p.tokens_per_verify_table
    if t is not None:
        g = min(gamma, t.shape[2])
        return float(t[s, c, g - 1])
    return expected_tokens_iid(float(p.alpha[s, c]), gamma)


def _node_of(p: SpecServeProblem, cfg: Config) -> dict[int, list[int]]:
    """Drafter index -> nodes hosting it."""
    out: dict[int, list[int]] = {}
    for n, d in enumerate(cfg.placement):
        if d >= 0:
            out.setdefault(d, []).append(n)
    return out


def set_placed(p: SpecServeProblem, cfg: Config, s: int) -> bool:
    """Whether every neural drafter of set s has a node."""
    hosts = _node_of(p, cfg)
    return all(p.drafters[d] == NGRAM or d in hosts or d == cfg.colocated for d in p.sets[s])


def draft_token_s(p: SpecServeProblem, cfg: Config, s: int) -> tuple[float, dict[int, float]]:
    """Emulated seconds per fused draft token of set s, and each hosting node's busy seconds per token.
    Neural drafters of a set run on their nodes in parallel; more than one node means a fusion hop through the
    hub per token (2 × delay); the n-gram lookup runs beside a neural drafter (or on the hub when alone)."""
    hosts = _node_of(p, cfg)
    per_node: dict[int, float] = {}
    neural = [d for d in p.sets[s] if p.drafters[d] != NGRAM and d != cfg.colocated]
    ngram = [d for d in p.sets[s] if p.drafters[d] == NGRAM]
    if not neural:       # n-gram and/or the co-located drafter: on the verifier node (hub)
        return float(sum(p.draft_cpu_s[d] for d in p.sets[s]) * p.verifier_scale), per_node
    times = []
    for d in neural:
        ns = hosts[d]
        # replicas share the load: the per-node busy time is divided among them
        n_fast = min(ns, key=lambda n: p.node_scale[n])
        t = float(p.draft_cpu_s[d] * p.node_scale[n_fast])
        if ngram and d == neural[0]:
            t += float(sum(p.draft_cpu_s[g] for g in ngram) * p.node_scale[n_fast])
        for n in ns:
            per_node[n] = per_node.get(n, 0.0) + t / len(ns)
        times.append(t)
    hop = 0.0
    if len(neural) > 1:
        hop = 2.0 * max(float(p.link_delay_s[hosts[d][0]]) for d in neural)
    return max(times) + hop, per_node


def verify_s(p: SpecServeProblem, gamma: int) -> float:
    """Emulated verifier seconds for one request's draft of `gamma` tokens (γ+1 positions): the calibration's
    median measured time at each probed T, interpolated (the straight-line fit a + b·T misses the single-token
    forward, which target-only serving runs every time); the fit beyond the probed range."""
    a, b = p.verify_cpu_s
    t = gamma + 1
    curve = p.meta.get("verify_curve")
    if curve:
        xs = [float(x) for x, _ in curve]
        ys = [float(y) for _, y in curve]
        if xs[0] <= t <= xs[-1]:
            return _interp(t, xs, ys) * p.verifier_scale
        if t > xs[-1]:
            return (ys[-1] + b * (t - xs[-1])) * p.verifier_scale
    return (a + b * t) * p.verifier_scale


def verify_batch_s(p: SpecServeProblem, batch: int, tokens: int) -> float:
    """Emulated verifier seconds of ONE batched verification forward over `batch` requests whose drafts are padded
    to `tokens` positions each (γ_max + 1 of the batch): the calibration's median CPU seconds per probed
    (B, T), interpolated in T within each probed B and then in B, extrapolated linearly beyond the largest B
    (the slope of the last two); without a probed grid, one forward of a + b·B·T."""
    if batch <= 0:
        return 0.0
    rows = p.verify_batch_rows
    if not rows:
        a, b = p.verify_cpu_s
        if batch == 1:
            return verify_s(p, tokens - 1)
        return (a + b * batch * tokens) * p.verifier_scale
    bs = list(rows)

    def at(bb: int) -> float:
        xs, ys = rows[bb]
        if tokens <= xs[-1]:
            return _interp(tokens, xs, ys)
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
        return ys[-1] + slope * (tokens - xs[-1])

    if batch <= bs[-1]:
        # only the two probed B around `batch` matter for the interpolation
        i = bisect.bisect_left(bs, batch)
        near = bs[max(0, i - 1):i + 1] if i < len(bs) and bs[i] != batch else [bs[min(i, len(bs) - 1)]]
        return _interp(batch, near, [at(bb) for bb in near]) * p.verifier_scale
    vals = [at(bb) for bb in bs]
    slope = (vals[-1] - vals[-2]) / (bs[-1] - bs[-2]) if len(bs) > 1 else vals[-1] / bs[-1]
    return (vals[-1] + slope * (batch - bs[-1])) * p.verifier_scale


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """np.interp for one point on a short ascending list (clamped at the ends), without numpy's call overhead."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def link_s(p: SpecServeProblem, cfg: Config, s: int, gamma: int) -> float:
    """One draft's hand-off to the verifier and the verdict back: 2 × delay + bytes / rate (ids and top-k q)."""
    hosts = _node_of(p, cfg)
    nodes = [hosts[d][0] for d in p.sets[s] if p.drafters[d] != NGRAM and d in hosts]
    if not nodes:
        return 0.0
    n = nodes[0]
    bits = 8.0 * (8 + gamma * (4 + 8 * 12))
    return 2.0 * float(p.link_delay_s[n]) + bits / float(p.link_rate_bps[n])


def prefill_share(p: SpecServeProblem, c: int, e: float) -> float:
    """Prompt tokens of a domain-c request per verification cycle (its prefill amortised over its cycles)."""
    if not len(p.prompt_tokens):
        return 0.0
    return float(p.prompt_tokens[c]) * e / max(p.new_tokens, 1.0)


def per_domain(p: SpecServeProblem, cfg: Config) -> list[dict[str, float]]:
    """Per domain: E[n], verifier seconds, draft seconds, link seconds per request-cycle (prefills amortised)."""
    out = []
    hosts = _node_of(p, cfg)
    for c in range(len(p.domains)):
        s, g = cfg.routing[c], cfg.gamma[c]
        if s < 0 or g <= 0:
            pre = prefill_share(p, c, 1.0) * p.prefill_verify_cpu_s * p.verifier_scale
            out.append({"E": 1.0, "v": verify_s(p, 0) + pre, "d": 0.0, "link": 0.0, "nodes": {}, "T": 1, "pre": pre})
            continue
        e = expected_tokens(p, s, c, g)
        tok, nodes = draft_token_s(p, cfg, s)
        share = prefill_share(p, c, e)
        busy = {n: g * t for n, t in nodes.items()}
        pre_d = pre_hub = 0.0
        for d in p.sets[s]:
            if d == cfg.colocated and len(p.prefill_draft_cpu_s):
                pre_hub += share * float(p.prefill_draft_cpu_s[d]) * p.verifier_scale
            if p.drafters[d] != NGRAM and len(p.prefill_draft_cpu_s) and d in hosts:
                for n in hosts[d]:
                    t = share * float(p.prefill_draft_cpu_s[d]) * float(p.node_scale[n]) / len(hosts[d])
                    busy[n] = busy.get(n, 0.0) + t
                pre_d = max(pre_d, share * float(p.prefill_draft_cpu_s[d]) * float(min(p.node_scale[n] for n in hosts[d])))
        pre = share * p.prefill_verify_cpu_s * p.verifier_scale + pre_hub
        out.append({"E": e, "v": verify_s(p, g) + pre, "d": g * tok + pre_d, "link": link_s(p, cfg, s, g),
                    "nodes": busy, "T": g + 1, "pre": pre})
    return out


def cycle(p: SpecServeProblem, cfg: Config, group: float) -> tuple[float, float, float, float, dict[int, float]]:
    """(cycle seconds, tokens per cycle, T_draft, T_verify, busy seconds per drafter node) at `group` requests
    per verification batch, requests mixed by domain share."""
    rows = per_domain(p, cfg)
    sh = p.domain_share
    # one batched forward over the group's drafts, padded to the longest (runtime/spec_serve/decoding.py)
    t_max = max(r["T"] for c, r in enumerate(rows) if sh[c] > 0)
    tv = verify_batch_s(p, int(group), int(t_max)) + group * sum(sh[c] * r["pre"] for c, r in enumerate(rows))
    busy: dict[int, float] = {}
    for c, r in enumerate(rows):
        for n, t in r["nodes"].items():
            busy[n] = busy.get(n, 0.0) + group * sh[c] * t
    # the hub drafts n-gram-only domains itself (no node)
    hub = group * sum(sh[c] * r["d"] for c, r in enumerate(rows) if not r["nodes"])
    td_nodes = max(busy.values(), default=0.0)
    # a request's own draft chain cannot be shorter than its longest per-request draft time
    chain = max((r["d"] for r in rows), default=0.0)
    td = max(td_nodes, chain)
    link = max((r["link"] for r in rows), default=0.0)
    tokens = group * sum(sh[c] * r["E"] for c, r in enumerate(rows))
    if cfg.pipelined:
        t = max(tv + hub, td + link)
    else:
        t = td + link + tv + hub
    return t, tokens, td, tv + hub, busy


def metrics(p: SpecServeProblem, cfg: Config) -> Metrics:
    """Predicted goodput, tokens per verification, latency percentiles and idle shares."""
    g = max(1, cfg.group)
    t, tokens, td, tv, busy = cycle(p, cfg, g)
    # pipelined: a request advances once every two cycles (its group alternates); barrier: once per cycle
    per_step = 2 * t if cfg.pipelined else t
    goodput = tokens / t if t > 0 else 0.0
    rows = per_domain(p, cfg)
    e = [r["E"] for r in rows]
    serve = [math.ceil(p.new_tokens / max(x, 1e-9)) * per_step for x in e]
    active = 2 * g if cfg.pipelined else g
    verify_share = tv / t if t > 0 else 0.0
    drafter_share = (sum(busy.values()) / (len(busy) * t)) if busy and t > 0 else 0.0
    if p.arrival_rps > 0:
        util = p.arrival_rps * p.new_tokens / goodput if goodput > 0 else math.inf
        stable = util < 1.0
        wait = (util / (1.0 - util)) * float(np.dot(p.domain_share, serve)) / active if stable else math.inf
        lat = [x + wait for x in serve]
    else:
        util, stable = 1.0, True
        # offline: requests served in waves of `active`; request k completes with its wave
        waves = math.ceil(p.requests / active)
        lat = []
        for k in range(waves):
            lat.extend([(k + 1) * x for x in serve])
    lat_sorted = _weighted_percentiles(lat, p, p.arrival_rps > 0)
    return Metrics(goodput, float(np.dot(p.domain_share, e)), lat_sorted[0], lat_sorted[1], 1.0 - verify_share,
                   1.0 - drafter_share if busy else 1.0, t, td, tv, util, stable)


def _weighted_percentiles(lat: Sequence[float], p: SpecServeProblem, online: bool) -> tuple[float, float]:
    """p50 and p95 of per-request latencies (domains weighted by their share)."""
    k = len(p.domains)
    w = np.tile(p.domain_share, len(lat) // k)
    order = np.argsort(lat, kind="stable")
    v = np.asarray(lat)[order]
    cw = np.cumsum(w[order]) / max(w.sum(), 1e-12)
    return float(v[np.searchsorted(cw, 0.5)]), float(v[min(np.searchsorted(cw, 0.95), len(v) - 1)])
