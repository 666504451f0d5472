"""moe-offload codegen: rewrite every MoE block of a transformers model into split-expert form.

Applies a plan's decisions (f_top per layer), never makes them. Each block's `experts` module becomes
a `SplitExperts` (runtime/moe_offload/split_experts.py) whose top/bottom segments come from a
`SegmentSource`; where the block is symbolically traceable it is replaced by a torch.fx GraphModule
in which the expert-cache steps (dispatch, top, bottom, release) are explicit `call_module` nodes.

Example:
    >>> model2, source, code = rewrite_model(copy.deepcopy(model), f_tops=[64, 32, 0, 128])  # doctest: +SKIP
    >>> torch.allclose(model(ids).logits, model2(ids).logits, atol=1e-5)
    True
"""
from __future__ import annotations

import logging

from torch import fx, nn

from runtime.moe_offload.blocks import swap_experts
from kernels.split_experts import SegmentSource, DispatchStep, SegmentStep, ReleaseStep

log = logging.getLogger(__name__)


class _BlockTracer(fx.Tracer):
    """Traces a MoE block through SplitExperts, keeping its cache steps as leaf calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (DispatchStep, SegmentStep, ReleaseStep)):
            return True
        return super().is_leaf_module(m, qualname)


def trace_block(mlp: nn.Module) -> fx.GraphModule | None:
    """fx GraphModule of a rewritten MoE block, or None where the block is not symbolically traceable."""
    try:
        graph = _BlockTracer().trace(mlp)
    except Exception as exc:  # fx raises TraceError, TypeError, ... on Python control flow over proxies
        log.info("MoE block %s not traceable (%s); kept as a module", type(mlp).__name__, str(exc).splitlines()[0][:120])
        return None
    return fx.GraphModule(mlp, graph, class_name=f"Split{type(mlp).__name__}")


def rewrite_model(model: nn.Module, f_tops: list[int], source: SegmentSource | None = None,
                  trace: bool = True) -> tuple[nn.Module, SegmentSource, dict[int, str]]:
    """Swap every MoE block's experts for SplitExperts at the given f_top (in place) and trace the blocks.

    Returns (model, the segment source, {moe index: fx code of the block, or '' if not traceable}).
    With `source=None` every segment stays resident (the exact reference path).
    """
    blocks, source = swap_experts(model, f_tops, source)
    code: dict[int, str] = {}
    for blk in blocks:
        gm = trace_block(blk.decoder_layer.mlp) if trace else None
        if gm is not None:
            blk.decoder_layer.mlp = gm
        code[blk.moe_index] = gm.code if gm is not None else ""
    return model, source, code
