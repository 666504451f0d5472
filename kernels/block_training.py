"""One training step of a decoder whose trainable parameters are chosen blocks (FedBE's added blocks, or any
set), with the bytes it holds counted the same way in the profiler and the runtime.

`train_blocks(model, blocks)` freezes everything and unfreezes `model.model.layers[i]` for i in `blocks`;
`answer_loss(model, ids, mask)` is the next-token cross-entropy on the positions `mask` marks (the answer
tokens of an instruction example), computing the tied head only there (the head is 576 x 49 152 on SmolLM2:
applying it to every position would dominate the step). Gradients flow from the loss down to the lowest
trainable block and stop there: nothing below it needs a gradient, so autograd saves nothing below it.

`StepAccount` measures one step: CPU seconds of forward and backward (this process's `time.process_time`),
saved activation bytes (`SavedTensorLedger`: saved-tensor hooks, deduplicated by storage, parameters
excluded), and the bytes of frozen weights, trainable parameters, gradients and Adam state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from kernels.saved_activations import SavedTensorLedger, parameter_storages, storage_key


def train_blocks(model: nn.Module, blocks: Iterable[int]) -> list[nn.Parameter]:
    """Freeze every parameter, then unfreeze the decoder layers `blocks`; returns the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = model.model.layers
    out: list[nn.Parameter] = []
    for i in sorted(set(int(b) for b in blocks)):
        for p in layers[i].parameters():
            p.requires_grad_(True)
            out.append(p)
    return out


def answer_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ids[:, t+1] at the positions t where mask[:, t+1] is True.

    ids, mask: (batch, seq) int64 / bool; the first position is never a target."""
    hidden = model.model(input_ids=ids).last_hidden_state                 # (batch, seq, hidden)
    target = mask[:, 1:]
    h = hidden[:, :-1][target]                                           # (answer tokens, hidden)
    logits = model.lm_head(h)
    return nn.functional.cross_entropy(logits.float(), ids[:, 1:][target])


def nbytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages of `tensors` (None skipped)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            seen[storage_key(t)] = int(t.untyped_storage().nbytes())
    return sum(seen.values())


@dataclass
class StepAccount:
    """What steps held and took: the largest saved-activation bytes seen, CPU seconds per phase (sums)."""

    activation_bytes: int = 0
    forward_cpu_s: float = 0.0
    backward_cpu_s: float = 0.0
    steps: int = 0
    losses: tuple[float, ...] = ()

    def state_bytes(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        """Frozen weights + buffers, trainable parameters, gradients and optimiser state (B)."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        frozen = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
        states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
        return {"frozen_bytes": nbytes(frozen), "trainable_bytes": nbytes(trainable),
                "grad_bytes": nbytes(p.grad for p in trainable), "optimizer_bytes": nbytes(states)}


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
              account: StepAccount | None = None) -> StepAccount:
    """One optimiser step per (ids, mask) batch, counting saved activations and CPU seconds."""
    acc = account or StepAccount()
    ledger = SavedTensorLedger(skip=parameter_storages(model))
    model.train()
    losses = list(acc.losses)
    for ids, mask in batches:
        optimizer.zero_grad(set_to_none=True)
        ledger.reset()
        t0 = time.process_time()
        with ledger.counting():
            loss = answer_loss(model, ids, mask)
        t1 = time.process_time()
        acc.activation_bytes = max(acc.activation_bytes, ledger.activation_bytes)
        loss.backward()
        optimizer.step()
        t2 = time.process_time()
        acc.forward_cpu_s += t1 - t0
        acc.backward_cpu_s += t2 - t1
        acc.steps += 1
        losses.append(float(loss.detach()))
    acc.losses = tuple(losses)
    return acc


def random_batch(vocab: int, batch: int, seq: int, answer: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids with the last `answer` positions marked as the answer (for profiling)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    mask[:, seq - answer:] = True
    return ids, mask


def block_param_bytes(model: nn.Module, index: int) -> int:
    """Parameter bytes of decoder layer `index`."""
    return nbytes(model.model.layers[index].parameters())


def any_model(model: Any) -> bool:
    """Whether `model` has the decoder layout this module needs (`model.model.layers`, `lm_head`)."""
    return isinstance(getattr(getattr(model, "model", None), "layers", None), nn.ModuleList) and hasattr(model, "lm_head")
