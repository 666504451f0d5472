"""Caesar (docs/fed-compress.md, "Algorithm"): per round, download ratios from staleness, upload ratios from data importance,
batch sizes that make devices finish together; re-planned every round from the devices' state.

One round (`plan_round`), given the round t, the selected devices S_t and each device's last sync
round (0 = never):

1. Download: θ_d,i = (1 − δ_i/t)·θ_d_max with δ_i = t − last_sync_i, snapped down to the ratio grid
   (δ_i = t, i.e. never synced, gives θ = 0: the full model). In budgeted mode a greedy spends a
   per-round downlink budget on the devices whose rebuilt model deviates most per byte (§5).
2. Upload: 𝒞_i = (n_i / max n)·exp(−D_i) with D_i = KL(Φ_i ‖ Φ_0); rank by 𝒞 descending (ties by
   device order); θ_u,i = θ_u_min + (θ_u_max − θ_u_min)·(rank_i − 1)/(N − 1), so the most important
   device gets θ_u_min and the least θ_u_max (N = 1: θ_u_min). The spec's `rank_i/N` never reaches
   θ_u_min; the (rank − 1)/(N − 1) form spans the whole range (departure, documented).
3. Batch: with the ratios fixed, M_i(β) = τ·(a_i + b_i·β) + c_i. `batch_method`:
   * "convex" (default): the linear-fractional program  max τ·Σβ_i / T  s.t.  M_i(β_i) ≤ T,
     β_min ≤ β_i ≤ cap_i, made an LP by Charnes–Cooper (y = β/T, s = 1/T) and solved by cvxpy;
     its optimum bounds samples/s for any batch grid; batches are rounded down to the grid under
     the LP's T, so every device finishes by T (finish times equalised up to one grid step).
   * "rule": the spec's T* = max(min_i M_i(cap_i), max_i M_i(β_min)), β_i = max{β : M_i(β) ≤ T*}.
   * "sweep": the exact grid optimum (see `exact.sweep_batches`).
   * "fixed": one batch for every device (clipped to its cap).
   cap_i is the largest grid batch within the device's memory and (by default) its sample count.

Ratios are returned as fractions KEPT: keep = 1 − θ (1 = uncompressed).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from solvers.common import InfeasibleError, Status, Stopwatch, TraceEvent
from solvers.fed_compress.cost import comm_time_s, download_bytes, evaluate, importance, label_skew, upload_bytes
from solvers.fed_compress.problem import (BudgetSolution, DownloadBudgetProblem, FedCompressProblem,
                                          FedCompressSolution)

BATCH_METHODS = ("convex", "rule", "sweep", "fixed")
MAX_MULTI_EXCHANGE_CELLS = 2000   # devices × ratio grid: above it the budget greedy skips its k-for-1 exchanges


@dataclass(frozen=True)
class CaesarConfig:
    """Caesar's settings (with its defaults) plus the batch method; every field is shown in plans."""

    mode: str = "rule"                  # "rule" or "budget" (needs problem.down_budget_bytes)
    theta_d_max: float = 0.5
    theta_u_min: float = 0.1
    theta_u_max: float = 0.5
    ratio_grid_step: float = 0.05
    importance: str = "exp"             # or "ratio"
    kl_smoothing: float = 1e-3
    reference_dist: str = "global"      # or "uniform"
    tie_policy: str = "id"              # or "mean": tied devices share the mean of their ratios
    batch_method: str = "convex"
    fixed_batch: int = 32               # batch_method "fixed"
    cap_batch_at_samples: bool = True   # a batch above a device's sample count only repeats samples
    staleness_rule: bool = True         # ablation off: θ_d = θ_d_max for every synced device
    importance_rule: bool = True        # ablation off: θ_u = mid-range for every device
    recovery: bool = True               # ablation off: devices rebuild sign-only entries as sign·mean

    def check(self) -> None:
        """Raise ValueError on settings outside their ranges."""
        if not 0.0 <= self.theta_d_max < 1.0:
            raise ValueError("theta_d_max must lie in [0, 1) so that at least one value is kept")
        if not 0.0 <= self.theta_u_min <= self.theta_u_max < 1.0:
            raise ValueError("need 0 <= theta_u_min <= theta_u_max < 1")
        if not 0.0 < self.ratio_grid_step <= 1.0:
            raise ValueError("ratio_grid_step must lie in (0, 1]")
        if self.mode not in ("rule", "budget"):
            raise ValueError(f"mode must be 'rule' or 'budget', got {self.mode!r}")
        if self.batch_method not in BATCH_METHODS:
            raise ValueError(f"batch_method must be one of {BATCH_METHODS}, got {self.batch_method!r}")
        if self.tie_policy not in ("id", "mean"):
            raise ValueError(f"tie_policy must be 'id' or 'mean', got {self.tie_policy!r}")


