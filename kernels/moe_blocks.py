"""Find the MoE blocks of a transformers model, split their fused experts and swap in SplitExperts.

The mechanical half of the rewrite, shared by codegen (which also traces the blocks to fx code) and
the runtime (which applies a plan at load time). Imports only torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernels.split_experts import ResidentSegments, SegmentSource, SplitExperts, split_fused_expert


@dataclass
class MoeBlockRef:
    """One MoE block: its decoder layer index, MoE index (0..L-1) and module path."""

    layer_index: int
    moe_index: int
    path: str
    decoder_layer: nn.Module
    experts: nn.Module


def moe_blocks(model: nn.Module) -> list[MoeBlockRef]:
    """Every decoder layer whose `mlp.experts` holds fused 3-D expert weights."""
    out = []
    for i, layer in enumerate(model.model.layers):
        experts = getattr(getattr(layer, "mlp", None), "experts", None)
        if isinstance(experts, SplitExperts):
            out.append(MoeBlockRef(i, len(out), f"model.layers.{i}", layer, experts))
            continue
        gu = getattr(experts, "gate_up_proj", None) if experts is not None else None
        if gu is not None and gu.dim() == 3:
            out.append(MoeBlockRef(i, len(out), f"model.layers.{i}", layer, experts))
    return out


def check_layout(block: MoeBlockRef, hidden_size: int) -> None:
    """Only the gate-then-up fused layout (E, 2f, d) is split; GPT-OSS's interleaved one is not."""
    gu = block.experts.gate_up_proj
    if gu.shape[-1] != hidden_size or hasattr(block.experts, "gate_up_proj_bias"):
        raise ValueError(f"{block.path}: expert layout {tuple(gu.shape)} is not supported for splitting")


def split_segments(block: MoeBlockRef, f_top: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Top and bottom segments (3, rows, d) of every expert of one block; empty segments omitted."""
    ex = block.experts
    tops, bottoms = {}, {}
    with torch.no_grad():
        for e in range(ex.gate_up_proj.shape[0]):
            t, b = split_fused_expert(ex.gate_up_proj[e].detach(), ex.down_proj[e].detach(), f_top)
            if t.shape[1] > 0:
                tops[e] = t
            if b.shape[1] > 0:
                bottoms[e] = b
    return tops, bottoms


def split_all(model: nn.Module, f_tops: list[int]) -> tuple[list[dict[int, torch.Tensor]], list[dict[int, torch.Tensor]]]:
    """Segments of every MoE block at its f_top."""
    blocks = moe_blocks(model)
    if len(f_tops) != len(blocks):
        raise ValueError(f"plan has {len(f_tops)} MoE layers, model has {len(blocks)}")
    tops, bottoms = [], []
    for blk, f_top in zip(blocks, f_tops):
        check_layout(blk, int(model.config.hidden_size))
        t, b = split_segments(blk, f_top)
        tops.append(t)
        bottoms.append(b)
    return tops, bottoms


def swap_experts(model: nn.Module, f_tops: list[int], source: SegmentSource | None = None) -> tuple[list[MoeBlockRef], SegmentSource]:
    """Replace every block's experts by SplitExperts reading from `source` (all resident if None).

    The fused expert parameters are dropped from the module (the source owns the segments).
    """
    blocks = moe_blocks(model)
    if source is None:
        source = ResidentSegments(*split_all(model, f_tops))
    for blk, f_top in zip(blocks, f_tops):
        ex = blk.experts
        f = int(ex.down_proj.shape[-1])
        blk.decoder_layer.mlp.experts = SplitExperts(blk.moe_index, int(ex.gate_up_proj.shape[0]), f, int(f_top),
                                                     ex.act_fn, source)
    return blocks, source
