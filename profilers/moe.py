"""Routing traces: record them from any transformers MoE model, save, load and summarise them.

A `RoutingTrace` holds, per decode step t and MoE layer l, the k experts the router chose
(`experts[t, l, :]`) and the experts the next-layer predictor proposed for layer l from layer l-1's
tap (`predicted[t, l, :]`, -1 where there is no prediction, e.g. the first MoE layer).

Recording (`record_trace`) hooks every router: a forward hook on `mlp.gate` / `mlp.router` receives
`(router_logits, top_k_weights, top_k_index)` in transformers 5; the predictor applies layer l's
post-attention norm and router to the hidden state entering layer l-1's MoE block (the `post_attn`
tap, see docs/moe-offload.md §9), exactly what the runtime's predictor does.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from core.atomic_io import write_bytes_atomic
from core.errors import InputMismatchError, PlannerError, reason_of

log = logging.getLogger(__name__)

TRACE_FORMAT = 1


@dataclass(frozen=True)
class RoutingTrace:
    """Decode-time routing of one model: experts (T, L, k) int16 and predictions (T, L, k_pf) int16."""

    experts: np.ndarray
    predicted: np.ndarray
    num_experts: int
    source: str
    model: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        """Decode steps T."""
        return int(self.experts.shape[0])

    @property
    def num_layers(self) -> int:
        """MoE layers L."""
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        """Experts chosen per token per layer."""
        return int(self.experts.shape[2])

    def fingerprint(self) -> str:
        """sha256 over the arrays and the expert count."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.experts, dtype=np.int16).tobytes())
        h.update(np.ascontiguousarray(self.predicted, dtype=np.int16).tobytes())
        h.update(str(self.num_experts).encode())
        return "sha256:" + h.hexdigest()[:16]

    def check_matches(self, num_layers: int, num_experts: int, top_k: int, model: str) -> None:
        """Raise a one-line error if this trace was not taken from a model of this shape."""
        if self.num_layers != num_layers or self.num_experts != num_experts or self.top_k != top_k:
            raise InputMismatchError(
                f"trace ({self.source}) has {self.num_layers} MoE layers x {self.num_experts} experts, top-{self.top_k}, "
                f"but {model} has {num_layers} x {num_experts}, top-{top_k}",
                "a trace recorded from a tiny model (`planner trace --tiny`) fits only plans made with --tiny; for the "
                f"full-size model synthesise one with `planner trace {model} --preset moepic-calibrated -o FILE`",
            )

    def to_bytes(self) -> bytes:
        """The .npz bytes (arrays plus a JSON header)."""
        header = json.dumps({"format": TRACE_FORMAT, "num_experts": self.num_experts, "source": self.source,
                             "model": self.model, "params": dict(self.params)}, sort_keys=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, experts=self.experts.astype(np.int16), predicted=self.predicted.astype(np.int16),
                            header=np.frombuffer(header.encode(), dtype=np.uint8))
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the .npz atomically."""
        return write_bytes_atomic(path, self.to_bytes())

    @staticmethod
    def load(path: str | Path) -> "RoutingTrace":
        """Read a trace written by `save` (or by `planner trace`), with one-line errors."""
        p = Path(path)
        if not p.exists():
            raise PlannerError(f"trace file {p} does not exist", "record one with `planner trace MODEL --tiny -o FILE`")
        try:
            with np.load(p, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                experts, predicted = z["experts"], z["predicted"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise PlannerError(f"{p} is not a routing trace ({reason_of(exc)})",
                               "pass an .npz written by `planner trace`") from exc
        if not isinstance(header, dict):
            raise PlannerError(f"{p} is not a routing trace (its header is not a mapping)", "pass an .npz written by `planner trace`")
        if header.get("format") != TRACE_FORMAT:
            raise PlannerError(f"{p} has trace format {header.get('format')}, expected {TRACE_FORMAT}",
                               "re-record it with this version of `planner trace`")
        if experts.ndim != 3 or predicted.ndim != 3 or experts.shape[:2] != predicted.shape[:2]:
            raise PlannerError(f"{p} has inconsistent array shapes", "re-record the trace")
        try:
            n = int(header["num_experts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PlannerError(f"{p} has no valid num_experts in its header", "re-record the trace") from exc
        if experts.shape[0] < 1:
            raise PlannerError(f"{p} holds no decode steps", "record a trace with --max-new-tokens 1 or more")
        if experts.size and (experts.min() < 0 or experts.max() >= n):
            raise PlannerError(f"{p} names experts outside 0..{n - 1}", "re-record the trace")
        return RoutingTrace(experts.astype(np.int16), predicted.astype(np.int16), n, header.get("source", str(p)),
                            header.get("model", ""), header.get("params", {}))


@dataclass(frozen=True)
class TraceStats:
    """Per-layer statistics: predictor recall p_i, distinct experts per step k_i, popularity, and the distinct
    predicted experts per step (the prefetch count of a batched view)."""

    recall: np.ndarray
    distinct_per_step: np.ndarray
    popularity: np.ndarray  # (L, N) share of (distinct, per step) activations
    predicted_per_step: np.ndarray | None = None

    def static_curves(self) -> np.ndarray:
        """h(C) of a static set of the C most popular experts (no eviction), (L, N+1)."""
        ranked = -np.sort(-self.popularity, axis=1)
        return np.concatenate([np.zeros((ranked.shape[0], 1)), np.cumsum(ranked, axis=1)], axis=1)

    def static_orders(self) -> tuple[tuple[int, ...], ...]:
        """Experts by popularity (most used first, ties to the lower id), per layer."""
        return tuple(tuple(int(e) for e in np.lexsort((np.arange(p.size), -p))) for p in self.popularity)


def trace_stats(trace: RoutingTrace) -> TraceStats:
    """Recall `E|pred ∩ act| / |act|` per layer (0 where no prediction), popularity and distinct experts per step.

    Entries below 0 are padding (a batched view's rows have as many experts as the batch's union)."""
    T, L, k = trace.experts.shape
    recall = np.zeros(L)
    pop = np.zeros((L, trace.num_experts))
    distinct = np.zeros(L)
    npred = np.zeros(L)
    for layer in range(L):
        act = trace.experts[:, layer, :].astype(np.int64)
        valid = act >= 0
        n_valid = max(int(valid.sum()), 1)
        distinct[layer] = valid.sum() / max(T, 1)
        pop[layer] = np.bincount(act[valid], minlength=trace.num_experts) / n_valid
        pred = trace.predicted[:, layer, :]
        npred[layer] = (pred >= 0).sum() / max(T, 1)
        if (pred < 0).all():
            continue
        hits = ((act[:, :, None] == pred[:, None, :]) & valid[:, :, None] & (pred[:, None, :] >= 0)).any(axis=2).sum()
        recall[layer] = hits / n_valid
    return TraceStats(recall, distinct, pop, npred)


# ------------------------------------------------------------------ sequences, batches, held-out parts
def sequence_bounds(trace: RoutingTrace) -> list[tuple[int, int]]:
    """[start, end) of each independent sequence in the trace: synthetic traces say `sequence_tokens`, recorded
    ones `prompts` x `max_new_tokens`; otherwise the trace is one sequence."""
    T = trace.num_tokens
    params = dict(trace.params)
    n = params.get("sequence_tokens")
    if n is None and params.get("prompts") and params.get("max_new_tokens"):
        if int(params["prompts"]) * int(params["max_new_tokens"]) == T:
            n = int(params["max_new_tokens"])
    if not n or int(n) <= 0 or T % int(n):
        return [(0, T)]
    n = int(n)
    return [(s, s + n) for s in range(0, T, n)]


def _union_rows(parts: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Per step and layer, the union of the parts' expert ids (first-seen order), padded with -1 to `width`."""
    steps, L = parts[0].shape[:2]
    out = np.full((steps, L, width), -1, dtype=np.int16)
    stacked = np.concatenate(parts, axis=2)
    for t in range(steps):
        for i in range(L):
            row = [int(e) for e in dict.fromkeys(stacked[t, i].tolist()) if e >= 0][:width]
            out[t, i, :len(row)] = row
    return out


