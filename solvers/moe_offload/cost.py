"""Analytic cost model of moe-offload (docs/moe-offload.md §3): expected decode time per step, per layer.

    S_i      = theta_i * h_i(C_i)                                  resident fraction of an activated expert
    V_pf     = k_pf * U_e * (1 - S_i)                              prefetched bytes (if prefetching)
    stall_pf = E[max(0, V_pf / BW - W_i)]                          (refined: expectation over the
               number of non-resident predicted experts; the spec has max(0, E[V_pf]/BW - W_i))
    miss_od  = max(0, (1 - p_i) k_i tau_U (1 - S_i) + min(k_i (1 - S_i), 1) t_x - k_i t_x)   (refined, below)
    T_i      = T^c_i + stall_pf + miss_od

A layer that does not prefetch has p_i = 0 and no V_pf.

Refinement of the spec's on-demand term [our design, measured]: the spec charges every unpredicted
expert separately, max(0, (1 - theta) tau_U - theta t_x) for a hit and tau_U for a miss. All on-demand
copies of a layer share one FIFO link, the tops of resident experts compute while any of them load,
and each arrival computes while later ones load, so the layer ends when the link has delivered its
on-demand bytes and the last arrival has computed (or when all k experts have computed). With the per-expert
form, the GPU-only plan lost to an in-space baseline by up to 1.3 % in simulated TPOT on 19 of 75
benchmark cells (thin bottoms queued behind whole misses); the layer-level form keeps T_i a
function of S_i = theta h(C) alone, so MoEpic's ratio fixed point is unchanged.
CPU-miss layers (our extension, and the llama.cpp / Fiddler execution model): a static set of the C
most popular whole experts stays on the device and every other activated expert is computed on the
host CPU where its weights live, so nothing crosses the link:
    T_i = T^a_i + k_i [ h_static(C) t_x + (1 - h_static(C)) t_cpu ]
Split layers (our extension, docs §3.3): the static set as above; each miss's top rows (fraction alpha)
cross the link and compute on the device while the host computes its bottom rows; host and link share the
host's peak DRAM bandwidth (`time_split`, `host_and_link_finish`).
Everything is vectorised over budgets and split ratios.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvers.moe_offload.problem import MoeOffloadProblem


def capacity(problem: MoeOffloadProblem, budget_bytes: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """C = min(N, floor(b / (theta U_e))), 0 where theta = 0 (broadcasts)."""
    b = np.asarray(budget_bytes, dtype=float)
    th = np.asarray(theta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.floor(b / (np.where(th > 0, th, 1.0) * problem.expert_bytes) + 1e-9)
    c = np.where(th > 0, np.minimum(c, problem.num_experts), 0)
    return c.astype(np.int64)


def time_at_hit(problem: MoeOffloadProblem, layer: int, hit: np.ndarray, theta: np.ndarray,
                prefetch: np.ndarray | bool, recall: float | None = None) -> np.ndarray:
    """T_i (s) given the hit rate h of the chosen capacity (arrays broadcast together)."""
    th = np.asarray(theta, dtype=float)
    h = np.asarray(hit, dtype=float)
    tau = problem.transfer_s
    tx = problem.expert_compute_s
    k_i = problem.distinct_experts[layer]
    p = problem.recall[layer] if recall is None else recall
    pf = np.asarray(prefetch, dtype=bool)
    s = th * h
    window = problem.prefetch_window_s()[layer]
    stall = np.where(pf, prefetch_stall_s(problem.k_prefetch, h, th, tau, window), 0.0)
    p_eff = np.where(pf, p, 0.0)
    # on-demand copies (bottoms of unpredicted hits, whole unpredicted misses) share one link, and the
    # compute of resident tops runs while they load: the layer waits for the link's bytes minus that
    # overlap (our refinement of the spec's per-expert max(0, (1-theta) tau - theta t_x); see module doc)
    link_od = (1.0 - p_eff) * k_i * tau * (1.0 - s)
    # the layer ends when the link has delivered its on-demand bytes and the last arrival has computed
    # (earlier arrivals compute while later ones load), or when all k experts have computed
    miss = np.maximum(0.0, link_od + np.minimum(k_i * (1.0 - s), 1.0) * tx - k_i * tx)
    return problem.layer_compute_s()[layer] + stall + miss


def prefetch_stall_s(k_pf: int, hit: np.ndarray, theta: np.ndarray, tau: float, window: float) -> np.ndarray:
    """E[max(0, V_pf / BW - W)] (s) over the number j of predicted experts that are not resident.

    j ~ Binomial(k_pf, 1 - h): a non-resident expert crosses the link whole (tau), a resident one only
    its bottom ((1 - theta) tau). The spec's max(0, E[V_pf]/BW - W) is the Jensen lower bound of this
    expectation; it hid the cost of one whole mispredicted expert dwarfing a short window, and plans
    that prefetched lost to the whole-expert cache in the simulator [our refinement, measured].
    """
    h = np.asarray(hit, dtype=float)
    th = np.asarray(theta, dtype=float)
    out = np.zeros(np.broadcast(h, th).shape)
    for j in range(k_pf + 1):
        prob = math.comb(k_pf, j) * (1.0 - h) ** j * h ** (k_pf - j)
        out = out + prob * np.maximum(0.0, (j + (k_pf - j) * (1.0 - th)) * tau - window)
    return out


def time_cpu_misses(problem: MoeOffloadProblem, layer: int, hit: np.ndarray) -> np.ndarray:
    """T_i (s) of a CPU-miss layer whose static device set catches a fraction `hit` of activations."""
    if problem.host_expert_compute_s is None:
        return np.full(np.shape(hit), np.inf)
    h = np.asarray(hit, dtype=float)
    k_i = problem.distinct_experts[layer]
    return problem.attention_compute_s[layer] + k_i * (h * problem.expert_compute_s + (1.0 - h) * problem.host_expert_compute_s)


def host_link_rates(problem: MoeOffloadProblem) -> tuple[float, float, float]:
    """(host B/s, link B/s, joint DRAM cap B/s): the host computes at its sustained rate, the link copies at
    BW, and while both run they share the peak DRAM bandwidth P (each scaled by P / (H + BW) when H + BW > P)."""
    if problem.host_expert_compute_s is None:
        raise ValueError("host expert compute time unknown")
    h = problem.expert_bytes / problem.host_expert_compute_s
    bw = problem.bandwidth_bytes_per_s
    p = problem.host_dram_bytes_per_s if problem.host_dram_bytes_per_s else np.inf
    return h, bw, p


def host_and_link_finish(x_host: np.ndarray, x_link: np.ndarray, h: float, bw: float, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Finish times (s) of the host reading `x_host` bytes and the link copying `x_link` bytes, both from t = 0.

    While both run they draw DRAM together: if H + BW > P each runs at its rate times P / (H + BW); when
    one is done the other runs at its own rate (each alone stays under P: H <= P, BW <= P).
    """
    xh = np.asarray(x_host, dtype=float)
    xl = np.asarray(x_link, dtype=float)
    share = min(1.0, p / (h + bw)) if np.isfinite(p) else 1.0
    h2, l2 = h * share, bw * share
    solo_h, solo_l = min(h, p), min(bw, p)
    th_both, tl_both = xh / h2, xl / l2
    host_first = th_both <= tl_both
    t1 = np.minimum(th_both, tl_both)
    t_host = np.where(host_first, th_both, t1 + np.maximum(xh - h2 * t1, 0.0) / solo_h)
    t_link = np.where(host_first, t1 + np.maximum(xl - l2 * t1, 0.0) / solo_l, tl_both)
    return t_host, t_link


