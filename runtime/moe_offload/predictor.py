"""Next-layer expert predictor: at MoE layer i-1's post_attn tap (the residual entering its
post-attention norm), apply layer i's post-attention norm and router, take the top-k_pf experts and
hand them to the engine, which prefetches them right after layer i-1's on-demand copies.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kernels.moe_blocks import moe_blocks


def _router(mlp: Any) -> Any:
    gate = getattr(mlp, "gate", None)
    return gate if gate is not None and hasattr(gate, "weight") else getattr(mlp, "router")


def attach_predictor(model: torch.nn.Module, engine: Any, k_prefetch: int) -> list[Any]:
    """Register the taps; returns the hook handles."""
    blocks = moe_blocks(model)
    handles = []
    for prev, nxt in zip(blocks[:-1], blocks[1:]):
        norm = nxt.decoder_layer.post_attention_layernorm
        router = _router(nxt.decoder_layer.mlp)
        target = nxt.moe_index

        def hook(_mod: Any, inp: Any, norm: Any = norm, router: Any = router, target: int = target) -> None:
            if k_prefetch <= 0:
                return
            h = norm(inp[0].reshape(-1, inp[0].shape[-1])[-1:])
            logits = F.linear(h.to(router.weight.dtype), router.weight, getattr(router, "bias", None))
            engine.predict(target, [int(e) for e in torch.topk(logits, k_prefetch, dim=-1).indices[0].tolist()])

        handles.append(prev.decoder_layer.post_attention_layernorm.register_forward_pre_hook(hook))
    return handles
