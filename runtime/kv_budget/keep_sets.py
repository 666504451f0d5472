"""Keep sets of GVote (arXiv 2509.08409) and of the oracle, as boolean masks over the prompt's keys.

Shapes: `keys` (batch, kv_heads, T, d) after RoPE; queries (batch, q_heads, n, d) after RoPE; a keep mask is
(batch, kv_heads, T) bool. With grouped-query attention the query heads h*G .. h*G+G-1 share KV head h, and
a KV head keeps the union of what its query heads need.

GVote per layer and KV head (spec others.md §1):
  1. A_0 = softmax(Q_0 Kᵀ/√d) of the last prompt query; C_0 = its nucleus (smallest set holding p_nuc of
     the mass); B_step = |C_0| (per query head).
  2. N(μ, diag σ²) fitted to the normed hidden states feeding q_proj, the first `n_sink` tokens excluded.
  3. S samples ĥ_s, q̂_s = RoPE_T(W_Q ĥ_s); I_s = top-B_step keys of q̂_s Kᵀ.
  4. keep = C_0 ∪ ⋃ I_s ∪ sinks ∪ recent window.
  5. (ours, optional) successor spans: the keys after the prompt positions the last query attends to most, in
     every layer and head (`add_successor_spans`; docs/kv-budget.md says why and what it measured).
"""
from __future__ import annotations

import math

import torch


def nucleus_mask(probs: torch.Tensor, p_nuc: float) -> torch.Tensor:
    """The smallest set of keys holding at least `p_nuc` of each row's mass.

    probs: (..., T) rows summing to 1. Returns a bool mask (..., T). p_nuc >= 1 keeps every key (the
    floating-point cumulative sum may reach 1 before the last key; the definition keeps them all).
    """
    if p_nuc >= 1.0:
        return torch.ones_like(probs, dtype=torch.bool)
    order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cumsum(order.values, dim=-1) - order.values       # mass strictly above each key
    take = before < p_nuc * order.values.sum(dim=-1, keepdim=True)
    mask = torch.zeros_like(take)
    return mask.scatter(-1, order.indices, take)


