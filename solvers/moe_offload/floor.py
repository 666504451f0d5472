"""The physical floor of a decode step: a lower bound on the time per token that no placement, cache
policy or schedule of the host + device + link machine can beat on this trace (docs/moe-offload.md,
"The floor").

Model. Over the W measured steps of the trace, every activated expert of every MoE layer is a
request. A request whose expert is resident on the device is computed there (device time b = t_x).
Any other request has its bytes read from host DRAM once: by the host CPU, which computes it, or by
the DMA engine, which copies it over the link (the device computes it; an admitted copy stays
resident and may serve later requests, a bypass copy does not). The layers of one step run in order
(a layer's output feeds the next), so a layer's host work and device work overlap each other but
not other layers. The floor is

    T_floor = (1 / W) min over schedules of max( S, D / P, A / BW )

  S  = W (other + sum_i attn_i) + sum_{i,t} max(host_{i,t}, device_{i,t})   (critical path)
  D  = bytes read from host DRAM (every non-resident request, U each)        P = peak host DRAM B/s
  A  = bytes copied over the link (admissions and bypass copies)             BW = link B/s

with perfect overlap everywhere else, host compute at the full peak DRAM bandwidth (a = U / P per
expert), free initial cache contents, fractional residency (so split expert tops are covered) and any
split of the budget across layers (sum_i C_i U <= B). The minimum is over clairvoyant schedules:
the cache knows the whole window (a Belady cache that also weighs what each admission costs).

Computation. Lagrangian duality, exact in each step: for multipliers v = (nu_h, nu_d, mu_D, mu_A, pi)
with nu_h + nu_d + mu_D + mu_A = 1 and pi >= 0,

    g(v) = min_schedules  nu_h S_host + nu_d S_dev + mu_D D/P + mu_A A/BW + pi (sum_i C_i - B/U)

is a lower bound of W * T_floor (max(S, D/P, A/BW) >= any convex combination; max(h, d) >= nu_h h + nu_d d
over nu_h + nu_d; pi times a non-positive slack). With linear costs g separates by layer, and each
layer is a min-cost flow over the window (slots of the cache flowing through time: keep an expert
until its next request, admit one at a request, or leave the slot idle), solved exactly with OR-tools.
Every evaluated v gives a valid bound (integer cost rounding is subtracted); a Kelley cutting-plane
search with a trust region picks the next v. The reported floor is the best bound found; the cut
model's maximum says how much tighter it could get.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from solvers.moe_offload.problem import MoeOffloadProblem

COST_SCALE_MAX = 1e8   # the largest per-arc cost, in integer units, handed to the flow solver


@dataclass(frozen=True)
class FloorConfig:
    """Search settings of the dual (deterministic: no time limits)."""

    max_oracles: int = 24            # dual evaluations (each: one min-cost flow per MoE layer)
    tolerance: float = 0.005         # stop when the cut model is within this fraction of the best bound


@dataclass(frozen=True)
class FloorResult:
    """The floor (s per token) and what binds it."""

    tpot_s: float                    # the valid lower bound on the time per token
    upper_model_s: float             # the cut model's maximum: the bound cannot exceed this (per token)
    multipliers: dict[str, float]    # dual weights at the best point (critical path host/device, dram, link, capacity)
    terms_s: dict[str, float]        # per-token terms of the best point's schedule: critical path, dram, link
    binding: str                     # "dram", "link", "critical path" or "device" (the largest weight)
    oracles: int
    admissions_per_token: float      # copies kept resident, in the best point's schedule
    host_fraction: float             # share of non-resident requests the schedule computes on the host
    layer_capacity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trace: tuple[tuple[float, ...], ...] = ()   # (bound_s per token, model_s per token) per oracle


@dataclass(frozen=True)
class _LayerGraph:
    """One layer's flow network over the window: arcs in a fixed order by kind."""

    tails: np.ndarray
    heads: np.ndarray
    caps: np.ndarray
    supplies: np.ndarray
    kinds: np.ndarray          # 0 capacity-in, 1 unused capacity, 2 idle line, 3 admission, 4 keep/start, 5 release
    requests: int
    arc_count: int