@dataclass(frozen=True)
class RoundPlan:
    """One round's decisions for the selected devices `idx` (arrays aligned with `idx`)."""

    idx: np.ndarray
    keep_down: np.ndarray
    keep_up: np.ndarray
    batch: np.ndarray
    staleness: np.ndarray           # δ_i (rounds)
    round_time_s: float
    samples_per_s: float            # τ·Σβ / T_round
    lp_samples_per_s: float | None  # the convex program's optimum (a bound for any grid), when solved
    deviation_proxy: bool = False


# ---------------------------------------------------------------- ratios
def snap_down(theta: np.ndarray, step: float) -> np.ndarray:
    """Largest multiple of `step` not above θ, rounded to 10 decimals (0.35 stays 0.35)."""
    return np.round(np.floor(np.asarray(theta, dtype=float) / step + 1e-9) * step, 10)


def download_thetas(t: int, staleness: np.ndarray, config: CaesarConfig) -> np.ndarray:
    """θ_d = (1 − δ/t)·θ_d_max snapped down; 0 for δ ≥ t (never synced)."""
    delta = np.asarray(staleness, dtype=float)
    if not config.staleness_rule:
        return np.where(delta >= t, 0.0, config.theta_d_max)
    theta = np.clip(1.0 - delta / float(t), 0.0, 1.0) * config.theta_d_max
    return snap_down(theta, config.ratio_grid_step)


def importance_ranks(score: np.ndarray) -> np.ndarray:
    """Rank 1 = highest score; ties by position (stable)."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def upload_thetas(score: np.ndarray, config: CaesarConfig) -> np.ndarray:
    """θ_u from importance rank: θ_u_min for rank 1, θ_u_max for rank N (N = 1: θ_u_min)."""
    n = len(score)
    lo, hi = config.theta_u_min, config.theta_u_max
    if n == 0:
        return np.zeros(0)
    if not config.importance_rule:
        return np.full(n, round((lo + hi) / 2, 10))
    ranks = importance_ranks(score)
    theta = lo + (hi - lo) * (ranks - 1) / max(n - 1, 1)
    if config.tie_policy == "mean":
        s = np.asarray(score, dtype=float)
        for value in np.unique(s):
            tied = s == value
            if tied.sum() > 1:
                theta[tied] = theta[tied].mean()
    return np.round(theta, 10)


# ---------------------------------------------------------------- batches
def batch_caps(problem: FedCompressProblem, idx: np.ndarray, config: CaesarConfig) -> np.ndarray:
    """cap_i: largest grid batch within memory (and samples, by default), never below β_min when it fits."""
    grid = np.asarray(problem.batch_grid, dtype=np.int64)
    cap = problem.batch_cap()[idx]
    bad = np.flatnonzero(cap < grid[0])
    if bad.size:
        i = int(idx[bad[0]])
        need = problem.train_fixed_bytes + problem.train_bytes_per_sample * grid[0]
        raise InfeasibleError(
            f"device {problem.client_ids[i]} cannot train at the smallest batch {grid[0]}: it needs "
            f"{need / 2**20:.3f} MiB for training, it has {problem.memory_bytes[i] / 2**20:.3f} MiB",
            f"raise its memory to at least {math.ceil(need / 2**10)}KiB or start the batch grid lower")
    if config.cap_batch_at_samples:
        n = problem.samples[idx]
        by_samples = np.array([grid[grid <= max(int(v), int(grid[0]))].max() for v in n], dtype=np.int64)
        cap = np.minimum(cap, by_samples)
    return cap


def rule_batches(problem: FedCompressProblem, idx: np.ndarray, fixed_s: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The spec's T* rule; `fixed_s` = comm time c_i of each device (s)."""
    grid = np.asarray(problem.batch_grid, dtype=float)
    tau = problem.local_iters
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    t_max = tau * (a + b * cap) + fixed_s
    t_min = tau * (a + b * grid[0]) + fixed_s
    t_star = max(float(t_max.min()), float(t_min.max()))
    return grid_batches_under(problem, idx, fixed_s, cap, t_star)


