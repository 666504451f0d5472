"""Prefill: where each MoE layer's experts compute while the prompt is processed (docs §12).

A prompt of T tokens (batch x prompt length) routes about T k / N tokens to each expert, so the regime
differs from decode: an expert that is not resident can be computed on the host (FLOP-bound once it sees
many tokens) or streamed over the link and computed on the device. Per layer and phase the plan decides
which non-resident experts stream and which compute on the host; copies overlap device compute.

Routing: expert e of layer i is picked by a token with probability q_e = min(1, k p_e) (p_e its share of
activations in the trace); over a chunk of T tokens it is used with probability u_e = 1 - (1 - q_e)^T and
then sees t_e = T q_e / u_e tokens. Times (s), expected over that routing:
  device    d_e = max(t_e F / F_dev, t_x)          (FLOP-bound, or reading its bytes)
  host      h_e = max(t_e F / F_host, U / H)
  link      tau = U / BW
A layer with resident set R, streamed set S and host set H (S u H = the rest) takes
  attn_i + max( sum_H u h,  sum_S u tau + d_last,  sum_{R u S} u d,  (sum_H u + sum_S u) U / P )
(the host and the link read DRAM; the device computes resident experts while copies land). Chunks of
`ubatch` tokens are processed one after another, each copying its own experts (llama.cpp's ubatches);
the plan processes the whole prompt as one chunk per layer.

Rules (`PREFILL_RULES`):
  plan         stream the non-resident experts with the most tokens, the rest on the host: the best split
               point per layer (exact over it)
  host         every non-resident expert on the host (always-host)
  stream       every non-resident used expert copied (always-stream)
  llamacpp     llama.cpp's default: weights in host memory are copied for the op when the ubatch has at least
               32 tokens (only the used experts), else computed on the host; ubatch 512
  ik_llamacpp  ik_llama.cpp's MoE rule: copy when the ubatch has at least (N / k) x 32 tokens
  decode_plan  today's decode plan unchanged: its host layers compute on the host, its link layers stream,
               its split layers split every miss at its decode fraction
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.moe_offload.problem import MoeOffloadProblem

PREFILL_RULES = ("plan", "host", "stream", "llamacpp", "ik_llamacpp", "decode_plan")
LLAMACPP_MIN_BATCH = 32          # ggml's offload_op threshold for weights in host memory (tokens per ubatch)
DEFAULT_UBATCH = 512             # llama.cpp's default physical batch (-ub)


@dataclass(frozen=True)
class PrefillLayer:
    """One layer's prefill decision and expected figures."""

    time_s: float
    streamed: float            # expected experts copied per chunk
    on_host: float             # expected experts computed on the host per chunk
    link_bytes: float          # per prompt
    token_threshold: float     # experts with at least this many tokens stream (inf: none stream)
    chunks: int
    split: float | None = None  # every non-resident expert split at this copied fraction instead


@dataclass(frozen=True)
class PrefillResult:
    """TTFT (s) of a rule for a configuration, and the per-layer decisions."""

    ttft_s: float
    layers: tuple[PrefillLayer, ...]
    rule: str


