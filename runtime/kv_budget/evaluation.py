"""One request through the real model under a KV-compression method: prefill, keep sets, ragged decode.

Setting: the prompt (context and question) is prefilled and compressed; the answer is then decoded against the
compressed cache (question-aware, as in SnapKV's and RULER's evaluations; its first token comes from the
prefill's logits, the rest read the compressed cache). `decode` also takes tokens to feed before answering,
for the question-agnostic setting of kvpress's pipeline.
Every method (full cache, GVote, each kvpress press) is decoded by the same ragged runtime from its keep
masks, so memory is accounted the same way for all: the bytes the kept tensors occupy.

A prefill is captured once per request (keys, values, the attention inputs and RoPE tables per layer) and
every method's keep sets are computed from it; a press's `compress` sees exactly what kvpress's hook would
hand it (compressing layer l in the forward does not change the prefill of layer l+1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from runtime.kv_budget.keep_sets import oracle_keep_mask, rope
from runtime.kv_budget.kvpress_compat import press_keep_mask
from runtime.kv_budget.ragged_cache import RaggedCache, ragged_attention_on

PRESSES = ("snapkv", "adakv", "pyramidkv", "streamingllm", "expected_attention")


@dataclass
class Prefill:
    """One request's captured prefill: per layer keys/values (1, kv_heads, T, d), attention inputs (1, T, hidden)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    hidden: list[torch.Tensor]
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    prefill_s: float
    last_logits: torch.Tensor | None = None    # (vocab,) logits after the last prompt token
    score_memo: dict = field(default_factory=dict, repr=False)   # press scores shared across ratios (share_scores)

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2])


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer (rotary table attached, as kvpress does)."""
    mods = [layer.self_attn for layer in model.model.layers]
    for m in mods:
        m.rotary_emb = model.model.rotary_emb
    return mods


def prefill(model: torch.nn.Module, context_ids: torch.Tensor) -> Prefill:
    """Run the context (1, T) through the model with a full cache, capturing what compressors read."""
    mods = attention_modules(model)
    hidden: dict[int, torch.Tensor] = {}
    pos: list[Any] = []

    def grab(module, args, kwargs):
        hidden[module.layer_idx] = kwargs["hidden_states"].detach()
        if not pos:
            pos.append(kwargs["position_embeddings"])

    hooks = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in mods]
    cache = DynamicCache()
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(input_ids=context_ids, cache=cache, use_cache=True, logits_to_keep=1)
        took = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    return Prefill(keys, values, [hidden[i] for i in range(len(mods))], pos[0], took, out.logits[0, -1])


def make_press(name: str, ratio: float) -> Any:
    """A kvpress press by short name at a fixed compression ratio (share of KV entries evicted)."""
    from kvpress import (AdaKVPress, ExpectedAttentionPress, PyramidKVPress, SnapKVPress,
                         StreamingLLMPress)

    if name == "snapkv":
        return SnapKVPress(compression_ratio=ratio)
    if name == "adakv":
        return AdaKVPress(SnapKVPress(compression_ratio=ratio))
    if name == "pyramidkv":
        return PyramidKVPress(compression_ratio=ratio)
    if name == "streamingllm":
        return StreamingLLMPress(compression_ratio=ratio)
    if name == "expected_attention":
        return ExpectedAttentionPress(compression_ratio=ratio)
    raise ValueError(f"unknown press {name}; known: {', '.join(PRESSES)}")


RATIO_FREE_SCORERS = ("SnapKVPress", "PyramidKVPress", "ExpectedAttentionPress")


def share_scores(press: Any, memo: dict) -> None:
    """Let a press reuse, within one prefill, the scores an identically configured press computed at another
    ratio. Only for scorers whose `score` does not read the ratio (SnapKV and PyramidKV's observation-window
    attention, ExpectedAttention's expected attention; AdaKV scores with its inner SnapKV; StreamingLLM's score
    does read it and is left alone). The press's own `compress` still runs: the per-layer budget, the top-k,
    AdaKV's head-wise selection. Keyed by the scorer's class, its settings bar the ratio, and the layer; each
    call gets a copy (AdaKV writes into its scores). A test checks the masks equal unshared ones."""
    target = getattr(press, "press", press)
    if type(target).__name__ not in RATIO_FREE_SCORERS:
        return
    base = (type(target).__name__,) + tuple((f.name, getattr(target, f.name)) for f in fields(target)
                                             if f.name != "compression_ratio")
    own = target.score

    def score(module, *args, **kwargs):
        key = base + (int(module.layer_idx),)
        if key not in memo:
            memo[key] = own(module, *args, **kwargs)
        return memo[key].clone()

    target.score = score


def keep_masks(model: torch.nn.Module, pf: Prefill, method: dict[str, Any]) -> tuple[list[torch.Tensor], float]:
    """Per-layer keep masks (1, kv_heads, T) of a method and the seconds it took to compute them.

    method: {"kind": "full"} | {"kind": "gvote", p_nuc, n_samples, n_sink, window, seed, cap_fraction}
    | {"kind": "press", "press": name, "ratio": r}.
    """
    from runtime.kv_budget.gvote_press import GVotePress

    mods = attention_modules(model)
    t0 = time.perf_counter()
    if method["kind"] == "full":
        masks = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
    elif method["kind"] == "gvote":
        press = GVotePress(p_nuc=method["p_nuc"], n_samples=method["n_samples"], n_sink=method["n_sink"],
                           window=method["window"], seed=method.get("seed", 0),
                           cap_fraction=method.get("cap_fraction"), fit=method.get("fit", "prompt"),
                           budget=method.get("budget", "top"), anchors=int(method.get("anchors", 0)),
                           span=int(method.get("span", 0)))
        with torch.no_grad():
            masks = press.all_masks(mods, pf.hidden, pf.keys)
    elif method["kind"] == "press":
        press = make_press(method["press"], float(method["ratio"]))
        press.post_init_from_model(model)
        if method.get("share_scores", True):
            share_scores(press, pf.score_memo)
        try:
            masks = [press_keep_mask(press, m, h, k, v, pf.position_embeddings)
                     for m, h, k, v in zip(mods, pf.hidden, pf.keys, pf.values)]
        except AssertionError:
            # kvpress refuses prompts shorter than its observation window (SnapKV: 64 tokens): such a prompt
            # keeps its full cache under that press (counted as such)
            masks = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
    else:
        raise ValueError(f"unknown method kind {method['kind']}")
    return masks, time.perf_counter() - t0


def decode(model: torch.nn.Module, pf: Prefill, masks: Sequence[torch.Tensor], question_ids: torch.Tensor,
           max_new_tokens: int, eos_ids: Sequence[int] = ()) -> tuple[list[int], int, list[list[int]]]:
    """Greedy answer after `question_ids` (may be empty: answer right after the prompt), against the ragged
    cache of `masks`.

    Returns (generated token ids, bytes the cache held for the prompt, kept entries per layer and head).
    """
    cache = RaggedCache.from_keep(pf.keys, pf.values, list(masks))
    held = cache.held_bytes()
    counts = [layer.kept_counts() for layer in cache.layers]
    out: list[int] = []
    with torch.no_grad(), ragged_attention_on(model, cache):
        if question_ids.shape[1]:
            logits = model(input_ids=question_ids, cache=cache, use_cache=True).logits
        else:
            logits = pf.last_logits[None, None]
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt in eos_ids or len(out) == max_new_tokens:
                break
            logits = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True).logits
    return out, held, counts


def decode_batch(model: torch.nn.Module, pf: Prefill, keep_sets: Sequence[Sequence[torch.Tensor]],
                 question_ids: torch.Tensor, max_new_tokens: int, eos_ids: Sequence[int] = (),
                 batch: int = 16) -> list[tuple[list[int], int, list[list[int]]]]:
    """`decode` of several keep sets of the same prefill, `batch` at a time in one batched forward per token.

    Each row is the same greedy decode as `decode` (its own ragged cache, attention over its own kept entries;
    a row stops at its first EOS and leaves the batch); batching only shares the
    weight reads of the linear layers, which bound a one-token forward on a CPU. Returns `decode`'s triple
    per keep set, in order.
    """
    results: list[tuple[list[int], int, list[list[int]]]] = []
    for start in range(0, len(keep_sets), max(1, batch)):
        chunk = [list(m) for m in keep_sets[start:start + max(1, batch)]]
        b = len(chunk)
        cache = RaggedCache.from_keep_batch(pf.keys, pf.values, chunk)
        held = cache.row_held_bytes()
        counts = [[layer.rows[r].kept_counts() for layer in cache.layers] for r in range(b)]
        outs: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        with torch.no_grad(), ragged_attention_on(model, cache):
            if question_ids.shape[1]:
                logits = model(input_ids=question_ids.expand(b, -1), cache=cache, use_cache=True).logits
            else:
                logits = pf.last_logits[None, None].expand(b, 1, -1)
            active = list(range(b))          # rows still decoding, in batch order (stopped rows leave the batch)
            for _ in range(max_new_tokens):
                nxt = logits[:, -1].argmax(dim=-1)
                for k, r in enumerate(active):
                    outs[r].append(int(nxt[k]))
                    done[r] = int(nxt[k]) in eos_ids or len(outs[r]) == max_new_tokens
                if all(done):
                    break
                still = [k for k, r in enumerate(active) if not done[r]]
                if len(still) < len(active):
                    for layer in cache.layers:
                        layer.rows = [layer.rows[k] for k in still]
                    active, nxt = [active[k] for k in still], nxt[still]
                logits = model(input_ids=nxt[:, None], cache=cache, use_cache=True).logits
        results += [(outs[r], held[r], counts[r]) for r in range(b)]
    return results


def decode_logits(model: torch.nn.Module, pf: Prefill, masks: Sequence[torch.Tensor],
                  tokens: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits (1, n, vocab) of `tokens` against the ragged cache of `masks`."""
    cache = RaggedCache.from_keep(pf.keys, pf.values, list(masks))
    with torch.no_grad(), ragged_attention_on(model, cache):
        return model(input_ids=tokens, cache=cache, use_cache=True).logits


