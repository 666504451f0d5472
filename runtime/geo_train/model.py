"""The small decoder every region trains (a transformers Llama built from a config) and its fragments."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn


def build_lm(config: Mapping[str, Any], seed: int) -> nn.Module:
    """A LlamaForCausalLM with seeded random weights (the same in every region), untied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**dict(config), "tie_word_embeddings": False})
    model = LlamaForCausalLM(cfg)
    model.train()
    return model


def fragments(model: nn.Module, groups: Sequence[Sequence[int]]) -> list[nn.Module]:
    """One module per layer group: the first also holds the embeddings, the last the final norm and head."""
    layers = model.model.layers
    out = []
    for i, group in enumerate(groups):
        parts: list[nn.Module] = [layers[j] for j in group]
        if i == 0:
            parts.insert(0, model.model.embed_tokens)
        if i == len(groups) - 1:
            parts += [model.model.norm, model.lm_head]
        out.append(nn.ModuleList(parts))
    seen = sum(p.numel() for f in out for p in f.parameters())
    total = sum(p.numel() for p in model.parameters())
    if seen != total:
        raise ValueError(f"the layer groups cover {seen} of {total} parameters: every layer must be in one group")
    return out