def batch_view(trace: RoutingTrace, bounds: Sequence[tuple[int, int]], batch: int, label: str) -> RoutingTrace:
    """Decode of `batch` independent sequences at once: per step the union of their experts (and of their
    predictions). Consecutive groups of `batch` sequences from `bounds` follow one another (truncated to the
    group's shortest); with fewer sequences than `batch`, the sequences' steps are cut into `batch` equal
    stand-in sequences (`params["stand_in"]`)."""
    batch = max(int(batch), 1)
    bounds = list(bounds)
    stand_in = len(bounds) < batch
    if stand_in:
        idx = np.concatenate([np.arange(a, b) for a, b in bounds])
        n = len(idx) // batch
        if n < 1:
            raise PlannerError(f"the routing trace has {len(idx)} steps in its {label} part, too few for {batch} "
                               "sequences", "record or synthesise a longer trace (--trace-tokens)")
        groups = [[idx[j * n:(j + 1) * n] for j in range(batch)]]
    else:
        groups = []
        for g in range(len(bounds) // batch):
            members = bounds[g * batch:(g + 1) * batch]
            n = min(b - a for a, b in members)
            groups.append([np.arange(a, a + n) for a, _ in members])
    N = trace.num_experts
    width_e = min(N, batch * trace.top_k)
    width_p = min(N, batch * trace.predicted.shape[2])
    if batch == 1:
        experts = np.concatenate([trace.experts[g[0]] for g in groups])
        predicted = np.concatenate([trace.predicted[g[0]] for g in groups])
    else:
        experts = np.concatenate([_union_rows([trace.experts[m] for m in g], width_e) for g in groups])
        predicted = np.concatenate([_union_rows([trace.predicted[m] for m in g], width_p) for g in groups])
    params = {**dict(trace.params), "part": label, "batch": batch, "groups": len(groups),
              "sequences_used": batch * len(groups), "stand_in": stand_in, "parent": trace.fingerprint()}
    params.pop("sequence_tokens", None)
    return RoutingTrace(experts.astype(np.int16), predicted.astype(np.int16), N, f"{trace.source} [{label}, batch {batch}]",
                        trace.model, params)


def split_parts(trace: RoutingTrace) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    """Disjoint calibration and held-out sequences: even-numbered sequences calibrate, odd-numbered ones score.
    A trace of one sequence is cut in two halves (the held-out part is then later tokens of the same sequence,
    which the returned note says)."""
    seqs = sequence_bounds(trace)
    if len(seqs) >= 2:
        return seqs[0::2], seqs[1::2], (f"held-out scoring: {len(seqs[1::2])} of the trace's {len(seqs)} sequences "
                                        f"score the plan; the other {len(seqs[0::2])} chose it")
    T = trace.num_tokens
    h = T // 2
    return [(0, h)], [(h, T)], ("held-out scoring: the trace holds one sequence, so the plan is chosen on its first "
                                f"{h} steps and scored on the last {T - h} (later tokens, not other prompts)")


# ------------------------------------------------------------------ recording
def _moe_blocks(model: Any) -> list[Any]:
    layers = model.model.layers
    return [layer for layer in layers if hasattr(getattr(layer, "mlp", None), "experts")]


def _router(mlp: Any) -> Any:
    return getattr(mlp, "gate", None) if hasattr(getattr(mlp, "gate", None), "forward") else getattr(mlp, "router")


def next_token(logits: Any, temperature: float, generator: Any) -> Any:
    """Greedy (temperature 0) or seeded sampling from the last position's logits; shape (1, 1)."""
    import torch

    last = logits[:, -1, :]
    if temperature <= 0:
        return last.argmax(-1, keepdim=True)
    probs = torch.softmax(last.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def record_trace(model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, k_prefetch: int | None = None,
                 model_name: str = "", temperature: float = 0.0, seed: int = 0) -> RoutingTrace:
    """Decode each prompt (greedy, or sampled at `temperature` with a seeded generator) and record
    decode-step routing and next-layer predictions.

    Only decode steps are recorded (one token per step, batch 1); prefill routing is skipped.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)

    blocks = _moe_blocks(model)
    if not blocks:
        raise PlannerError(f"{model_name or 'model'} has no MoE blocks to trace", "pass an MoE model")
    num_experts = None
    chosen: list[Any] = [None] * len(blocks)
    taps: list[Any] = [None] * len(blocks)
    handles = []

    def router_hook(idx: int):
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            chosen[idx] = out[2].detach()
        return hook

    def tap_hook(idx: int):
        def hook(_mod: Any, inp: Any) -> None:
            taps[idx] = inp[0].detach()  # residual after layer idx's attention (the post_attn tap)
        return hook

    for i, layer in enumerate(blocks):
        handles.append(_router(layer.mlp).register_forward_hook(router_hook(i)))
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(tap_hook(i)))
    k = None
    rows_e: list[np.ndarray] = []
    rows_p: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for prompt in prompts:
                ids = torch.tensor([list(prompt)], dtype=torch.long)
                out = model(input_ids=ids, use_cache=True)
                past = out.cache
                nxt = next_token(out.logits, temperature, gen)
                for _ in range(max_new_tokens):
                    out = model(input_ids=nxt, cache=past, use_cache=True)
                    past = out.cache
                    nxt = next_token(out.logits, temperature, gen)
                    e = np.stack([c.reshape(-1, c.shape[-1])[-1].numpy() for c in chosen])
                    k = e.shape[1]
                    kpf = k_prefetch or k
                    p = np.full((len(blocks), kpf), -1, dtype=np.int16)
                    for i in range(1, len(blocks)):
                        # predictor for layer i: layer i's post-attention norm and router applied
                        # to the residual at layer i-1's post_attn tap
                        h = taps[i - 1].reshape(-1, taps[i - 1].shape[-1])[-1:]
                        logits = predictor_logits(blocks[i], h)
                        p[i] = torch.topk(logits, kpf, dim=-1).indices[0].numpy()
                    rows_e.append(e.astype(np.int16))
                    rows_p.append(p)
                    if num_experts is None:
                        num_experts = int(predictor_logits(blocks[0], taps[0].reshape(-1, taps[0].shape[-1])[-1:]).shape[-1])
    finally:
        for h in handles:
            h.remove()
    return RoutingTrace(np.stack(rows_e), np.stack(rows_p), int(num_experts), f"recorded:{model_name}",
                        model_name, {"prompts": len(prompts), "max_new_tokens": max_new_tokens,
                                     "temperature": temperature, "seed": seed})


def predictor_logits(layer: Any, residual: Any) -> Any:
    """Layer's router logits for a residual stream `residual` (tokens, d): its norm, then its router."""
    import torch.nn.functional as F

    router = _router(layer.mlp)
    h = layer.post_attention_layernorm(residual)
    return F.linear(h.to(router.weight.dtype), router.weight, getattr(router, "bias", None))
