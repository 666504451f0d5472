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
    admissions: bool = True          # False: no copy is ever kept (a fixed resident set per layer; for analysis)


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


def _graph(steps: np.ndarray, prev: np.ndarray, W: int, N: int, admissions: bool = True) -> _LayerGraph:
    """Nodes: line 0..W (slot boundaries), requests W+1..W+R, source W+R+1. Sink: line W."""
    R = len(steps)
    src = W + 1 + R
    q = W + 1 + np.arange(R)
    # a request with no earlier request in the window can be resident from the window's start (free contents)
    keep_tail = np.where(prev >= 0, W + 1 + prev, 0)
    tails = np.concatenate([[src, src], np.arange(W), steps, keep_tail, q])
    heads = np.concatenate([[0, W], np.arange(1, W + 1), q, q, steps + 1])
    caps = np.concatenate([[N, N], np.full(W, N), np.full(R, 1 if admissions else 0), np.ones(2 * R, dtype=np.int64)])
    kinds = np.concatenate([[0, 1], np.full(W, 2), np.full(R, 3), np.full(R, 4), np.full(R, 5)])
    supplies = np.zeros(W + 2 + R, dtype=np.int64)
    supplies[src] = N
    supplies[W] = -N
    return _LayerGraph(tails.astype(np.int64), heads.astype(np.int64), caps.astype(np.int64), supplies, kinds, R,
                       len(tails))


@dataclass
class _Oracle:
    """g(v; lambda) by one min-cost flow per layer; returns the bound, the subgradient and the schedule's terms.

    v = (mu_S, mu_D, mu_A, p): weights of the critical path, DRAM and link terms (summing to 1) and the
    capacity price pi = p * pi_max. lambda (per layer and step) splits the critical-path weight of a step
    between its host work and its device work: max(h, d) >= lambda h + (1 - lambda) d holds for any lambda,
    so every (v, lambda) gives a valid bound; lambda follows the last schedule (1 where the host was the
    longer side of the step, else 0), which makes the bound exact for that schedule.
    """

    problem: MoeOffloadProblem
    graphs: list[_LayerGraph]
    steps: list[np.ndarray]
    W: int
    a: float            # host seconds per expert at peak DRAM bandwidth (inf: no host)
    a_dram: float       # DRAM seconds per expert at peak (the copy's read, also when the host cannot compute)
    b: float            # device seconds per expert
    tau: float          # link seconds per expert
    fixed_s: float      # W (other + sum attn)
    pi_max: float
    cap_units: float    # B / U

    def __call__(self, z: np.ndarray, lam: list[np.ndarray]) -> tuple[float, np.ndarray, dict]:
        from ortools.graph.python import min_cost_flow

        nu_h, nu_d, nu_s, mu_d, mu_a, p = (float(x) for x in z)
        pi = p * self.pi_max
        host_ok = np.isfinite(self.a)
        layers = []
        for st, lam_i in zip(self.steps, lam):
            lj = lam_i[st]
            w_host = nu_h + nu_s * lj           # critical-path weight on this request's host work
            w_dev = nu_d + nu_s * (1.0 - lj)    # ... and on its device work
            keep = w_dev * self.b
            host = w_host * self.a + mu_d * self.a_dram if host_ok else np.full(len(st), np.inf)
            copy = w_dev * self.b + mu_d * self.a_dram + mu_a * self.tau
            m_cost = np.minimum(host, copy)
            layers.append((host, copy, m_cost, m_cost - keep, copy - m_cost))
        big = max([1e-300, abs(pi)] + [float(np.abs(x[3]).max(initial=0.0)) for x in layers]
                  + [float(np.abs(x[4]).max(initial=0.0)) for x in layers])
        scale = COST_SCALE_MAX / big
        total = err = 0.0
        sh = sd = sp = dram = link = adm_n = host_n = nonres_n = cap = 0.0
        caps_used = []
        step_host: list[np.ndarray] = []
        step_dev: list[np.ndarray] = []
        for g, st, lam_i, (host, copy, m_cost, save, delta) in zip(self.graphs, self.steps, lam, layers):
            if g.requests == 0:
                caps_used.append(0.0)
                step_host.append(np.zeros(self.W))
                step_dev.append(np.zeros(self.W))
                continue
            R = g.requests
            costs = np.concatenate([[pi, 0.0], np.zeros(self.W), delta, -save, np.zeros(R)])
            mcf = min_cost_flow.SimpleMinCostFlow()
            mcf.add_arcs_with_capacity_and_unit_cost(g.tails, g.heads, g.caps, np.round(costs * scale).astype(np.int64))
            mcf.set_nodes_supplies(np.arange(len(g.supplies)), g.supplies)
            status = mcf.solve()
            if status != mcf.OPTIMAL:
                raise RuntimeError(f"min-cost flow of the floor returned status {status}")
            flows = mcf.flows(np.arange(g.arc_count)).astype(float)
            # the rounded optimum is within the rounding of every arc that can carry flow of the real one
            total += mcf.optimal_cost() / scale + float(m_cost.sum())
            err += 0.5 / scale * (3 * R + 1)
            adm = flows[2 + self.W: 2 + self.W + R]
            kept = flows[2 + self.W + R: 2 + self.W + 2 * R]
            nonres = np.clip(1.0 - kept - adm, 0.0, 1.0)
            on_host = nonres * (host <= copy)
            copies = 1.0 - kept - on_host                     # admissions and bypass copies
            h_req = on_host * (self.a if host_ok else 0.0)
            d_req = (kept + copies) * self.b
            lj = lam_i[st]
            step_host.append(np.bincount(st, weights=h_req, minlength=self.W))
            step_dev.append(np.bincount(st, weights=d_req, minlength=self.W))
            sh += float(h_req.sum())
            sd += float(d_req.sum())
            sp += float((lj * h_req + (1.0 - lj) * d_req).sum())
            dram += float((1.0 - kept).sum()) * self.a_dram
            link += float(copies.sum()) * self.tau
            adm_n += float(adm.sum())
            host_n += float(on_host.sum())
            nonres_n += float(nonres.sum())
            cap += flows[0]
            caps_used.append(float(flows[0]))
        value = (nu_h + nu_d + nu_s) * self.fixed_s + total - pi * self.cap_units - err
        f = self.fixed_s
        grad = np.array([f + sh, f + sd, f + sp, dram, link, self.pi_max * (cap - self.cap_units)])
        true_path = f + sum(float(np.maximum(h, d).sum()) for h, d in zip(step_host, step_dev))
        info = {"critical_path": true_path, "host_path": f + sh, "device_path": f + sd, "dram": dram, "link": link,
                "admissions": adm_n, "host_fraction": host_n / nonres_n if nonres_n > 0 else 0.0,
                "caps": np.array(caps_used), "step_host": step_host, "step_dev": step_dev}
        return value, grad, info


