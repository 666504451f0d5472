"""kvpress 0.5.5 on transformers 5.24: the hook kwargs its presses expect, and keep masks from any press.

kvpress 0.5.5 declares transformers<5.3. Its `BasePress.forward_hook` reads `kwargs["past_key_values"]` and
`kwargs["cache_position"]`; transformers 5.x passes the cache as `cache=` and no cache position. The
adapter adds both (the cache position of the tokens just written: the layer's length after the update,
minus the query length), and nothing else changes: the press's own `compress` runs unmodified.

`install()` wraps `BasePress.forward_hook` once so `with press(model):` and kvpress's pipeline work as
documented. `press_keep_mask` runs a press's `compress` on one layer's captured prefill tensors (what the
hook hands it) and reads back which entries each KV head kept: rows a press gathered, minus the
`masked_key_indices` head-wise presses (AdaKV) leave on the module.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from kvpress import BasePress

_INSTALLED = "_planner_kwargs_adapter"


def adapt_hook_kwargs(module: torch.nn.Module, kwargs: dict) -> dict:
    """transformers 5.x attention kwargs -> what kvpress 0.5.5's hooks read (`past_key_values`, `cache_position`)."""
    out = dict(kwargs)
    cache = out.get("past_key_values", out.get("cache"))
    out["past_key_values"] = cache
    if out.get("cache_position") is None:
        q_len = out["hidden_states"].shape[1]
        seen = cache.layers[module.layer_idx].get_seq_length() if cache is not None else q_len
        out["cache_position"] = torch.arange(seen - q_len, seen, device=out["hidden_states"].device)
    return out


def install() -> None:
    """Make every kvpress press's forward hook read transformers 5.x kwargs (idempotent)."""
    hook = BasePress.forward_hook
    if getattr(hook, _INSTALLED, False):
        return

    @functools.wraps(hook)
    def forward_hook(self, module, inputs, kwargs, output):
        return hook(self, module, inputs, adapt_hook_kwargs(module, kwargs), output)

    setattr(forward_hook, _INSTALLED, True)
    BasePress.forward_hook = forward_hook


def _row_index(full: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Positions in `full` (T, d) of the rows of `kept` (n, d), matched exactly (kept rows are copies).

    Rows are matched by a random projection (sorted, binary-searched) and every match is then checked for
    exact equality; a row the projection cannot place (collision) falls back to matching the bytes."""
    proj = np.random.default_rng(0).standard_normal(full.shape[1])
    hf, hk = full.astype(np.float64) @ proj, kept.astype(np.float64) @ proj
    order = np.argsort(hf, kind="stable")
    pos = np.clip(np.searchsorted(hf[order], hk), 0, len(order) - 1)
    idx = order[pos]
    if len(kept) and bool((full[idx] == kept).all()):
        return idx.astype(np.int64)
    where = {row.tobytes(): i for i, row in enumerate(full)}
    try:
        return np.fromiter((where[row.tobytes()] for row in kept), dtype=np.int64, count=len(kept))
    except KeyError as exc:
        raise RuntimeError("the press returned keys that are not rows of the prompt's keys") from exc


def press_keep_mask(press: BasePress, module: torch.nn.Module, hidden: torch.Tensor, keys: torch.Tensor,
                    values: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The (1, kv_heads, T) keep mask a press's `compress` gives for one layer's prefill tensors."""
    t = keys.shape[2]
    kwargs = {"hidden_states": hidden, "position_embeddings": position_embeddings, "past_key_values": None,
              "cache_position": torch.arange(t)}
    module.masked_key_indices = None
    with torch.no_grad():
        k2, _ = press.compress(module, hidden, keys, values, None, kwargs)
    keep = torch.zeros(keys.shape[:3], dtype=torch.bool)
    full = keys[0].float().numpy()
    kept = k2[0].float().numpy()
    for h in range(keys.shape[1]):
        keep[0, h, torch.from_numpy(_row_index(full[h], kept[h]))] = True
    masked = getattr(module, "masked_key_indices", None)
    if masked is not None:
        # masked indices address the compressed cache's positions; map back to prompt positions per head
        b, hh, s = (x.cpu() for x in masked)
        for h in range(keys.shape[1]):
            pos = torch.from_numpy(_row_index(full[h], kept[h]))
            keep[0, h, pos[s[hh == h]]] = False
        module.masked_key_indices = None
    return keep