def grid_batches_under(problem: FedCompressProblem, idx: np.ndarray, fixed_s: np.ndarray, cap: np.ndarray,
                       t_round: float) -> np.ndarray:
    """β_i = max{β ∈ grid, β ≤ cap_i : M_i(β) ≤ T} (β_min where none fits)."""
    grid = np.asarray(problem.batch_grid, dtype=float)
    tau = problem.local_iters
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    m = tau * (a[:, None] + b[:, None] * grid[None, :]) + fixed_s[:, None]       # (n, G)
    ok = (m <= t_round * (1 + 1e-9)) & (grid[None, :] <= cap[:, None])
    ok[:, 0] = True
    last = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return grid[last].astype(np.int64)


def convex_batches(problem: FedCompressProblem, idx: np.ndarray, fixed_s: np.ndarray,
                   cap: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The Charnes–Cooper LP in cvxpy; returns (grid batches, LP's T (s), LP samples/s bound)."""
    import cvxpy as cp

    tau = float(problem.local_iters)
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    beta_min = float(problem.batch_grid[0])
    n = len(idx)
    y = cp.Variable(n)               # β_i / T
    s = cp.Variable(nonneg=True)     # 1 / T
    constraints = [
        (tau * a + fixed_s) * s + tau * cp.multiply(b, y) <= 1.0,   # [Constraint] M_i(β_i) ≤ T
        y >= beta_min * s,                                          # [Constraint] β_i ≥ β_min
        y <= cap.astype(float) * s,                                 # [Constraint] β_i ≤ cap_i
    ]
    prob = cp.Problem(cp.Maximize(cp.sum(y)), constraints)
    prob.solve(solver=cp.CLARABEL)
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or s.value is None or float(s.value) <= 0:
        raise RuntimeError(f"batch LP ended with status {prob.status}")
    t_lp = 1.0 / float(s.value)
    bound = tau * float(np.sum(y.value))
    return grid_batches_under(problem, idx, fixed_s, cap, t_lp), t_lp, bound


def fixed_batches(problem: FedCompressProblem, cap: np.ndarray, batch: int) -> np.ndarray:
    """One batch for all, clipped to each cap and snapped down to the grid (β_min at least)."""
    grid = np.asarray(problem.batch_grid, dtype=np.int64)
    want = np.minimum(cap, batch)
    return np.array([grid[grid <= max(int(w), int(grid[0]))].max() for w in want], dtype=np.int64)


# ---------------------------------------------------------------- budgeted download
def theta_grid(config: CaesarConfig) -> np.ndarray:
    """Θ = {0, step, ..., θ_d_max} (θ_d_max included even off the step)."""
    k = int(math.floor(config.theta_d_max / config.ratio_grid_step + 1e-9))
    grid = [round(j * config.ratio_grid_step, 10) for j in range(k + 1)]
    if grid[-1] < config.theta_d_max - 1e-12:
        grid.append(round(config.theta_d_max, 10))
    return np.array(grid)


def proxy_deviation(thetas: np.ndarray, staleness: np.ndarray, t: int) -> np.ndarray:
    """Dev_i(θ) ≈ θ·δ_i/t: fraction sent as signs times relative staleness (a PROXY, labelled in plans).

    Used when no measured deviation table is given (the server's shadow models live in the runtime).
    """
    return np.asarray(thetas, dtype=float)[None, :] * (np.asarray(staleness, dtype=float)[:, None] / float(t))


def budget_problem(problem: FedCompressProblem, config: CaesarConfig, deviation: np.ndarray,
                   forced_full: np.ndarray) -> DownloadBudgetProblem:
    """The round's multiple-choice knapsack over `theta_grid(config)`."""
    thetas = theta_grid(config)
    numels, mnc = tuple(problem.tensor_numels), problem.min_compress_numel
    return DownloadBudgetProblem(thetas=thetas,
                                 theta_bytes=np.array([download_bytes(numels, 1.0 - th, mnc) for th in thetas], dtype=float),
                                 deviation=np.asarray(deviation, dtype=float), forced_full=np.asarray(forced_full, dtype=bool),
                                 budget_bytes=float(problem.down_budget_bytes or 0.0))


def efficient_frontier(bytes_of: np.ndarray, dev_row: np.ndarray, allowed: list[int]) -> list[int]:
    """Grid positions on the lower convex hull of (bytes, Dev) among `allowed`, cheapest first.

    Along the returned path bytes rise, Dev falls and the deviation saved per extra byte falls, so
    taking hull edges in order of that gain is the classic greedy for a multiple-choice knapsack.
    """
    pts = sorted(allowed, key=lambda c: (bytes_of[c], dev_row[c]))
    frontier: list[int] = []
    for c in pts:                        # drop dominated points: more bytes for no less deviation
        if frontier and dev_row[c] >= dev_row[frontier[-1]]:
            continue
        frontier.append(c)
    hull: list[int] = []
    for c in frontier:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # keep b only if the gain a→b beats the gain b→c (convexity)
            lhs = (dev_row[a] - dev_row[b]) * (bytes_of[c] - bytes_of[b])
            rhs = (dev_row[b] - dev_row[c]) * (bytes_of[b] - bytes_of[a])
            if lhs <= rhs:
                hull.pop()
            else:
                break
        hull.append(c)
    return hull


def greedy_budget(bp: DownloadBudgetProblem) -> BudgetSolution:
    """Budgeted download ratios (Caesar's greedy, refined as in docs/fed-compress.md, "Departures"): start
    every device at θ_max, then spend the budget where it saves the most deviation per byte.

    Phase 1 walks each device's (bytes, Dev) lower convex hull, one edge at a time, largest saving per
    byte first (the spec steps one grid ratio at a time, but bytes are not linear in θ: the dense
    encoding at θ = 0 drops the index and sign overheads, so the last step is cheap and a one-step
    greedy stalls before it). Phase 2 spends what is left on the single move (any grid ratio of any
    device) that saves the most deviation and still fits. Phase 3 applies the best exchange (one
    device up, another down; on rounds of at most MAX_MULTI_EXCHANGE_CELLS device-ratio cells also
    one up and several down) while one lowers Σ Dev; phases 2-3 repeat until neither improves. This
    local search is our addition: the one-step greedy alone was up to 18 % off CP-SAT on rounds of
    3-12 devices, where one grid step is a large share of the budget. Raises InfeasibleError when even θ_max everywhere (θ = 0 where forced) exceeds the budget.
    """
    watch = Stopwatch()
    n, g = bp.deviation.shape
    bytes_of = bp.bytes_per_theta()
    dev = bp.deviation
    pos = np.where(bp.forced_full, 0, g - 1)
    used = float(bytes_of[pos].sum())
    limit = bp.budget_bytes * (1 + 1e-12)
    if used > limit:
        raise InfeasibleError(
            f"the downlink budget of {bp.budget_bytes:.0f} B per round is below the {used:.0f} B that maximal "
            "compression needs for this round's devices",
            f"raise down_budget_bytes to at least {math.ceil(used)}")
    hulls = [[0] if bp.forced_full[i] else efficient_frontier(bytes_of, dev[i], list(range(g))) for i in range(n)]
    step = [0] * n                       # position along the hull
    for i in range(n):                   # the hull starts at its cheapest point, θ_max (or 0 when forced)
        pos[i] = hulls[i][0]
    used = float(bytes_of[pos].sum())
    heap: list[tuple[float, int, int]] = []

    def push(i: int) -> None:
        k = step[i]
        if k + 1 >= len(hulls[i]):
            return
        a, b = hulls[i][k], hulls[i][k + 1]
        heapq.heappush(heap, (-(dev[i, a] - dev[i, b]) / max(bytes_of[b] - bytes_of[a], 1e-12), i, k))

    for i in range(n):
        push(i)
    while heap:
        _, i, k = heapq.heappop(heap)
        if step[i] != k:
            continue
        a, b = hulls[i][k], hulls[i][k + 1]
        extra = bytes_of[b] - bytes_of[a]
        if used + extra > limit:
            continue                     # does not fit now and never will (used only grows)
        used += extra
        pos[i], step[i] = b, k + 1
        push(i)
    # Phases 2 and 3, repeated while either improves: fill the remainder with the best single move that
    # fits; apply the best pairwise exchange (one device up, another down) that lowers Σ Dev.
    for _ in range(4 * n * g):
        room = limit - used
        extra = bytes_of[None, :] - bytes_of[pos][:, None]                # (n, g)
        saving = dev[np.arange(n), pos][:, None] - dev                     # (n, g)
        ok = (extra <= room) & (saving > 1e-15) & ~bp.forced_full[:, None]
        if ok.any():
            i, c = np.unravel_index(int(np.argmax(np.where(ok, saving, -np.inf))), ok.shape)
            used += float(extra[i, c])
            pos[i] = c
            continue
        move = _best_exchange(bytes_of, dev, pos, bp.forced_full, room)
        if move is None and n * g <= MAX_MULTI_EXCHANGE_CELLS:
            move = _best_multi_exchange(bytes_of, dev, pos, bp.forced_full, room)
        if move is None:
            break
        for i, c in move:
            used += float(bytes_of[c] - bytes_of[pos[i]])
            pos[i] = c
    return bp.solution(pos, Status.FEASIBLE, watch.elapsed())


def _best_exchange(bytes_of: np.ndarray, dev: np.ndarray, pos: np.ndarray, forced: np.ndarray,
                   room: float) -> tuple[int, int, int, int] | None:
    """The exchange (i → c, j → d, i ≠ j) that lowers Σ Dev the most and fits, or None.

    For every upgrade (i, c) needing `need` more bytes than the room, the cheapest downgrade freeing at
    least `need` comes from a suffix minimum over downgrades sorted by bytes freed (the best and the
    best of another device, so that j ≠ i). O(N·|Θ|·log(N·|Θ|)).
    """
    n, g = dev.shape
    cur_b, cur_d = bytes_of[pos], dev[np.arange(n), pos]
    delta_b = bytes_of[None, :] - cur_b[:, None]           # (n, g): extra bytes of moving i to c
    delta_d = dev - cur_d[:, None]                           # (n, g): change of Dev
    free = ~forced[:, None] & np.ones((n, g), dtype=bool)
    up_i, up_c = np.nonzero(free & (delta_b > 0) & (delta_d < 0))
    dn_i, dn_c = np.nonzero(free & (delta_b < 0))
    if up_i.size == 0 or dn_i.size == 0:
        return None
    freed = -delta_b[dn_i, dn_c]
    loss = delta_d[dn_i, dn_c]
    order = np.argsort(freed, kind="stable")
    freed, loss, dn_i, dn_c = freed[order], loss[order], dn_i[order], dn_c[order]
    m = len(freed)
    # suffix minima: best (loss, index) and best of a different device
    best1 = np.empty(m, dtype=np.int64)
    best2 = np.full(m, -1, dtype=np.int64)
    best1[-1] = m - 1
    for k in range(m - 2, -1, -1):
        b1, b2 = best1[k + 1], best2[k + 1]
        if loss[k] < loss[b1]:
            best1[k] = k
            best2[k] = b1 if dn_i[b1] != dn_i[k] else b2
        else:
            best1[k] = b1
            if dn_i[k] != dn_i[b1] and (b2 < 0 or loss[k] < loss[b2]):
                best2[k] = k
            else:
                best2[k] = b2
    need = delta_b[up_i, up_c] - room
    start = np.searchsorted(freed, need - 1e-9, side="left")
    best = None
    for u in np.flatnonzero((need > 0) & (start < m)):
        k = start[u]
        cand = best1[k] if dn_i[best1[k]] != up_i[u] else best2[k]
        if cand < 0:
            continue
        gain = -delta_d[up_i[u], up_c[u]] - loss[cand]
        if gain > 1e-12 and (best is None or gain > best[0]):
            best = (gain, int(up_i[u]), int(up_c[u]), int(dn_i[cand]), int(dn_c[cand]))
    return None if best is None else [(best[1], best[2]), (best[3], best[4])]


def _best_multi_exchange(bytes_of: np.ndarray, dev: np.ndarray, pos: np.ndarray, forced: np.ndarray,
                         room: float) -> list[tuple[int, int]] | None:
    """One device up, paid for by several others going down (each by one move, cheapest loss per freed
    byte first); the best such exchange that lowers Σ Dev, or None. O((N·|Θ|)² log) — small rounds only.
    """
    n, g = dev.shape
    cur_b, cur_d = bytes_of[pos], dev[np.arange(n), pos]
    delta_b = bytes_of[None, :] - cur_b[:, None]
    delta_d = dev - cur_d[:, None]
    movable = ~forced
    best = None
    for i in np.flatnonzero(movable):
        for c in np.flatnonzero((delta_b[i] > room) & (delta_d[i] < 0)):
            need = delta_b[i, c] - room
            # each other device's best downgrade by loss per freed byte
            picks = []
            for j in np.flatnonzero(movable):
                if j == i:
                    continue
                down = np.flatnonzero(delta_b[j] < 0)
                if down.size == 0:
                    continue
                rate = delta_d[j, down] / -delta_b[j, down]
                d = int(down[np.argmin(rate)])
                picks.append((float(rate.min()), int(j), d))
            picks.sort()
            freed, loss, moves = 0.0, 0.0, [(int(i), int(c))]
            for _, j, d in picks:
                if freed >= need:
                    break
                freed += -delta_b[j, d]
                loss += delta_d[j, d]
                moves.append((j, d))
            gain = -delta_d[i, c] - loss
            if freed >= need and gain > 1e-12 and (best is None or gain > best[0]):
                best = (gain, moves)
    return None if best is None else best[1]


# ---------------------------------------------------------------- one round, a schedule
def plan_round(problem: FedCompressProblem, config: CaesarConfig, t: int, idx: np.ndarray,
               last_sync: np.ndarray, deviation: np.ndarray | None = None) -> RoundPlan:
    """Caesar's decisions for round `t` (1-based) and selected devices `idx` given each device's last sync.

    `deviation` ((len(idx), |Θ|), Dev_i(θ) on `theta_grid(config)`) is used in budgeted mode; without
    it the staleness proxy is used and the plan says so.
    """
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return RoundPlan(idx, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                         0.0, 0.0, None)
    staleness = t - np.asarray(last_sync, dtype=np.int64)[idx]
    proxy = False
    if config.mode == "budget":
        if problem.down_budget_bytes is None:
            raise ValueError("budget mode needs problem.down_budget_bytes")
        if deviation is None:
            deviation, proxy = proxy_deviation(theta_grid(config), staleness, t), True
        # No device holds a model before its first download (docs/fed-compress.md, "Accounting"): a
        # never-synced device is forced to the full model, and its bytes come out of the budget first.
        never = np.asarray(last_sync, dtype=np.int64)[idx] == 0
        theta_d = greedy_budget(budget_problem(problem, config, deviation, never)).thetas
    else:
        theta_d = download_thetas(t, staleness, config)
    skew = label_skew(problem.label_counts, config.reference_dist, config.kl_smoothing)
    score = importance(problem.samples, skew, config.importance)[idx]
    theta_u = upload_thetas(score, config)
    keep_down = np.round(1.0 - theta_d, 10)
    keep_up = np.round(1.0 - theta_u, 10)

    numels, mnc = tuple(problem.tensor_numels), problem.min_compress_numel
    bd = np.array([download_bytes(numels, k, mnc) for k in keep_down], dtype=float)
    bu = np.array([upload_bytes(numels, k, mnc) for k in keep_up], dtype=float)
    fixed_s = comm_time_s(problem, idx, bd, bu)
    cap = batch_caps(problem, idx, config)
    lp_bound = None
    if config.batch_method == "convex":
        batch, _, lp_bound = convex_batches(problem, idx, fixed_s, cap)
    elif config.batch_method == "rule":
        batch = rule_batches(problem, idx, fixed_s, cap)
    elif config.batch_method == "sweep":
        from solvers.fed_compress.exact import sweep_batches
        batch = sweep_batches(problem, idx, fixed_s, cap)
    else:
        batch = fixed_batches(problem, cap, config.fixed_batch)
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    times = problem.local_iters * (a + b * batch) + fixed_s
    t_round = float(times.max())
    sps = problem.local_iters * float(batch.sum()) / t_round
    return RoundPlan(idx, keep_down, keep_up, batch, staleness, t_round, sps, lp_bound, proxy)


def solve(problem: FedCompressProblem, config: CaesarConfig | None = None) -> FedCompressSolution:
    """Caesar over the whole schedule: plan round t from the state after rounds 1..t−1.

    Every selected device syncs in its round (last_sync = t), so staleness grows for the others.
    Objective: total traffic of the schedule (B).
    """
    config = config or CaesarConfig()
    config.check()
    watch = Stopwatch()
    R, N = problem.num_rounds, problem.num_clients
    keep_down, keep_up = np.zeros((R, N)), np.zeros((R, N))
    batch = np.zeros((R, N), dtype=np.int64)
    last_sync = np.zeros(N, dtype=np.int64)
    trace = []
    proxy = False
    gaps = []
    for r, sel in enumerate(problem.selected):
        t = r + 1
        plan = plan_round(problem, config, t, np.asarray(sel, dtype=np.int64), last_sync)
        keep_down[r, plan.idx], keep_up[r, plan.idx], batch[r, plan.idx] = plan.keep_down, plan.keep_up, plan.batch
        last_sync[plan.idx] = t
        proxy = proxy or plan.deviation_proxy
        values = {"selected": int(plan.idx.size), "round_time_s": plan.round_time_s,
                  "samples_per_s": plan.samples_per_s,
                  "mean_keep_down": float(plan.keep_down.mean()) if plan.idx.size else 0.0,
                  "mean_keep_up": float(plan.keep_up.mean()) if plan.idx.size else 0.0}
        if plan.lp_samples_per_s:
            values["lp_samples_per_s"] = plan.lp_samples_per_s
            gaps.append(1.0 - plan.samples_per_s / plan.lp_samples_per_s)
        trace.append(TraceEvent("round", t, values))
    metrics = evaluate(problem, keep_down, keep_up, batch)
    params = {"method": "caesar", **asdict(config)}
    if gaps:
        params["max_batch_gap_to_lp"] = float(max(gaps))
    return FedCompressSolution(status=Status.FEASIBLE, objective=metrics.total_traffic_bytes, metrics=metrics,
                               wall_time_s=watch.elapsed(), trace=tuple(trace), params=params,
                               keep_down=keep_down, keep_up=keep_up, batch=batch, down_codec="caesar",
                               up_codec="topk", recovery=config.recovery, deviation_proxy=proxy)