def routing(problem: MoeOffloadProblem, layer: int, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(u_e, t_e): probability each expert is used by a chunk of `tokens` tokens, and its tokens when used."""
    p = np.asarray(problem.popularity[layer], dtype=float)
    q = np.minimum(1.0, problem.top_k * p)
    u = 1.0 - (1.0 - q) ** tokens
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(u > 0, tokens * q / np.where(u > 0, u, 1.0), 0.0)
    return u, t


def _chunk_time(problem: MoeOffloadProblem, layer: int, tokens: int, resident: np.ndarray,
                stream: np.ndarray, split: float | None = None) -> tuple[float, float, float]:
    """Expert-phase time of one chunk (s), expected streamed and host experts. `stream` marks the
    non-resident experts that are copied; with `split` every non-resident expert is split instead."""
    u, t = routing(problem, layer, tokens)
    F = problem.expert_flops_per_token
    d = np.maximum(t * F / problem.device_flops_per_s, problem.expert_compute_s)
    host_rate = problem.expert_bytes / problem.host_expert_compute_s if problem.host_expert_compute_s else None
    h = np.maximum(t * F / problem.host_flops_per_s, problem.host_expert_compute_s) if (
        host_rate and problem.host_flops_per_s) else np.full(len(u), np.inf)
    tau = problem.transfer_s
    nonres = ~resident
    if split is not None:
        a = float(split)
        host_t = float((u * nonres * (1 - a) * np.where(nonres, h, 0.0)).sum())
        link_t = float((u * nonres).sum()) * a * tau
        dev_t = float((u * resident * d).sum() + (u * nonres * a * d).sum())
        last = a * float(d[nonres].max()) if nonres.any() else 0.0
        dram = float((u * nonres).sum()) * problem.expert_bytes / problem.host_dram_bytes_per_s if problem.host_dram_bytes_per_s else 0.0
        return max(host_t, link_t + last if link_t > 0 else 0.0, dev_t, dram), float((u * nonres).sum()) * (a > 0), float((u * nonres).sum()) * (a < 1)
    s = nonres & stream
    hs = nonres & ~stream
    host_t = float((u * hs * np.where(hs, h, 0.0)).sum())
    link_t = float((u * s).sum()) * tau
    dev_t = float((u * (resident | s) * d).sum())
    last = float(d[s].max()) if s.any() else 0.0
    dram = float((u * nonres).sum()) * problem.expert_bytes / problem.host_dram_bytes_per_s if problem.host_dram_bytes_per_s else 0.0
    return max(host_t, link_t + last if s.any() else 0.0, dev_t, dram), float((u * s).sum()), float((u * hs).sum())


def layer_prefill(problem: MoeOffloadProblem, layer: int, resident: np.ndarray, rule: str,
                  split: float | None = None, mode: str = "link") -> PrefillLayer:
    """One layer's prefill under `rule` with the given resident experts (bool per expert)."""
    T = int(problem.prompt_tokens)
    if rule in ("llamacpp", "ik_llamacpp"):
        ub = int(problem.ubatch)
        sizes = [ub] * (T // ub) + ([T % ub] if T % ub else [])
    else:
        sizes = [T]
    total = streamed = host = link = 0.0
    threshold = np.inf
    chose_split = split if rule == "decode_plan" and mode == "split" else None
    for n in sizes:
        _, t = routing(problem, layer, n)
        nonres = ~resident
        if rule == "host" or (rule == "decode_plan" and mode == "host"):
            stream = np.zeros(len(t), dtype=bool)
        elif rule == "stream" or (rule == "decode_plan" and mode == "link"):
            stream = np.ones(len(t), dtype=bool)
        elif rule == "llamacpp":
            stream = np.full(len(t), n >= LLAMACPP_MIN_BATCH)
        elif rule == "ik_llamacpp":
            stream = np.full(len(t), n >= problem.num_experts / problem.top_k * LLAMACPP_MIN_BATCH)
        elif rule == "decode_plan" and mode == "split":
            time_s, s_n, h_n = _chunk_time(problem, layer, n, resident, np.zeros(len(t), dtype=bool), split)
            total += time_s
            streamed += s_n
            host += h_n
            link += s_n * (split or 0.0) * problem.expert_bytes
            continue
        elif rule == "plan":
            # stream the experts with the most tokens: every split point of that order at once (cumulative sums)
            u, _ = routing(problem, layer, n)
            cand = np.array([o for o in np.argsort(-t, kind="stable") if nonres[o]], dtype=np.int64)
            F = problem.expert_flops_per_token
            d = np.maximum(t * F / problem.device_flops_per_s, problem.expert_compute_s)
            h = (np.maximum(t * F / problem.host_flops_per_s, problem.host_expert_compute_s)
                 if problem.host_expert_compute_s and problem.host_flops_per_s else np.full(len(t), np.inf))
            uc, dc, hc = u[cand], d[cand], h[cand]
            zero = np.zeros(1)
            link_k = np.concatenate([zero, np.cumsum(uc)]) * problem.transfer_s
            last_k = np.concatenate([zero, np.maximum.accumulate(dc)]) if len(cand) else zero
            dev_k = float((u * resident * d).sum()) + np.concatenate([zero, np.cumsum(uc * dc)])
            with np.errstate(invalid="ignore"):
                host_k = np.concatenate([np.cumsum((uc * hc)[::-1])[::-1], zero]) if len(cand) else zero
            dram = float((u * nonres).sum()) * problem.expert_bytes / problem.host_dram_bytes_per_s \
                if problem.host_dram_bytes_per_s else 0.0
            times = np.maximum.reduce([np.nan_to_num(host_k, nan=np.inf), np.where(np.arange(len(link_k)) > 0,
                                       link_k + last_k, 0.0), dev_k, np.full(len(link_k), dram)])
            k = int(np.argmin(times))
            # or split every non-resident expert's rows between the link + device and the host (as split decode
            # layers do), at a few fractions and the layer's decode fraction
            fractions = sorted({0.125, 0.25, 0.5, 0.75} | ({float(split)} if split is not None else set()))
            splits = [(_chunk_time(problem, layer, n, resident, np.zeros(len(t), dtype=bool), a), a) for a in fractions
                      if 0.0 < a < 1.0 and problem.host_expert_compute_s and problem.host_flops_per_s]
            best_split = min(splits, key=lambda v: v[0][0], default=None)
            if best_split is not None and best_split[0][0] < float(times[k]) * (1 - 1e-12):
                (time_s, s_n, h_n), a = best_split
                total += time_s
                streamed += s_n
                host += h_n
                link += s_n * a * problem.expert_bytes
                chose_split = a
                continue
            if k:
                threshold = min(threshold, float(t[cand[k - 1]]))
            s_n = float(uc[:k].sum())
            total += float(times[k])
            streamed += s_n
            host += float(uc[k:].sum())
            link += s_n * problem.expert_bytes
            continue
        else:
            raise ValueError(f"unknown prefill rule {rule} (mode {mode})")
        time_s, s_n, h_n = _chunk_time(problem, layer, n, resident, stream)
        if stream.any() and rule != "host":
            threshold = 0.0
        total += time_s
        streamed += s_n
        host += h_n
        link += s_n * problem.expert_bytes
    attn = float(problem.prefill_attention_s[layer]) if problem.prefill_attention_s is not None else 0.0
    return PrefillLayer(attn + total, streamed / len(sizes), host / len(sizes), link, threshold, len(sizes), chose_split)


def resident_sets(problem: MoeOffloadProblem, capacities: np.ndarray, thetas: np.ndarray) -> list[np.ndarray]:
    """Whole experts resident per layer in prefill: the most popular floor(C theta) (tops count in proportion)."""
    out = []
    for i in range(problem.num_layers):
        c = int(np.floor(float(capacities[i]) * float(thetas[i]) + 1e-9))
        order = np.argsort(-np.asarray(problem.popularity[i]), kind="stable")
        r = np.zeros(problem.num_experts, dtype=bool)
        r[order[:c]] = True
        out.append(r)
    return out


def prefill(problem: MoeOffloadProblem, capacities: np.ndarray, thetas: np.ndarray, rule: str,
            modes: list[str] | None = None, split: np.ndarray | None = None) -> PrefillResult:
    """TTFT of a configuration under a prefill rule (the first token's decode step is not included)."""
    res = resident_sets(problem, capacities, thetas)
    layers = []
    for i in range(problem.num_layers):
        mode = modes[i] if modes is not None else "link"
        a = float(split[i]) if split is not None and np.isfinite(split[i]) else None
        layers.append(layer_prefill(problem, i, res[i], rule, a, mode))
    ttft = float(sum(l.time_s for l in layers)) + float(problem.prefill_other_s)
    return PrefillResult(ttft, tuple(layers), rule)


def prefill_curve(problem: MoeOffloadProblem, layer: int, units: np.ndarray) -> np.ndarray:
    """The plan's prefill time of `layer` (s) at each budget in `units` (whole experts that fit are resident)."""
    out = np.zeros(len(units))
    order = np.argsort(-np.asarray(problem.popularity[layer]), kind="stable")
    cache: dict[int, float] = {}
    for j, x in enumerate(units):
        c = int(min(problem.num_experts, np.floor(x * problem.budget_unit_bytes / problem.expert_bytes + 1e-9)))
        if c not in cache:
            r = np.zeros(problem.num_experts, dtype=bool)
            r[order[:c]] = True
            cache[c] = layer_prefill(problem, layer, r, "plan").time_s
        out[j] = cache[c]
    return out


def break_even_tokens(problem: MoeOffloadProblem, layer: int, resident: np.ndarray,
                      grid: tuple[int, ...] = tuple(2 ** j for j in range(17))) -> int | None:
    """The smallest prompt (tokens, on a power-of-two grid) at which streaming every non-resident used
    expert beats computing them all on the host in this layer; None if it never does on the grid."""
    import dataclasses

    for n in grid:
        q = dataclasses.replace(problem, prompt_tokens=n)
        if layer_prefill(q, layer, resident, "stream").time_s < layer_prefill(q, layer, resident, "host").time_s:
            return n
    return None


def ttft_lower_bound(problem: MoeOffloadProblem) -> float:
    """A lower bound on the analytic TTFT (s) of any placement and any prefill rule: attention on the device, and
    per layer the used experts' work split perfectly between the device and the host (the link free, every
    expert resident if that helps): min over fractions x_e of max(sum x_e u_e d_e, sum (1 - x_e) u_e h_e)."""
    T = int(problem.prompt_tokens)
    total = float(problem.prefill_other_s)
    F = problem.expert_flops_per_token
    for i in range(problem.num_layers):
        u, t = routing(problem, i, T)
        d = u * np.maximum(t * F / problem.device_flops_per_s, problem.expert_compute_s)
        if problem.host_expert_compute_s and problem.host_flops_per_s:
            h = u * np.maximum(t * F / problem.host_flops_per_s, problem.host_expert_compute_s)
            # fractional balance: give the host the experts it is relatively best at until the sides meet
            order = np.argsort(h / np.maximum(d, 1e-300), kind="stable")
            dev_left = float(d.sum())
            host = 0.0
            best = dev_left
            for e in order:
                if host + h[e] <= dev_left - d[e]:
                    host += h[e]
                    dev_left -= d[e]
                    best = dev_left
                else:
                    # split expert e: x on the device, 1 - x on the host, both sides equal
                    x = (host + h[e] - (dev_left - d[e])) / (d[e] + h[e])
                    best = dev_left - d[e] + x * d[e]
                    break
            expert = max(best, 0.0)
        else:
            expert = float(d.sum())
        attn = float(problem.prefill_attention_s[i]) if problem.prefill_attention_s is not None else 0.0
        total += attn + expert
    return total
