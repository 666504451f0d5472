"""Synthetic routing traces with explicit, documented parameters (no full-size weights are reachable).

Generative model, per MoE layer l (layers are generated independently, each with its own seed stream):
  * Popularity: expert popularity follows a Zipf law with exponent `zipf_s_l`, over a layer-specific
    random permutation of expert ids. `zipf_s_l = zipf_s * (1 + layer_variation * u_l)`, u_l ~ U[-1, 1].
  * Popularity drift: on average `popularity_swaps` times per token, the popularities of two random
    experts are swapped, so that what is hot changes slowly (frequency-only caches fall behind).
  * Working set (temporal locality): each layer keeps a working set of `working_set` experts (drawn
    by popularity). Each token, every member is replaced with probability `drift` by a new expert
    drawn by popularity: this is the slowly changing "topic" of the text.
  * Each token picks k distinct experts: a slot comes from the working set with probability
    `locality` (uniform over unused members), otherwise from the popularity law.
  * Predictor: for layers l >= 1, the k_pf predicted experts keep each true expert with probability
    `recall_l` and replace it by a popularity draw otherwise; recall is `recall_mid` in the middle
    layers and `recall_edge` in the first and last `edge_layers` (the summaries report a weaker
    predictor at the head and tail). Layer 0 has no prediction.

  * Sequences: the trace holds `sequences` independent sequences of tokens // sequences steps each (other
    prompts). Popularity (the router's preference) is a property of the model and is shared; each sequence
    starts from it again and draws its own working set, so sequences differ in topic, not in the model.
    Batch decode and held-out scoring use them (`profilers.moe.batch_view`, `split_parts`).

Curve shape: with `working_set` near the per-token working set (a few times k) and high `locality`,
a dynamic cache thrashes below that capacity and catches the working set above it, so h(C) is
convex at small C (S-shaped). That is the shape under which an interior split ratio pays
(MoEpic's cost model; docs/moe-offload.md §3.1).
Pure-popularity traces (`locality = 0`) give concave curves, for which whole experts are best.

Presets:
  moepic-calibrated  calibrated against the MoEpic summaries' hit rates at 30 of 60 cached experts:
                     LCP ~ 62 %, LFU ~ 61 %, LRU ~ 56 %, random ~ 50 %; parameters scale with N.
  zipf-static        popularity only, no locality (concave hit curves).
  bursty             strong locality, small working set, fast drift (strongly S-shaped curves).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from profilers.moe import RoutingTrace


@dataclass(frozen=True)
class SyntheticTraceParams:
    """Generator parameters; `working_set_frac` is the working set as a fraction of N (at least k+1)."""

    zipf_s: float = 0.6
    layer_variation: float = 0.25
    working_set_frac: float = 0.2
    locality: float = 0.5
    drift: float = 0.02
    popularity_swaps: float = 0.0
    recall_mid: float = 0.85
    recall_edge: float = 0.6
    edge_layers: int = 2
    tokens: int = 2048
    seed: int = 0
    sequences: int = 1


PRESETS: dict[str, SyntheticTraceParams] = {
    "moepic-calibrated": SyntheticTraceParams(zipf_s=0.38, working_set_frac=0.15, locality=0.1, drift=0.02,
                                              popularity_swaps=0.02),
    "zipf-static": SyntheticTraceParams(zipf_s=0.9, locality=0.0, drift=0.0),
    "bursty": SyntheticTraceParams(zipf_s=0.3, working_set_frac=0.15, locality=0.8, drift=0.05),
}


def _draw_distinct(rng: np.random.Generator, cdf: np.ndarray, exclude: set[int], n: int) -> list[int]:
    """`n` distinct draws from the popularity law with cumulative `cdf`, avoiding `exclude`.

    Rejection sampling (exact for the renormalised law); falls back to a direct draw when the
    excluded mass is so large that rejection would be slow.
    """
    out: list[int] = []
    banned = set(exclude)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 64:
            probs = np.diff(np.concatenate([[0.0], cdf]))
            probs[list(banned)] = 0.0
            if probs.sum() <= 0:
                break
            e = int(rng.choice(len(probs), p=probs / probs.sum()))
        else:
            e = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
            e = min(e, len(cdf) - 1)
            if e in banned:
                continue
        out.append(e)
        banned.add(e)
    return out


def generate_trace(num_layers: int, num_experts: int, top_k: int, preset: str = "moepic-calibrated",
                   k_prefetch: int | None = None, model: str = "", **overrides: Any) -> RoutingTrace:
    """Generate a trace (tokens x layers x k) from a preset, with optional parameter overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown trace preset {preset}; known: {', '.join(PRESETS)}")
    params = replace(PRESETS[preset], **overrides)
    kpf = k_prefetch or top_k
    T, L, N, k = params.tokens, num_layers, num_experts, top_k
    n_seq = max(1, min(int(params.sequences), T))
    seq_len = T // n_seq
    T = seq_len * n_seq
    ws = max(k + 1, int(round(params.working_set_frac * N)))
    ws = min(ws, N)
    experts = np.zeros((T, L, k), dtype=np.int16)
    predicted = np.full((T, L, kpf), -1, dtype=np.int16)
    root = np.random.SeedSequence(params.seed)
    for layer, child in enumerate(root.spawn(L)):
        rng = np.random.default_rng(child)
        u = rng.uniform(-1.0, 1.0)
        s = max(0.0, params.zipf_s * (1.0 + params.layer_variation * u))
        ranks = np.arange(1, N + 1, dtype=float)
        pop = ranks ** (-s)
        pop = pop[np.argsort(rng.permutation(N))]  # random identity for each popularity rank
        pop /= pop.sum()
        base = pop.copy()
        cdf = np.cumsum(pop)
        work = _draw_distinct(rng, cdf, set(), ws)
        edge = layer < params.edge_layers or layer >= L - params.edge_layers
        recall = params.recall_edge if edge else params.recall_mid
        for t in range(T):
            if t and t % seq_len == 0:
                # a new sequence (another prompt): the model's popularity again, a working set of its own
                pop = base.copy()
                cdf = np.cumsum(pop)
                work = _draw_distinct(rng, cdf, set(), ws)
            # popularity drift: swap the popularity of two random experts, on average
            # `popularity_swaps` times per token (a slowly changing topic mix)
            n_swaps = rng.poisson(params.popularity_swaps) if params.popularity_swaps > 0 else 0
            for _ in range(n_swaps):
                a, b = rng.integers(N, size=2)
                pop[a], pop[b] = pop[b], pop[a]
            if n_swaps:
                cdf = np.cumsum(pop)
            # drift the working set
            for i in range(len(work)):
                if rng.random() < params.drift:
                    new = _draw_distinct(rng, cdf, set(work), 1)
                    if new:
                        work[i] = new[0]
            chosen: list[int] = []
            for _ in range(k):
                if params.locality > 0 and rng.random() < params.locality:
                    avail = [w for w in work if w not in chosen]
                    if avail:
                        chosen.append(int(avail[int(rng.integers(len(avail)))]))
                        continue
                chosen.extend(_draw_distinct(rng, cdf, set(chosen), 1))
            experts[t, layer] = chosen
            if layer == 0:
                continue
            pred: list[int] = []
            for e in chosen[:kpf]:
                if rng.random() < recall:
                    pred.append(e)
            fill = _draw_distinct(rng, cdf, set(chosen) | set(pred), kpf - len(pred))
            pred.extend(fill)
            predicted[t, layer] = pred
    return RoutingTrace(experts, predicted, N, f"synthetic:{preset}", model,
                        {"preset": preset, **asdict(params), "working_set": ws, "k_prefetch": kpf,
                         "sequence_tokens": seq_len, "sequences": n_seq})