def oracle_masks(model: torch.nn.Module, pf: Prefill, followup_ids: torch.Tensor, p_nuc: float) -> list[torch.Tensor]:
    """The oracle keep sets: per layer, the union of the nucleus sets (over the prompt's keys) of the queries of
    the actual follow-up tokens (question + answer, teacher-forced against the full cache)."""
    mods = attention_modules(model)
    queries: dict[int, torch.Tensor] = {}

    def grab(module, args, kwargs):
        h = kwargs["hidden_states"]
        b, n, _ = h.shape
        q = module.q_proj(h).view(b, n, -1, module.head_dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        queries[module.layer_idx] = rope(q, cos[0], sin[0])

    hooks = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in mods]
    try:
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        decode_logits(model, pf, full, followup_ids)
    finally:
        for h in hooks:
            h.remove()
    return [oracle_keep_mask(queries[i], pf.keys[i], p_nuc) for i in range(len(mods))]


def bytes_of(masks: Sequence[torch.Tensor], pf: Prefill) -> int:
    """KV bytes the keep sets hold: kept entries x 2 (key, value) x head_dim x element size."""
    d = pf.keys[0].shape[-1]
    size = pf.keys[0].element_size()
    return int(sum(int(m.sum()) for m in masks)) * 2 * d * size
