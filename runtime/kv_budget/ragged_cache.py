"""A KV cache that holds only what each KV head keeps: one (n_h, d) key and value tensor per layer and head.

`RaggedCache.from_keep(full_cache, keep_masks)` copies the kept entries of a prefilled transformers cache
(the full one is then dropped by the caller); decoding appends every new token to every head. Attention
reads each head's own tensors through the attention function `kv_ragged` (registered with transformers'
`AttentionInterface`), so no padded or masked copy of the prompt is ever formed. `held_bytes()` is the
memory the tensors occupy (numel x element size), the measurement the receipts report.

Shapes: keep mask (1, kv_heads, T) bool; query (1, q_heads, n, d); per-head keys (n_h, d).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache
from transformers.cache_utils import DynamicLayer

ATTN_NAME = "kv_ragged"


class RaggedLayer(DynamicLayer):
    """One layer: per KV head a (n_h, d) key and value tensor; `logical_len` counts the positions seen."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor) -> None:
        super().__init__()
        if keys.shape[0] != 1:
            raise ValueError("a ragged cache holds one request (batch 1)")
        self.head_keys = [keys[0, h, keep[0, h]].clone() for h in range(keys.shape[1])]
        self.head_values = [values[0, h, keep[0, h]].clone() for h in range(keys.shape[1])]
        self.logical_len = int(keys.shape[2])
        self.device = keys.device
        self.keys = keys.new_empty(0)   # the base class's tensors stay empty: nothing padded is held
        self.values = values.new_empty(0)
        self.is_initialized = True
        self.new_tokens = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens (1, kv_heads, n, d) to every head; returns them (attention reads the heads)."""
        n = key_states.shape[2]
        for h in range(len(self.head_keys)):
            self.head_keys[h] = torch.cat([self.head_keys[h], key_states[0, h]], dim=0)
            self.head_values[h] = torch.cat([self.head_values[h], value_states[0, h]], dim=0)
        self.logical_len += n
        self.new_tokens = n
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.logical_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.logical_len + query_length, 0

    def held_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.head_keys + self.head_values)

    def kept_counts(self) -> list[int]:
        return [int(t.shape[0]) for t in self.head_keys]


class RaggedBatchLayer(DynamicLayer):
    """One layer of several requests decoded together (batch B): row b is its own `RaggedLayer`.

    The rows share the prompt's logical length (they are keep sets of the same prefill), so positions and the
    new tokens' count agree; each row's attention reads only its own heads' kept entries. Batching shares the
    weight reads of the linear layers across rows (decoding one token is bound by those reads on a CPU).
    """

    def __init__(self, rows: list[RaggedLayer]) -> None:
        super().__init__()
        self.rows = rows
        self.device = rows[0].device
        self.keys = rows[0].keys
        self.values = rows[0].values
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append row b's new tokens (B, kv_heads, n, d)[b] to row b's heads."""
        for b, row in enumerate(self.rows):
            row.update(key_states[b:b + 1], value_states[b:b + 1])
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.rows[0].logical_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.rows[0].logical_len + query_length, 0

    def held_bytes(self) -> int:
        return sum(row.held_bytes() for row in self.rows)


class RaggedCache(Cache):
    """A transformers Cache of `RaggedLayer`s (one request) or `RaggedBatchLayer`s (several keep sets)."""

    def __init__(self, layers: list[RaggedLayer]) -> None:
        super().__init__(layers=layers)

    @classmethod
    def from_keep(cls, keys: list[torch.Tensor], values: list[torch.Tensor], keep: list[torch.Tensor]) -> "RaggedCache":
        """keys/values per layer (1, kv_heads, T, d), keep per layer (1, kv_heads, T) bool."""
        return cls([RaggedLayer(k, v, m) for k, v, m in zip(keys, values, keep)])

    @classmethod
    def from_keep_batch(cls, keys: list[torch.Tensor], values: list[torch.Tensor],
                        keeps: list[list[torch.Tensor]]) -> "RaggedCache":
        """One prefill's keys/values per layer (1, kv_heads, T, d) under several keep sets: row b of the batch
        holds keeps[b] (per layer (1, kv_heads, T) bool)."""
        return cls([RaggedBatchLayer([RaggedLayer(k, v, keep[i]) for keep in keeps])
                    for i, (k, v) in enumerate(zip(keys, values))])

    def row_held_bytes(self) -> list[int]:
        """Bytes each batch row's tensors occupy now (a single-request cache is one row)."""
        rows = [layer.rows if isinstance(layer, RaggedBatchLayer) else [layer] for layer in self.layers]
        return [sum(layer_rows[b].held_bytes() for layer_rows in rows) for b in range(len(rows[0]))]

    def held_bytes(self) -> int:
        """Bytes the cache's tensors occupy now (keys and values of every head)."""
        return sum(layer.held_bytes() for layer in self.layers)


def _attend(layer: RaggedLayer, query: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """One request's attention over its heads' kept keys; query (1, q_heads, n, d) -> (1, q_heads, n, d)."""
    n = query.shape[2]
    hkv = len(layer.head_keys)
    g = query.shape[1] // hkv
    outs = []
    for h in range(hkv):
        k, v = layer.head_keys[h], layer.head_values[h]
        m = k.shape[0]
        mask = None                      # one new token sees every kept entry
        if n > 1:
            mask = torch.ones(n, m, dtype=torch.bool, device=query.device)
            mask[:, m - n:] = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
        q = query[:, h * g:(h + 1) * g]                                          # (1, g, n, d)
        outs.append(F.scaled_dot_product_attention(q, k[None, None].expand(1, g, m, -1),
                                                   v[None, None].expand(1, g, m, -1), attn_mask=mask,
                                                   scale=scaling))
    return torch.cat(outs, dim=1)


def ragged_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """Attention over each KV head's own kept keys; query (B, q_heads, n, d) -> (B, n, q_heads, d).

    The n new tokens are the last n entries of every head (appended by `RaggedLayer.update`): they see every
    kept prompt entry and, causally, each other. Row b of a batch reads row b's heads only.
    """
    layer = module.ragged_layer
    rows = layer.rows if isinstance(layer, RaggedBatchLayer) else [layer]
    out = torch.cat([_attend(row, query[b:b + 1], scaling) for b, row in enumerate(rows)], dim=0)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTN_NAME, ragged_attention)


@contextmanager
def ragged_attention_on(model: torch.nn.Module, cache: RaggedCache) -> Iterator[None]:
    """Decode `model` against `cache`: attention reads the heads' own tensors; restores the previous kernel."""
    previous = model.config._attn_implementation
    attn = [layer.self_attn for layer in model.model.layers]
    for module, layer in zip(attn, cache.layers):
        module.ragged_layer = layer
    model.set_attn_implementation(ATTN_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
        for module in attn:
            module.ragged_layer = None
