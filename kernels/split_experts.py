"""Split-expert execution modules: the rewritten form of a transformers MoE `experts` module.

Every routed expert e is split along its intermediate dimension at f_top = theta * f:
    top(x)    = down[:, :f_top]  @ (act(gate[:f_top] x) * up[:f_top] x)
    bottom(x) = down[:, f_top:]  @ (act(gate[f_top:] x) * up[f_top:] x)
    expert(x) = top(x) + bottom(x)                      (exact up to float reassociation)
Segments are stored as (3, rows, d) tensors: gate rows, up rows and the matching down columns
transposed, so each segment is one contiguous copy.

`SplitExperts` keeps the original call signature `(hidden_states, top_k_index, top_k_weights)` and
exposes its steps as child modules (dispatch, top, bottom, release) so that a traced block shows
the expert-cache calls as explicit graph nodes. Where the segments come from is a `SegmentSource`:
`ResidentSegments` holds them all in memory; the offloading engine (`engine.py`)
provides its cache. This module imports only torch (the runtime loads it).
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn


class SegmentSource(Protocol):
    """Where a layer's expert segments live. Tensors are (3, rows, d): gate, up, down^T."""

    def dispatch(self, layer: int, experts: list[int]) -> None:
        """The router chose `experts`: start whatever fetches they need."""

    def top(self, layer: int, expert: int) -> torch.Tensor | None:
        """The top segment (None if f_top = 0)."""

    def bottom(self, layer: int, expert: int) -> torch.Tensor | None:
        """The bottom segment, waiting for it if it is in flight (None if f_top = f)."""

    def release(self, layer: int, experts: list[int]) -> None:
        """The layer finished with `experts` (cache admission happens here)."""


def split_fused_expert(gate_up: torch.Tensor, down: torch.Tensor, f_top: int,
                       layout: str = "gate_up_rows") -> tuple[torch.Tensor, torch.Tensor]:
    """One expert's fused weights -> (top, bottom) segments of shape (3, rows, d).

    gate_up: (2f, d) with gate rows first (transformers 5 fused layout); down: (d, f).
    """
    if layout != "gate_up_rows":
        raise ValueError(f"expert layout {layout} is not supported for splitting")
    f = down.shape[1]
    gate, up = gate_up[:f], gate_up[f:]
    stacked = torch.stack([gate, up, down.t()])  # (3, f, d)
    return stacked[:, :f_top].contiguous(), stacked[:, f_top:].contiguous()


def experts_in_order(top_k_index: torch.Tensor, num_experts: int) -> list[int]:
    """Distinct experts in router order (token by token, highest weight first), as the profiler replays them."""
    seen: dict[int, None] = {}
    for e in top_k_index.reshape(-1).tolist():
        if 0 <= int(e) < num_experts:
            seen.setdefault(int(e), None)
    return list(seen)


def segment_forward(x: torch.Tensor, seg: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Partial expert output of one segment: down_seg @ (act(gate_seg x) * up_seg x)."""
    h = act(torch.nn.functional.linear(x, seg[0])) * torch.nn.functional.linear(x, seg[1])
    return h @ seg[2]


class ResidentSegments:
    """Every segment in memory (no offloading): the reference source for equivalence tests."""

    def __init__(self, tops: list[dict[int, torch.Tensor]], bottoms: list[dict[int, torch.Tensor]]) -> None:
        self.tops = tops
        self.bottoms = bottoms

    def dispatch(self, layer: int, experts: list[int]) -> None:
        return None

    def top(self, layer: int, expert: int) -> torch.Tensor | None:
        return self.tops[layer].get(expert)

    def bottom(self, layer: int, expert: int) -> torch.Tensor | None:
        return self.bottoms[layer].get(expert)

    def release(self, layer: int, experts: list[int]) -> None:
        return None


class DispatchStep(nn.Module):
    def __init__(self, owner: "SplitExperts") -> None:
        super().__init__()
        self._owner = [owner]  # list: not a registered submodule (no cycle in the module tree)

    def forward(self, top_k_index: torch.Tensor) -> torch.Tensor:
        o = self._owner[0]
        o.source.dispatch(o.layer, experts_in_order(top_k_index, o.num_experts))
        return top_k_index


class SegmentStep(nn.Module):
    def __init__(self, owner: "SplitExperts", part: str) -> None:
        super().__init__()
        self._owner = [owner]
        self.part = part

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        o = self._owner[0]
        out = torch.zeros_like(hidden_states)
        if (self.part == "top" and o.f_top == 0) or (self.part == "bottom" and o.f_top == o.intermediate_size):
            return out
        flat = top_k_index
        for e in sorted({int(v) for v in flat.reshape(-1).tolist() if 0 <= int(v) < o.num_experts}):
            token_idx, pos = torch.where(flat == e)
            seg = o.source.top(o.layer, e) if self.part == "top" else o.source.bottom(o.layer, e)
            if seg is None:
                continue
            x = hidden_states[token_idx]
            if seg.device != x.device:  # a CPU-miss layer computes this expert where its weights live
                part = segment_forward(x.to(seg.device, seg.dtype), seg, o.act_fn).to(x.device)
            else:
                part = segment_forward(x, seg.to(x.dtype), o.act_fn)
            part = part * top_k_weights[token_idx, pos, None]
            out.index_add_(0, token_idx, part.to(out.dtype))
        return out


class ReleaseStep(nn.Module):
    def __init__(self, owner: "SplitExperts") -> None:
        super().__init__()
        self._owner = [owner]

    def forward(self, output: torch.Tensor, top_k_index: torch.Tensor) -> torch.Tensor:
        o = self._owner[0]
        o.source.release(o.layer, experts_in_order(top_k_index, o.num_experts))
        return output


class SplitExperts(nn.Module):
    """Drop-in replacement of a fused `experts` module that computes top + bottom segments."""

    def __init__(self, layer: int, num_experts: int, intermediate_size: int, f_top: int,
                 act_fn: Callable[[torch.Tensor], torch.Tensor], source: SegmentSource) -> None:
        super().__init__()
        if not 0 <= f_top <= intermediate_size:
            raise ValueError(f"f_top {f_top} outside 0..{intermediate_size}")
        self.layer = layer
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size
        self.f_top = f_top
        self.act_fn = act_fn
        self.source = source
        self.dispatch = DispatchStep(self)
        self.top = SegmentStep(self, "top")
        self.bottom = SegmentStep(self, "bottom")
        self.release = ReleaseStep(self)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        sel = self.dispatch(top_k_index)
        out = self.top(hidden_states, sel, top_k_weights) + self.bottom(hidden_states, sel, top_k_weights)
        return self.release(out, sel)
