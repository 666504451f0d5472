"""GVotePress: GVote's adaptive KV-cache compression as a kvpress press (the budget is an output).

A kvpress user drops it in where a fixed-ratio press would go:

    >>> from runtime.kv_budget.gvote_press import GVotePress
    >>> press = GVotePress(p_nuc=0.95, n_samples=8)
    >>> # with press(model): model(input_ids, past_key_values=cache)        (kvpress's own hook API)
    >>> # pipeline("kv-press-text-generation", model=model)(context, press=press)

Like kvpress's threshold presses (DMSPress) it reports what it achieved after the forward:
`compression_ratios[layer]` (share of the layer's KV entries evicted) and `compression_ratio` (their mean).
`keep_masks[layer]` holds the ragged keep sets, (batch, kv_heads, T) bool.

How the cache holds a ragged keep set (kvpress's head-wise mechanism, as AdaKV): every evicted (head, position)
is listed in `module.masked_key_indices`, which kvpress's attention patch turns into keys that receive zero
attention, so every layer keeps the prompt's length and kvpress's pipeline (one causal mask for all layers)
works unchanged. The bytes are accounted from the keep sets (what a ragged per-head store holds, sinks and
window included), not from the masked tensor; `runtime.kv_budget.ragged_cache` holds exactly the kept
entries, and a test checks that the masked and the physically pruned caches give the same logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from kvpress import BasePress

from runtime.kv_budget.keep_sets import add_successor_spans, gvote_layer


@dataclass
class GVotePress(BasePress):
    """GVote: keep per KV head the union of the keys sampled future queries need.

    p_nuc: share of the last query's attention mass kept (nucleus), in (0, 1]; 1 keeps everything.
    n_samples: S, Monte-Carlo sampled future queries (>= 1).
    n_sink: first tokens always kept. window: last tokens always kept.
    seed: RNG seed of the samples (layer l uses seed + l). cap_fraction: optional hard cap per head (share of T).
    fit, budget: the sampled-query model's reading (`keep_sets.gvote_keep_mask`); anchors, span: successor spans
    (`keep_sets.add_successor_spans`; 0 = none). With spans the masks of every layer are set once the last
    layer's keys are known (the cache keeps every entry until then: kvpress masks, it does not prune).
    """

    p_nuc: float = 0.95
    n_samples: int = 8
    n_sink: int = 4
    window: int = 32
    seed: int = 0
    cap_fraction: float | None = None
    fit: str = "prompt"
    budget: str = "top"
    anchors: int = 0
    span: int = 0
    compression_ratios: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    keep_masks: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _peaks: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _modules: dict[int, torch.nn.Module] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.p_nuc <= 1.0:
            raise ValueError(f"p_nuc must be in (0, 1], got {self.p_nuc}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {self.n_samples}")
        if self.n_sink < 0 or self.window < 0:
            raise ValueError("n_sink and window must be >= 0")
        if self.cap_fraction is not None and not 0.0 < self.cap_fraction <= 1.0:
            raise ValueError(f"cap_fraction must be in (0, 1], got {self.cap_fraction}")
        if self.fit not in ("prompt", "recent", "recent_cov", "prompt_cov"):
            raise ValueError(f"fit must be prompt, recent, recent_cov or prompt_cov, got {self.fit!r}")
        if self.budget not in ("top", "nucleus"):
            raise ValueError(f"budget must be top or nucleus, got {self.budget!r}")
        if self.anchors < 0 or self.span < 0:
            raise ValueError("anchors and span must be >= 0")

    @property
    def compression_ratio(self) -> float:
        """Mean over layers of the evicted share (read-only: it depends on the input)."""
        if not self.compression_ratios:
            raise RuntimeError("run a forward pass first: GVote's ratio is an output")
        return sum(self.compression_ratios.values()) / len(self.compression_ratios)

    @compression_ratio.setter
    def compression_ratio(self, value: float) -> None:
        raise AttributeError("GVote's compression ratio is an output; set p_nuc / n_samples instead")

    def layer_mask(self, module: torch.nn.Module, hidden_states: torch.Tensor,
                   keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's own keep mask (batch, kv_heads, T) before successor spans, and its anchor scores (b, T);
        hidden_states (batch, T, hidden), keys (b, kv_heads, T, d)."""
        return gvote_layer(module, module.rotary_emb, hidden_states, keys, self.p_nuc, self.n_samples,
                           self.n_sink, self.window, self.seed + int(module.layer_idx), self.cap_fraction,
                           self.fit, 32, self.budget)

    def keep_mask(self, module: torch.nn.Module, hidden_states: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The layer's keep mask without successor spans (which need every layer: see `all_masks`)."""
        return self.layer_mask(module, hidden_states, keys)[0]

    def all_masks(self, modules: list[torch.nn.Module], hidden_states: list[torch.Tensor],
                  keys: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every layer's keep mask (batch, kv_heads, T), successor spans included."""
        pairs = [self.layer_mask(m, h, k) for m, h, k in zip(modules, hidden_states, keys)]
        return add_successor_spans([p[0] for p in pairs], [p[1] for p in pairs], self.anchors, self.span)

    def compress(self, module: torch.nn.Module, hidden_states: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor, attentions: torch.Tensor | None, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values (b, kv_heads, T, d) unchanged; the evicted entries masked per head (see the module doc)."""
        layer = int(module.layer_idx)
        if layer == 0:
            self.compression_ratios.clear()
            self.keep_masks.clear()
            self._peaks.clear()
            self._modules.clear()
        keep, peak = self.layer_mask(module, hidden_states, keys)
        self._peaks[layer] = peak
        self._modules[layer] = module
        self._apply(layer, keep)
        if self.anchors > 0 and self.span > 0 and layer == int(module.config.num_hidden_layers) - 1:
            layers = sorted(self.keep_masks)
            spans = add_successor_spans([self.keep_masks[i] for i in layers], [self._peaks[i] for i in layers],
                                        self.anchors, self.span)
            for i, m in zip(layers, spans):
                self._apply(i, m)
        return keys, values

    def _apply(self, layer: int, keep: torch.Tensor) -> None:
        """Record a layer's keep mask and mask its evicted entries (kvpress's head-wise mechanism)."""
        self.keep_masks[layer] = keep
        self.compression_ratios[layer] = 1.0 - float(keep.float().mean())
        masked = ~keep
        self._modules[layer].masked_key_indices = torch.nonzero(masked, as_tuple=True) if bool(masked.any()) \
            else None
