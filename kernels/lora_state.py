"""LoRA tensors by plain names, shared by codegen (initial adapters) and the federated runtime (exchange).

PEFT names an adapter weight `...query.lora_A.default.weight` and a fully trained head copy
`classifier.modules_to_save.default.weight`; the federation exchanges them as `...query.lora_A` and
`classifier.weight`, names that do not depend on the adapter name. Pure torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:   # torch is imported where tensors are handled, so the server's light paths stay light
    import torch
    from torch import nn


def plain_name(name: str) -> str:
    """PEFT parameter name -> exchange name."""
    return (name.replace(".lora_A.default.weight", ".lora_A").replace(".lora_B.default.weight", ".lora_B")
            .replace(".modules_to_save.default.", "."))


def lora_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every trainable tensor of `module` (LoRA A/B and the head), by exchange name."""
    return {plain_name(n): p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def load_lora_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy the entries of `state` that `module` trains into it; returns the exchange names it took."""
    import torch

    taken = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            key = plain_name(name)
            if p.requires_grad and key in state:
                p.copy_(torch.as_tensor(state[key], dtype=p.dtype).reshape(p.shape))
                taken.append(key)
    return taken


def block_of(name: str, blocks_path: str) -> int | None:
    """The block index an exchange name belongs to (`<blocks_path>.<i>.`), or None (head, embeddings)."""
    prefix = blocks_path + "."
    if not name.startswith(prefix):
        return None
    head = name[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None