def time_split(problem: MoeOffloadProblem, layer: int, hit: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """T_i (s) of a split layer (our extension, docs/moe-offload.md "Split layers").

    A static set of whole experts is resident (a fraction `hit` of activations). Every other activated
    expert is split along its intermediate dimension: its top `alpha` rows are copied over the link at
    dispatch and computed on the device, its bottom rows are computed on the host, at the same time.
    With m of the n experts of a step missing (binomial in the hit rate), the expert phase ends when the
    host has read its m (1 - alpha) U bytes, and the device has computed the hits and the last top has
    arrived and been computed; host and link share DRAM (`host_and_link_finish`). alpha = 0 is the
    host-only layer (misses computed where they live, overlapping the device's hits), alpha = 1 copies
    whole misses without admitting them.
    """
    h_rate, bw, p = host_link_rates(problem)
    h = np.asarray(hit, dtype=float)[..., None]
    al = np.asarray(alpha, dtype=float)[..., None]
    n = max(int(round(float(problem.distinct_experts[layer]))), 1)
    b = problem.expert_compute_s
    u = problem.expert_bytes
    m = np.arange(n + 1, dtype=float)
    prob = np.array([math.comb(n, j) for j in range(n + 1)], dtype=float) * (1.0 - h) ** m * h ** (n - m)
    t_host, t_link = host_and_link_finish(m * (1.0 - al) * u, m * al * u, h_rate, bw, p)
    device = np.maximum((n - m) * b + m * al * b, np.where(m > 0, t_link + al * b, 0.0))
    expert_phase = np.maximum(t_host, device)
    return problem.attention_compute_s[layer] + (prob * expert_phase).sum(axis=-1)


def split_link_bytes(problem: MoeOffloadProblem, layer: int, hit: float, alpha: float) -> float:
    """Bytes per step copied over the link by a split layer (the tops of its misses)."""
    return float(problem.distinct_experts[layer]) * (1.0 - hit) * alpha * problem.expert_bytes


def layer_time(problem: MoeOffloadProblem, layer: int, budget_bytes: np.ndarray, theta: np.ndarray,
               prefetch: np.ndarray | bool, policy: str = "lcp", recall: float | None = None,
               curve: np.ndarray | None = None) -> np.ndarray:
    """T_i (s) for arrays of budgets and thetas (broadcast together); C follows from budget and theta."""
    h_env = curve if curve is not None else problem.envelope(policy)[layer]
    c = capacity(problem, budget_bytes, theta)
    return time_at_hit(problem, layer, h_env[c], theta, prefetch, recall)


@dataclass(frozen=True)
class PredictedMetrics:
    """Per-layer and total predicted figures (times in s, bytes per decode step)."""

    time_s: np.ndarray
    stall_s: np.ndarray
    hit_rate: np.ndarray
    bytes_per_step: np.ndarray
    tpot_s: float
    mean_hit_rate: float
    total_bytes_per_step: float


def evaluate(problem: MoeOffloadProblem, thetas: np.ndarray, capacities: np.ndarray, prefetch: np.ndarray,
             policy: str, recall: np.ndarray | None = None, cpu_layers: np.ndarray | None = None,
             curves: np.ndarray | None = None, split: np.ndarray | None = None) -> PredictedMetrics:
    """Predicted metrics of a full configuration (capacities given directly). `split[i]` is the copied
    fraction alpha of a split layer's misses (NaN where the layer is not split)."""
    L = problem.num_layers
    env = curves if curves is not None else problem.envelope(policy)
    rec = problem.recall if recall is None else recall
    cpu = np.zeros(L, dtype=bool) if cpu_layers is None else cpu_layers
    alpha = np.full(L, np.nan) if split is None else np.asarray(split, dtype=float)
    times = np.zeros(L)
    hits = np.zeros(L)
    bytes_ = np.zeros(L)
    for i in range(L):
        k_i = problem.distinct_experts[i]
        if np.isfinite(alpha[i]):
            h = float(problem.hit_curves["static"][i][int(capacities[i])])
            times[i] = float(time_split(problem, i, h, alpha[i]))
            hits[i] = h
            bytes_[i] = split_link_bytes(problem, i, h, float(alpha[i]))
            continue
        if cpu[i]:
            if problem.host_expert_compute_s is None:
                raise ValueError("host expert compute time unknown")
            h = float(problem.hit_curves["static"][i][int(capacities[i])])
            times[i] = float(time_cpu_misses(problem, i, h))
            hits[i] = h
            continue
        th = float(thetas[i])
        c = int(capacities[i])
        h = env[i][c] if th > 0 else 0.0
        times[i] = float(time_at_hit(problem, i, h, th, bool(prefetch[i]), float(rec[i])))
        hits[i] = h
        s = th * h
        p = rec[i] if prefetch[i] else 0.0
        v_pf = problem.k_prefetch * problem.expert_bytes * (1 - s) if prefetch[i] else 0.0
        bytes_[i] = v_pf + (1 - p) * k_i * problem.expert_bytes * (1 - s)
    stall = times - np.where(cpu, times, problem.layer_compute_s())
    # a split layer's stall is what it adds to the stall-free compute (attention + its experts on the device)
    stall = np.where(np.isfinite(alpha), times - problem.layer_compute_s(), stall)
    weights = problem.distinct_experts
    mean_hit = float((hits * weights).sum() / weights.sum()) if weights.sum() > 0 else 0.0
    return PredictedMetrics(times, stall, hits, bytes_, float(times.sum() + problem.other_compute_s), mean_hit,
                            float(bytes_.sum()))
