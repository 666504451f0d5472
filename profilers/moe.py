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
    """Per-layer statistics: predictor recall p_i, distinct experts per step k_i, popularity."""

    recall: np.ndarray
    distinct_per_step: np.ndarray
    popularity: np.ndarray  # (L, N) activation frequency

    def static_curves(self) -> np.ndarray:
        """h(C) of a static set of the C most popular experts (no eviction), (L, N+1)."""
        ranked = -np.sort(-self.popularity, axis=1)
        return np.concatenate([np.zeros((ranked.shape[0], 1)), np.cumsum(ranked, axis=1)], axis=1)

    def static_orders(self) -> tuple[tuple[int, ...], ...]:
        """Experts by popularity (most used first, ties to the lower id), per layer."""
        return tuple(tuple(int(e) for e in np.lexsort((np.arange(p.size), -p))) for p in self.popularity)


def trace_stats(trace: RoutingTrace) -> TraceStats:
    """Recall `E|pred ∩ act| / |act|` per layer (0 where no prediction) and popularity."""
    T, L, k = trace.experts.shape
    recall = np.zeros(L)
    for layer in range(L):
        pred = trace.predicted[:, layer, :]
        if (pred < 0).all():
            continue
        act = trace.experts[:, layer, :]
        hits = (act[:, :, None] == pred[:, None, :]).any(axis=2).sum()
        recall[layer] = hits / act.size
    pop = np.zeros((L, trace.num_experts))
    for layer in range(L):
        pop[layer] = np.bincount(trace.experts[:, layer, :].ravel(), minlength=trace.num_experts) / (T * k)
    distinct = np.array([np.mean([len(set(row)) for row in trace.experts[:, layer, :]]) for layer in range(L)])
    return TraceStats(recall, distinct, pop)


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
