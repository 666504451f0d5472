"""Memory and time of training chosen blocks of a block-expanded decoder, measured on this CPU.

The cost model of fed-expand (solvers/fed_expand/cost.py) needs, per step at a batch size and sequence
length: the forward F, the head's backward Bh, the backward Bb of each block at or above the lowest trained
one (the gradient path), the extra backward Bt of each trained block (its weight gradients), the head's
saved activations A_head, each path block's A_block and each trained block's extra A_train (a frozen
linear layer saves no input; a trained one does). Parameters, gradients and Adam state are counted exactly
from parameter sizes. Three measured configurations fit them: train only the top
block (lowest = E−1), only the bottom block (lowest = 0), and those two together, of the expanded model of
E blocks, each `repeats` real steps (kernels/block_training.py: saved-tensor hooks and CPU seconds), the least time kept.
`validate_profile` measures a third configuration and compares.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

from kernels.block_training import StepAccount, block_param_bytes, nbytes, random_batch, run_steps, train_blocks

PROFILE_VERSION = 1


@dataclass(frozen=True)
class BlockExpansionProfile:
    """Fitted per-step constants (host CPU seconds, bytes) of one model at (batch_size, seq_len, answer_tokens)."""

    model: str
    num_blocks: int               # E, blocks of the expanded model measured
    batch_size: int
    seq_len: int
    answer_tokens: int
    base_bytes: float             # parameters + buffers of the base model (B)
    block_bytes: float            # parameters of one block (B)
    act_fixed_bytes: float        # A_head
    act_block_bytes: float        # A_block
    act_train_bytes: float        # A_train
    forward_s: float              # F (host CPU s)
    backward_fixed_s: float       # Bh
    backward_block_s: float       # Bb
    backward_train_s: float       # Bt
    host_flops_per_cpu_s: float   # this CPU's fp32 matmul FLOP per CPU second
    source: str = "measured"

    def activation_bytes(self, lowest: int, count: int = 1) -> float:
        """Predicted saved bytes, `count` blocks trained with expanded block `lowest` the lowest (B)."""
        return self.act_fixed_bytes + (self.num_blocks - lowest) * self.act_block_bytes + count * self.act_train_bytes

    def step_s(self, lowest: int, count: int = 1) -> float:
        """Predicted host CPU seconds of one step, `count` blocks trained with `lowest` the lowest."""
        return (self.forward_s + self.backward_fixed_s + (self.num_blocks - lowest) * self.backward_block_s
                + count * self.backward_train_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


def profile_from_dict(d: Mapping[str, Any]) -> BlockExpansionProfile:
    """Inverse of `to_dict`."""
    return BlockExpansionProfile(**dict(d))


def measure(model: Any, blocks: Sequence[int], batch_size: int, seq_len: int, answer_tokens: int,
            repeats: int = 3, lr: float = 1e-4) -> tuple[StepAccount, dict[str, int]]:
    """`repeats` real steps of a copy of `model` training `blocks`; (least-time account, state bytes)."""
    m = copy.deepcopy(model)
    params = train_blocks(m, blocks)
    opt = torch.optim.Adam(params, lr=lr)
    vocab = int(m.config.vocab_size)
    best: StepAccount | None = None
    for r in range(max(1, repeats)):
        acc = run_steps(m, opt, [random_batch(vocab, batch_size, seq_len, answer_tokens, seed=r)])
        if best is None or acc.forward_cpu_s + acc.backward_cpu_s < best.forward_cpu_s + best.backward_cpu_s:
            best = StepAccount(max(acc.activation_bytes, best.activation_bytes if best else 0),
                               acc.forward_cpu_s, acc.backward_cpu_s, 1, acc.losses)
    return best, best.state_bytes(m, opt)


def profile_block_expansion(expanded: Any, base_bytes: float, name: str, batch_size: int, seq_len: int,
                            answer_tokens: int, repeats: int = 3) -> BlockExpansionProfile:
    """Fit the constants on `expanded` (a decoder of E ≥ 2 blocks): top only, bottom only, both."""
    from profilers.fine_tuning import host_matmul_flops_per_cpu_s

    E = len(expanded.model.layers)
    if E < 2:
        raise ValueError("an expanded model has at least two blocks")
    top, _ = measure(expanded, [E - 1], batch_size, seq_len, answer_tokens, repeats)
    bottom, _ = measure(expanded, [0], batch_size, seq_len, answer_tokens, repeats)
    both, _ = measure(expanded, [0, E - 1], batch_size, seq_len, answer_tokens, repeats)
    span = E - 1                                  # path blocks between the two lowest positions
    a_train = max(0.0, float(both.activation_bytes - bottom.activation_bytes))
    b_train = max(0.0, both.backward_cpu_s - bottom.backward_cpu_s)
    a_block = max(0.0, (bottom.activation_bytes - top.activation_bytes) / span)
    b_block = max(0.0, (bottom.backward_cpu_s - top.backward_cpu_s) / span)
    fwd = (top.forward_cpu_s + bottom.forward_cpu_s + both.forward_cpu_s) / 3
    return BlockExpansionProfile(
        model=name, num_blocks=E, batch_size=batch_size, seq_len=seq_len, answer_tokens=answer_tokens,
        base_bytes=float(base_bytes), block_bytes=float(block_param_bytes(expanded, E - 1)),
        act_fixed_bytes=max(0.0, top.activation_bytes - a_block - a_train), act_block_bytes=a_block,
        act_train_bytes=a_train, forward_s=fwd, backward_fixed_s=max(0.0, top.backward_cpu_s - b_block - b_train),
        backward_block_s=b_block, backward_train_s=b_train,
        host_flops_per_cpu_s=host_matmul_flops_per_cpu_s())


def validate_profile(expanded: Any, profile: BlockExpansionProfile, blocks: Sequence[int], repeats: int = 3
                     ) -> dict[str, float]:
    """Measured vs predicted activation bytes and step seconds for another trained set (relative errors)."""
    acc, _ = measure(expanded, blocks, profile.batch_size, profile.seq_len, profile.answer_tokens, repeats)
    low, k = min(blocks), len(set(blocks))
    return {"lowest": low, "count": k, "measured_activation_bytes": acc.activation_bytes,
            "predicted_activation_bytes": profile.activation_bytes(low, k),
            "activation_error": acc.activation_bytes / profile.activation_bytes(low, k) - 1,
            "measured_step_s": acc.forward_cpu_s + acc.backward_cpu_s, "predicted_step_s": profile.step_s(low, k),
            "step_error": (acc.forward_cpu_s + acc.backward_cpu_s) / profile.step_s(low, k) - 1}


def base_model_bytes(model: Any) -> int:
    """Parameters + buffers of a model (distinct storages; a tied head counted once) (B)."""
    return nbytes(list(model.parameters()) + list(model.buffers()))