def _kelley_step(cuts: list[tuple[float, np.ndarray, np.ndarray]], center: np.ndarray, radius: float,
                 fixed_zero: tuple[int, ...] = ()) -> tuple[np.ndarray, float]:
    """Maximise the cut model min_k (g_k + s_k (z - z_k)) over the simplex x [0, 1] inside a box around `center`."""
    from scipy.optimize import linprog

    n = 6
    c = np.zeros(n + 1)
    c[-1] = -1.0                       # variables z (6), t; maximise t
    a_ub = [np.concatenate([-s_k, [1.0]]) for _g, s_k, _z in cuts]
    b_ub = [g_k - float(s_k @ z_k) for g_k, s_k, z_k in cuts]
    a_eq = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    lo = np.maximum(center - radius, 0.0)
    hi = np.minimum(center + radius, 1.0)
    for j in fixed_zero:
        lo[j] = hi[j] = 0.0
    bounds = [(float(lo[j]), float(hi[j])) for j in range(n)] + [(None, None)]
    res = linprog(c, A_ub=np.array(a_ub), b_ub=np.array(b_ub), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        return center, np.inf
    return res.x[:n], float(res.x[n])


def _pattern(info: dict, host_ok: bool) -> list[np.ndarray]:
    """lambda per layer and step from a schedule: 1 where its host work was the longer side of the step."""
    if not host_ok:
        return [np.zeros_like(d) for d in info["step_dev"]]
    return [np.where(h > d, 1.0, 0.0) for h, d in zip(info["step_host"], info["step_dev"])]


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
    graphs = [_graph(st, prev, W, N, config.admissions) for st, prev in reqs]
    U = problem.expert_bytes
    P = problem.host_dram_bytes_per_s
    host_ok = bool(P) and problem.host_expert_compute_s is not None
    a = U / P if host_ok else np.inf
    a_dram = U / P if P else 0.0
    b = problem.expert_compute_s
    tau = problem.transfer_s
    fixed = W * (problem.other_compute_s + float(np.sum(problem.attention_compute_s)))
    per_request = (a if host_ok else 0.0) + a_dram + b + tau
    oracle = _Oracle(problem, graphs, [st for st, _ in reqs], W, a, a_dram, b, tau, fixed,
                     pi_max=W * per_request + 1e-12, cap_units=problem.budget_bytes / U)
    # z = (nu_h, nu_d, nu_s, mu_D, mu_A, p): critical-path weights on host work, on device work, and on the side
    # a per-step pattern picks; DRAM and link weights; capacity price. Round 0 has no pattern (nu_s = 0);
    # each later round takes the best schedule's pattern (1 where its host work was the longer side)
    lam = [np.zeros(W) for _ in range(L)]
    starts = [np.array([0.1, 0.0, 0.0, 0.85, 0.05, 0.02]), np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.02]),
              np.array([0.3, 0.1, 0.0, 0.3, 0.3, 0.02])]
    if not host_ok:
        starts = [np.array([0.0, 0.5, 0.0, 0.0, 0.5, 0.02]), np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.02])]
    rounds = 3 if host_ok else 1
    best = (-np.inf, None, None)
    best_model = np.inf
    history: list[tuple[float, float]] = []
    used = 0
    for rnd in range(rounds):
        # the first round gets half of the evaluations, later rounds share the rest
        budget = (config.max_oracles - used) // 2 if rnd == 0 and rounds > 1 else (config.max_oracles - used) // (rounds - rnd)
        frozen = (2,) if rnd == 0 else ()
        if not host_ok:
            frozen = (0, 2)
        cuts: list[tuple[float, np.ndarray, np.ndarray]] = []
        round_best = (-np.inf, None, None)
        if best[1] is None:
            points = starts
        else:   # warm start: the best weights, and the same critical-path weight moved onto the pattern
            zb = best[1]
            points = [zb, np.array([0.0, 0.0, zb[0] + zb[1] + zb[2], zb[3], zb[4], zb[5]])]
        for z in points:
            if len(cuts) >= budget:
                break
            val, grad, info = oracle(z, lam)
            cuts.append((val, grad, z))
            history.append((val / W, np.inf))
            if val > round_best[0]:
                round_best = (val, z, info)
        center, radius = round_best[1], 0.25
        model = np.inf
        while len(cuts) < budget:
            z, _ = _kelley_step(cuts, center, radius, frozen)
            _, model = _kelley_step(cuts, center, 1.0, frozen)
            if model - round_best[0] <= config.tolerance * max(round_best[0], 1e-300):
                break
            val, grad, info = oracle(z, lam)
            cuts.append((val, grad, z))
            history.append((val / W, model / W))
            if val > round_best[0] + 1e-15 * abs(round_best[0]):
                round_best = (val, z, info)
                center = z
                radius = min(1.0, radius * 2)
            else:
                radius = max(radius / 2, 1e-3)
        used += len(cuts)
        _, model = _kelley_step(cuts, center, 1.0, frozen)
        if round_best[0] > best[0]:
            best = round_best
            best_model = model
        new_lam = _pattern(round_best[2], host_ok)
        if rnd > 0 and all(np.array_equal(x, y) for x, y in zip(new_lam, lam)):
            break
        lam = new_lam
    val, z, info = best
    mult = {"critical path (host side)": float(z[0]), "critical path (device side)": float(z[1]),
            "critical path (per-step side)": float(z[2]), "dram": float(z[3]), "link": float(z[4]),
            "capacity_price_s_per_slot": float(z[5] * oracle.pi_max)}
    path = float(z[0] + z[1] + z[2])
    path_side = "critical path" if z[0] + z[2] >= z[1] else "device"
    weights = {path_side: path, "dram": float(z[3]), "link": float(z[4])}
    binding = max(weights, key=lambda k: (weights[k], k))
    terms = {"critical_path_s": info["critical_path"] / W, "critical_path_host_s": info["host_path"] / W,
             "critical_path_device_s": info["device_path"] / W, "dram_s": info["dram"] / W, "link_s": info["link"] / W}
    return FloorResult(tpot_s=max(val, 0.0) / W, upper_model_s=max(best_model, val) / W, multipliers=mult, terms_s=terms,
                       binding=binding, oracles=used, admissions_per_token=info["admissions"] / W,
                       host_fraction=info["host_fraction"], layer_capacity=info["caps"], trace=tuple(history))
