"""Activations saved for backward: count them, and store chosen blocks' copies quantised (docs/fed-lora.md, "Runtime").

`SavedTensorLedger` records what autograd keeps for backward through
`torch.autograd.graph.saved_tensors_hooks`: plain tensors by storage (a storage saved twice, or
through several views, counts once) and quantised copies by their packed size. Parameter and buffer
storages are skipped (their bytes are counted as weights, not activations).

`ActivationQuantizer(bits, group, min_numel)` is a pack/unpack pair: floating-point tensors with at
least `min_numel` elements are stored as `bits`-bit UAQ codes in groups of `group` elements
(`kernels.uniform_quant.quantize_groups`, 8 B of scale and zero point per group); other tensors pass
through. `quantize_saved_activations(blocks, ...)` installs it on modules, so everything those
modules save during their forward is quantised; the hooks nest inside an outer counting context.

    ledger = SavedTensorLedger(skip=parameter_storages(model))
    handles = quantize_saved_activations(model.blocks[:2], bits=8, ledger=ledger)
    with ledger.counting():
        loss = model(x).sum()
    ledger.activation_bytes       # bytes autograd holds for backward
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from kernels.uniform_quant import GroupedQuantizedTensor, dequantize_groups, quantize_groups

DEFAULT_MIN_NUMEL = 1024


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (its data pointer; the StorageImpl address for empty storages)."""
    st = t.untyped_storage()
    ptr = st.data_ptr()
    return ptr if ptr else id(st)


def parameter_storages(module: nn.Module) -> frozenset[int]:
    """Storage keys of every parameter and buffer of `module` (never counted or quantised as activations)."""
    keys = {storage_key(p) for p in module.parameters()}
    keys |= {storage_key(b) for b in module.buffers()}
    return frozenset(keys)


@dataclass
class SavedTensorLedger:
    """Bytes autograd holds for backward, deduplicated by storage; quantised copies by packed bytes.

    `plain` maps storage key -> storage bytes of tensors saved as they are (storages held for backward
    stay alive, so their addresses are not reused while counted); `packed` lists (elements, bytes) of
    every quantised copy. Storages in `skip` (parameters, buffers) are not counted.
    """

    skip: frozenset[int] = frozenset()
    plain: dict[int, int] = field(default_factory=dict)
    packed: list[tuple[int, int]] = field(default_factory=list)

    @property
    def activation_bytes(self) -> int:
        """Total bytes held for backward (B)."""
        return sum(self.plain.values()) + sum(b for _, b in self.packed)

    @property
    def quantised_elements(self) -> int:
        """Elements stored quantised."""
        return sum(n for n, _ in self.packed)

    def reset(self) -> None:
        """Forget everything counted so far (e.g. between training steps)."""
        self.plain.clear()
        self.packed.clear()

    def record_plain(self, t: torch.Tensor) -> None:
        """Count a tensor saved as it is (its whole storage, once)."""
        key = storage_key(t)
        if key not in self.skip:
            self.plain[key] = max(self.plain.get(key, 0), int(t.untyped_storage().nbytes()))

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """Pass-through pack hook that counts."""
        self.record_plain(t)
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        """Pass-through unpack hook."""
        return t

    @contextlib.contextmanager
    def counting(self) -> Iterator["SavedTensorLedger"]:
        """Count every tensor saved for backward inside the block (inner hooks, e.g. a quantiser, count too)."""
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            yield self


@dataclass
class ActivationQuantizer:
    """pack/unpack hooks storing floating-point saved tensors (>= `min_numel` elements) as `bits`-bit groups."""

    bits: int = 8
    group: int = 64
    min_numel: int = DEFAULT_MIN_NUMEL
    ledger: SavedTensorLedger | None = None
    skip: frozenset[int] = frozenset()
    # id(tensor) -> (weak reference to it, its quantised copy): the same tensor saved by two ops is
    # quantised once. The weak reference guards against a new tensor reusing a freed one's id.
    _cache: dict[int, tuple[Any, GroupedQuantizedTensor]] = field(default_factory=dict, repr=False)

    def _quantisable(self, t: torch.Tensor) -> bool:
        if not t.is_floating_point() or t.numel() < self.min_numel or t.device.type == "meta":
            return False
        key = storage_key(t)
        return key not in self.skip and (self.ledger is None or key not in self.ledger.skip)

    def pack(self, t: torch.Tensor) -> Any:
        """Quantise a saved activation (the same view saved twice is quantised once); pass others through."""
        if not self._quantisable(t):
            if self.ledger is not None:
                self.ledger.record_plain(t)
            return t
        hit = self._cache.get(id(t))
        if hit is not None and hit[0]() is t:
            return hit[1]
        q = quantize_groups(t, self.bits, self.group)
        self._cache[id(t)] = (weakref.ref(t), q)
        if self.ledger is not None:
            self.ledger.packed.append((int(t.numel()), q.nbytes))
        return q

    @staticmethod
    def unpack(obj: Any) -> torch.Tensor:
        """Dequantise a packed activation (plain tensors come back unchanged)."""
        if isinstance(obj, GroupedQuantizedTensor):
            return dequantize_groups(obj)
        return obj

    def clear(self) -> None:
        """Drop the per-step cache of quantised views (call between steps; autograd keeps its own references)."""
        self._cache.clear()


def quantize_saved_activations(blocks: Iterable[nn.Module], bits: int = 8, group: int = 64,
                               min_numel: int = DEFAULT_MIN_NUMEL, ledger: SavedTensorLedger | None = None,
                               skip: frozenset[int] = frozenset()) -> list[Any]:
    """Quantise everything `blocks` save for backward during their forward; returns removable hook handles.

    Each block enters a `saved_tensors_hooks` context in a forward pre-hook and leaves it in a forward
    hook that also runs when the forward raises, so the hook stack stays balanced.
    """
    handles: list[Any] = []
    for block in blocks:
        quantizer = ActivationQuantizer(bits=bits, group=group, min_numel=min_numel, ledger=ledger, skip=skip)
        stack: list[Any] = []

        def enter(_module: nn.Module, _args: Any, q: ActivationQuantizer = quantizer, s: list[Any] = stack) -> None:
            q.clear()
            ctx = torch.autograd.graph.saved_tensors_hooks(q.pack, q.unpack)
            ctx.__enter__()
            s.append(ctx)

        def leave(_module: nn.Module, _args: Any, _out: Any, s: list[Any] = stack) -> None:
            if s:
                s.pop().__exit__(None, None, None)

        handles.append(block.register_forward_pre_hook(enter))
        handles.append(block.register_forward_hook(leave, always_call=True))
    return handles


def detach_block_input(block: nn.Module) -> Any:
    """Detach the hidden state entering `block` (its first tensor argument, or `hidden_states=`), so that
    nothing below it is saved for backward or differentiated; returns the removable hook handle."""

    def pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args and torch.is_tensor(args[0]):
            args = (args[0].detach(),) + tuple(args[1:])
        elif torch.is_tensor(kwargs.get("hidden_states")):
            kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}
        return args, kwargs

    return block.register_forward_pre_hook(pre, with_kwargs=True)
