"""LLaMA-Pro block expansion: insert copies of decoder blocks that start as the identity.

Each inserted block is a deep copy of the block before it with its output projections (`self_attn.o_proj`
and `mlp.down_proj`) zeroed, so its residual branch adds 0 and the expanded model computes exactly what the
base model computes (TencentARC's LLaMA-Pro; LLaMA-Factory's `llama_pro.py` does the same on checkpoints).
Only the inserted blocks are meant to train.

    >>> from testbeds.smollm2 import load_model          # doctest: +SKIP
    >>> big, new = expand_blocks(load_model("smollm2-135m:8L"), after=[3, 7])  # 10 blocks; 4 and 9 are new  # doctest: +SKIP
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

from core.errors import PlannerError


def expand_blocks(model: Any, after: Sequence[int]) -> tuple[Any, list[int]]:
    """A new model with one identity block inserted after each original block index in `after`.

    `model` is a transformers decoder (LlamaForCausalLM or same layout: `model.model.layers`, blocks with
    `self_attn.o_proj` and `mlp.down_proj`). Returns (expanded model, indices of the inserted blocks in it).
    The input model is not changed. Layer indices (`self_attn.layer_idx`, used by the KV cache) are renumbered.
    """
    import torch

    layers = list(model.model.layers)
    n = len(layers)
    bad = [i for i in after if not 0 <= int(i) < n]
    if bad or len(set(after)) != len(after):
        raise PlannerError(f"cannot insert blocks after {list(after)}: the model has blocks 0..{n - 1} "
                           "and each position may appear once", f"pick distinct block indices in 0..{n - 1}")
    out = copy.deepcopy(model)
    old = list(out.model.layers)
    new_layers, inserted, source = [], [], []
    positions = {int(a) for a in after}
    for i, block in enumerate(old):
        new_layers.append(block)
        source.append(i)
        if i in positions:
            twin = copy.deepcopy(block)
            with torch.no_grad():
                twin.self_attn.o_proj.weight.zero_()
                twin.mlp.down_proj.weight.zero_()
                for proj in (twin.self_attn.o_proj, twin.mlp.down_proj):
                    if getattr(proj, "bias", None) is not None:
                        proj.bias.zero_()
            inserted.append(len(new_layers))
            new_layers.append(twin)
            source.append(i)
    out.model.layers = torch.nn.ModuleList(new_layers)
    for idx, block in enumerate(out.model.layers):
        if hasattr(block.self_attn, "layer_idx"):
            block.self_attn.layer_idx = idx
        if hasattr(block, "layer_idx"):
            block.layer_idx = idx
    out.config.num_hidden_layers = len(new_layers)
    types = getattr(out.config, "layer_types", None)
    if types:   # an inserted block has the attention kind of the block it copies
        out.config.layer_types = [list(types)[i] for i in source]
    return out, inserted