def window_requests(window: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer: (step of each request, index of the same expert's previous request or -1).

    `window` is (W, L, k) expert ids (negative = no expert); an expert counts once per step.
    """
    W, L, _ = window.shape
    out = []
    for i in range(L):
        steps, experts = [], []
        for t in range(W):
            seen: dict[int, None] = {}
            for e in window[t, i]:
                if int(e) >= 0:
                    seen.setdefault(int(e), None)
            steps.extend([t] * len(seen))
            experts.extend(seen)
        st = np.asarray(steps, dtype=np.int64)
        ex = np.asarray(experts, dtype=np.int64)
        prev = np.full(len(st), -1, dtype=np.int64)
        if len(st):
            order = np.lexsort((st, ex))
            same = ex[order][1:] == ex[order][:-1]
            prev[order[1:][same]] = order[:-1][same]
        out.append((st, prev))
    return out


def _graph(steps: np.ndarray, prev: np.ndarray, W: int, N: int) -> _LayerGraph:
    """Nodes: line 0..W (slot boundaries), requests W+1..W+R, source W+R+1. Sink: line W."""
    R = len(steps)
    src = W + 1 + R
    q = W + 1 + np.arange(R)
    # a request with no earlier request in the window can be resident from the window's start (free contents)
    keep_tail = np.where(prev >= 0, W + 1 + prev, 0)
    tails = np.concatenate([[src, src], np.arange(W), steps, keep_tail, q])
    heads = np.concatenate([[0, W], np.arange(1, W + 1), q, q, steps + 1])
    caps = np.concatenate([[N, N], np.full(W, N), np.ones(3 * R, dtype=np.int64)])
    kinds = np.concatenate([[0, 1], np.full(W, 2), np.full(R, 3), np.full(R, 4), np.full(R, 5)])
    supplies = np.zeros(W + 2 + R, dtype=np.int64)
    supplies[src] = N
    supplies[W] = -N
    return _LayerGraph(tails.astype(np.int64), heads.astype(np.int64), caps.astype(np.int64), supplies, kinds, R,
                       len(tails))


@dataclass
class _Oracle:
    """g(v) by one min-cost flow per layer; returns the bound and the subgradient terms."""

    problem: MoeOffloadProblem
    graphs: list[_LayerGraph]
    W: int
    a: float            # host seconds per expert at peak DRAM bandwidth (inf: no host)
    b: float            # device seconds per expert
    tau: float          # link seconds per expert
    fixed_s: float      # W (other + sum attn)
    pi_max: float
    cap_units: float    # B / U

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray, dict[str, float]]:
        from ortools.graph.python import min_cost_flow

        nu_h, nu_d, mu_d, mu_a, p = (float(x) for x in z)
        pi = p * self.pi_max
        cost_keep = nu_d * self.b
        cost_host = nu_h * self.a + mu_d * self.a_dram if np.isfinite(self.a) else np.inf
        cost_copy = nu_d * self.b + mu_d * self.a_dram + mu_a * self.tau
        m_cost = min(cost_host, cost_copy)
        save = m_cost - cost_keep           # a kept request instead of a non-resident one
        delta = cost_copy - m_cost          # an admission instead of the cheaper non-resident service
        host_cheaper = cost_host <= cost_copy
        per_kind = np.array([pi, 0.0, 0.0, delta, -save, 0.0])
        scale = COST_SCALE_MAX / max(float(np.abs(per_kind).max()), 1e-300)
        int_kind = np.round(per_kind * scale).astype(np.int64)
        total, err = 0.0, 0.0
        kept = adm = reqs = cap = 0.0
        caps_used = []
        for g in self.graphs:
            if g.requests == 0:
                caps_used.append(0.0)
                continue
            mcf = min_cost_flow.SimpleMinCostFlow()
            mcf.add_arcs_with_capacity_and_unit_cost(g.tails, g.heads, g.caps, int_kind[g.kinds])
            mcf.set_nodes_supplies(np.arange(len(g.supplies)), g.supplies)
            status = mcf.solve()
            if status != mcf.OPTIMAL:
                raise RuntimeError(f"min-cost flow of the floor returned status {status}")
            flows = mcf.flows(np.arange(g.arc_count))
            # the rounded optimum is within the rounding of every arc that can carry flow of the real one
            total += mcf.optimal_cost() / scale + g.requests * m_cost
            err += 0.5 / scale * (3 * g.requests + 1)
            k_i = float(flows[g.kinds == 4].sum())
            a_i = float(flows[g.kinds == 3].sum())
            c_i = float(flows[0])
            kept += k_i
            adm += a_i
            reqs += g.requests
            cap += c_i
            caps_used.append(c_i)
        value = (nu_h + nu_d) * self.fixed_s + total - pi * self.cap_units - err
        non_res = reqs - kept - adm
        host_n = non_res if host_cheaper else 0.0
        copy_n = reqs - kept - host_n                      # admissions and bypass copies
        s_host = self.fixed_s + host_n * (self.a if np.isfinite(self.a) else 0.0)
        s_dev = self.fixed_s + (kept + copy_n) * self.b
        dram = (reqs - kept) * self.a_dram
        link = copy_n * self.tau
        grad = np.array([s_host, s_dev, dram, link, self.pi_max * (cap - self.cap_units)])
        info = {"s_host": s_host, "s_dev": s_dev, "dram": dram, "link": link, "admissions": adm,
                "host_fraction": host_n / non_res if non_res > 0 else 0.0, "caps": np.array(caps_used)}
        return value, grad, info

    @property
    def a_dram(self) -> float:
        """DRAM seconds per expert at peak bandwidth (also when the host does not compute)."""
        return self.problem.expert_bytes / self.problem.host_dram_bytes_per_s if self.problem.host_dram_bytes_per_s else 0.0


def _kelley_step(cuts: list[tuple[float, np.ndarray, np.ndarray]], center: np.ndarray, radius: float,
                 no_host: bool) -> tuple[np.ndarray, float]:
    """Maximise the cut model min_k (g_k + s_k (z - z_k)) over the simplex x [0, 1] inside a box."""
    from scipy.optimize import linprog

    n = 5
    # variables: z (5), t; maximise t
    c = np.zeros(n + 1)
    c[-1] = -1.0
    a_ub = []
    b_ub = []
    for g_k, s_k, z_k in cuts:
        a_ub.append(np.concatenate([-s_k, [1.0]]))
        b_ub.append(g_k - float(s_k @ z_k))
    a_eq = np.array([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    lo = np.maximum(center - radius, 0.0)
    hi = np.minimum(center + radius, 1.0)
    if no_host:
        lo[0] = hi[0] = 0.0
    bounds = [(float(lo[j]), float(hi[j])) for j in range(n)] + [(None, None)]
    res = linprog(c, A_ub=np.array(a_ub), b_ub=np.array(b_ub), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        return center, np.inf
    return res.x[:n], float(res.x[n])


def physical_floor(problem: MoeOffloadProblem, window: np.ndarray, config: FloorConfig = FloorConfig()) -> FloorResult:
    """The floor per decode token (s) over `window` (W, L, k) expert ids, at the problem's budget.

    Needs the host's peak DRAM bandwidth (`problem.host_dram_bytes_per_s`); without it the host cannot
    compute and only the device and the link remain.
    """
    W, L, _ = window.shape
    if L != problem.num_layers:
        raise ValueError(f"window has {L} layers, the problem {problem.num_layers}")
    if W == 0:
        raise ValueError("the floor needs at least one step")
    N = problem.num_experts
    reqs = window_requests(window)
    graphs = [_graph(st, prev, W, N) for st, prev in reqs]
    U = problem.expert_bytes
    P = problem.host_dram_bytes_per_s
    a = U / P if P else np.inf
    b = problem.expert_compute_s
    tau = problem.transfer_s
    fixed = W * (problem.other_compute_s + float(np.sum(problem.attention_compute_s)))
    per_request = (a if np.isfinite(a) else 0.0) * 2 + b + tau
    oracle = _Oracle(problem, graphs, W, a, b, tau, fixed, pi_max=W * per_request + 1e-12,
                     cap_units=problem.budget_bytes / U)
    no_host = not np.isfinite(a)
    # start: host-side critical path and DRAM weighted equally, a moderate capacity price
    starts = [np.array([0.5, 0.0, 0.5, 0.0, 0.02]), np.array([0.0, 0.5, 0.0, 0.5, 0.02]),
              np.array([0.34, 0.0, 0.33, 0.33, 0.02])]
    if no_host:
        starts = [np.array([0.0, 0.5, 0.0, 0.5, 0.02]), np.array([0.0, 1.0, 0.0, 0.0, 0.02])]
    cuts: list[tuple[float, np.ndarray, np.ndarray]] = []
    best = (-np.inf, None, None, None)
    history = []
    model = np.inf
    center = starts[0]
    radius = 0.25
    for z in starts:
        if len(cuts) >= config.max_oracles:
            break
        val, grad, info = oracle(z)
        cuts.append((val, grad, z))
        history.append((val / W, np.inf))
        if val > best[0]:
            best = (val, z, grad, info)
            center = z
    while len(cuts) < config.max_oracles:
        z, model_box = _kelley_step(cuts, center, radius, no_host)
        full_z, model = _kelley_step(cuts, center, 1.0, no_host)
        if model - best[0] <= config.tolerance * max(best[0], 1e-300):
            break
        val, grad, info = oracle(z)
        cuts.append((val, grad, z))
        history.append((val / W, model / W))
        if val > best[0] + 1e-15 * abs(best[0]):
            best = (val, z, grad, info)
            center = z
            radius = min(1.0, radius * 2)
        else:
            radius = max(radius / 2, 1e-3)
    _full, model = _kelley_step(cuts, center, 1.0, no_host)
    val, z, grad, info = best
    names = ("critical path (host side)", "critical path (device side)", "dram", "link", "capacity")
    mult = {names[j]: float(z[j]) for j in range(4)}
    mult["capacity_price_s_per_slot"] = float(z[4] * oracle.pi_max)
    weights = {"critical path": float(z[0]), "device": float(z[1]), "dram": float(z[2]), "link": float(z[3])}
    binding = max(weights, key=lambda k: (weights[k], k))
    terms = {"critical_path_host_s": info["s_host"] / W, "critical_path_device_s": info["s_dev"] / W,
             "dram_s": info["dram"] / W, "link_s": info["link"] / W}
    return FloorResult(tpot_s=max(val, 0.0) / W, upper_model_s=max(model, val) / W, multipliers=mult, terms_s=terms,
                       binding=binding, oracles=len(cuts), admissions_per_token=info["admissions"] / W,
                       host_fraction=info["host_fraction"], layer_capacity=info["caps"], trace=tuple(history))