def group_union(mask: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(batch, q_heads, T) -> (batch, kv_heads, T): a KV head keeps what any of its query heads keeps."""
    b, hq, t = mask.shape
    return mask.view(b, kv_heads, hq // kv_heads, t).any(dim=2)


def sink_window_mask(t: int, n_sink: int, window: int, like: torch.Tensor) -> torch.Tensor:
    """(T,) bool: the first `n_sink` and the last `window` positions."""
    m = torch.zeros(t, dtype=torch.bool, device=like.device)
    m[: min(n_sink, t)] = True
    if window > 0:
        m[max(0, t - window):] = True
    return m


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split layout LLaMA uses (x: (..., n, d); cos/sin: (n, d))."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def queries_at(module: torch.nn.Module, rotary: torch.nn.Module, hidden: torch.Tensor,
               position: int) -> torch.Tensor:
    """RoPE_position(W_Q h) for rows h of `hidden` (batch, n, hidden) -> (batch, q_heads, n, d)."""
    b, n, _ = hidden.shape
    d = module.head_dim
    q = module.q_proj(hidden).view(b, n, -1, d).transpose(1, 2)
    pos = torch.full((1, n), position, dtype=torch.long, device=hidden.device)
    cos, sin = rotary(q, pos)
    return rope(q, cos[0].to(q.dtype), sin[0].to(q.dtype))


def attention_probs(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """softmax(q Kᵀ/√d) with GQA: queries (b, hq, n, d), keys (b, hkv, T, d) -> (b, hq, n, T) in fp32."""
    b, hq, n, d = queries.shape
    hkv = keys.shape[1]
    k = keys.repeat_interleave(hq // hkv, dim=1).float()
    return torch.softmax(queries.float() @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)


def gvote_keep_mask(module: torch.nn.Module, rotary: torch.nn.Module, hidden: torch.Tensor, keys: torch.Tensor,
                    p_nuc: float, n_samples: int, n_sink: int, window: int, seed: int,
                    cap_fraction: float | None = None, fit: str = "prompt", fit_window: int = 32,
                    budget: str = "top") -> torch.Tensor:
    """GVote's keep mask of one layer (batch, kv_heads, T).

    hidden: (batch, T, hidden) normed inputs of the attention (what q_proj reads); keys: (batch, kv_heads, T, d)
    after RoPE. Samples are drawn one at a time from a generator seeded with `seed`, so the first S samples
    of a run with S' > S are the same S samples (memory is non-decreasing in S). `cap_fraction` (optional)
    limits every head to that share of T, keeping sinks and window first, then the keys the samples and the
    last query score highest.

    Readings of the parts the paper leaves open (spec tags them [design]; `benchmarks/kv_budget_query_model.py`
    measures them against the oracle):
    fit: which hidden states the Gaussian is fitted to and how —
      "prompt": N(μ, diag σ²) over the prompt bar the sinks (the spec's reading);
      "recent": N(μ, diag σ²) over the last `fit_window` prompt tokens;
      "recent_cov": N(μ, Σ) with the full (low-rank) covariance of the last `fit_window` tokens, drawn as
        μ + (X − μ)ᵀ z / √n, z ~ N(0, I_n);
      "prompt_cov": the same over the prompt bar the sinks.
    budget: "top" keeps the top-B_step keys of each sample (the spec), "nucleus" each sample's own p_nuc nucleus.
    """
    return gvote_layer(module, rotary, hidden, keys, p_nuc, n_samples, n_sink, window, seed, cap_fraction, fit,
                       fit_window, budget)[0]


def gvote_layer(module: torch.nn.Module, rotary: torch.nn.Module, hidden: torch.Tensor, keys: torch.Tensor,
                p_nuc: float, n_samples: int, n_sink: int, window: int, seed: int,
                cap_fraction: float | None = None, fit: str = "prompt", fit_window: int = 32,
                budget: str = "top") -> tuple[torch.Tensor, torch.Tensor]:
    """`gvote_keep_mask` and the layer's anchor scores (b, T): per key, the highest attention any query head's
    last prompt query gives it (sinks and window zeroed), which `add_successor_spans` ranks across layers."""
    b, hkv, t, _ = keys.shape
    if p_nuc >= 1.0:
        return torch.ones(b, hkv, t, dtype=torch.bool, device=keys.device), torch.zeros(b, t, device=keys.device)
    with torch.no_grad():
        q0 = queries_at(module, rotary, hidden[:, -1:], t - 1)                  # (b, hq, 1, d)
        a0 = attention_probs(q0, keys)[:, :, 0]                                 # (b, hq, T)
        c0 = nucleus_mask(a0, p_nuc)
        keep_q = c0.clone()
        score = a0.clone()
        b_step = c0.sum(dim=-1)                                                 # (b, hq)
        if fit in ("recent", "recent_cov"):
            body = hidden[:, max(min(n_sink, t - 1), t - max(1, fit_window)):].float()
        elif fit in ("prompt", "prompt_cov"):
            body = hidden[:, min(n_sink, t - 1):].float()
        else:
            raise ValueError(f"unknown fit {fit!r}; known: prompt, recent, recent_cov, prompt_cov")
        if budget not in ("top", "nucleus"):
            raise ValueError(f"unknown budget {budget!r}; known: top, nucleus")
        mu = body.mean(dim=1, keepdim=True)                                     # (b, 1, H)
        sigma = body.std(dim=1, keepdim=True, unbiased=False)
        centred = (body - mu) / math.sqrt(body.shape[1])                        # (b, n, H): Σ = centredᵀ centred
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        if n_samples > 0:
            rank = torch.arange(t, device=keys.device)
            for _ in range(n_samples):
                if fit.endswith("_cov"):
                    z = torch.randn(body.shape[1], generator=gen).to(mu.device)
                    h_s = (mu + torch.einsum("n,bnh->bh", z, centred)[:, None]).to(hidden.dtype)
                else:
                    eps = torch.randn(mu.shape[-1], generator=gen).to(mu.device)
                    h_s = (mu + sigma * eps).to(hidden.dtype)                   # (b, 1, H)
                a_s = attention_probs(queries_at(module, rotary, h_s, t), keys)[:, :, 0]
                if budget == "nucleus":
                    top = nucleus_mask(a_s, p_nuc)
                else:
                    order = torch.sort(a_s, dim=-1, descending=True, stable=True).indices
                    top = torch.zeros_like(keep_q).scatter(-1, order, rank.expand_as(order) < b_step[..., None])
                keep_q |= top
                score = torch.maximum(score, a_s)
        keep = group_union(keep_q, hkv)
        fixed = sink_window_mask(t, n_sink, window, keys)
        keep |= fixed
        if cap_fraction is not None:
            keep = _cap(keep, group_union_max(score, hkv), fixed, cap_fraction)
        peak = torch.where(fixed, torch.zeros_like(a0[:, 0]), a0.amax(dim=1))       # (b, T)
    return keep, peak


def add_successor_spans(masks: list[torch.Tensor], peaks: list[torch.Tensor], anchors: int,
                        span: int) -> list[torch.Tensor]:
    """Keep, in every layer and KV head, the `span` keys after each of the `anchors` prompt positions the last
    query attends to most (highest attention of any layer and query head, sinks and window excluded), and the
    anchor itself. Ours, not the paper's: the answer's later tokens read the keys *after* where the prompt's
    last query looks (copying walks forward: a needle's digits after the first), keys no prefill query scores
    (`benchmarks/kv_budget_query_model.py` measures it). masks: per layer (b, kv_heads, T) bool; peaks: per
    layer (b, T). Returns new masks; anchors = 0 or span = 0 returns them unchanged."""
    if anchors <= 0 or span <= 0 or not masks:
        return masks
    b, _, t = masks[0].shape
    best = torch.stack(peaks).amax(dim=0)                                       # (b, T)
    top = torch.topk(best, min(anchors, t), dim=-1)
    extra = torch.zeros(b, t, dtype=torch.bool, device=masks[0].device)
    for i in range(b):
        for p, v in zip(top.indices[i].tolist(), top.values[i].tolist()):
            if v > 0:
                extra[i, p:min(t, p + span + 1)] = True
    return [m | extra[:, None, :] for m in masks]


def group_union_max(score: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(b, q_heads, T) -> (b, kv_heads, T): the highest score over the query heads of each group."""
    b, hq, t = score.shape
    return score.view(b, kv_heads, hq // kv_heads, t).amax(dim=2)


def _cap(keep: torch.Tensor, score: torch.Tensor, fixed: torch.Tensor, cap_fraction: float) -> torch.Tensor:
    """At most max(|fixed|, cap_fraction*T) keys per head: the fixed ones, then the highest scores."""
    t = keep.shape[-1]
    limit = max(int(fixed.sum()), int(math.floor(cap_fraction * t)))
    prio = torch.where(fixed, torch.full_like(score, 2.0), score)                # fixed first (probs <= 1)
    prio = torch.where(keep, prio, torch.full_like(score, -1.0))
    order = torch.sort(prio, dim=-1, descending=True, stable=True).indices
    rank = torch.arange(t, device=keep.device).expand_as(order)
    allowed = torch.zeros_like(keep).scatter(-1, order, rank < limit)
    return keep & allowed


def oracle_keep_mask(decode_queries: torch.Tensor, keys: torch.Tensor, p_nuc: float) -> torch.Tensor:
    """Union of the nucleus sets of the actual decoding queries over the prompt's keys (b, kv_heads, T).

    decode_queries: (b, q_heads, n, d) after RoPE, the queries of the tokens after the compressed prompt
    (teacher-forced). Each query's attention is restricted to the prompt keys and renormalised (what it
    needs from the part that compression may drop).
    """
    probs = attention_probs(decode_queries, keys)                               # (b, hq, n, T)
    need = nucleus_mask(probs, p_nuc).any(dim=2)                                # (b, hq, T)
    return group_union(need, keys.shape[1])


def recall(keep: torch.Tensor, oracle: torch.Tensor) -> tuple[int, int]:
    """(|keep ∩ oracle|, |oracle|) over every head."""
    return int((keep & oracle).sum()), int(oracle.sum())
