"""llama.cpp's placement space for an MoE model on one GPU plus host memory, as dense arrays.

llama.cpp places whole tensors: `-ngl N` puts the last N transformer blocks (and, when N exceeds the
block count, the output head) on the GPU and keeps the first ones in host memory, and `-ot REGEX=CPU`
keeps the tensors whose GGUF name matches in host memory. A weight in host memory is computed on the
host (decode), or copied to the GPU for the op when the batch is large enough (prefill). There is no
cache: what is placed stays placed.

Per block l the problem holds its offloadable tensor groups g (the routed expert tensors
`ffn_{gate,up,down}_exps` and shared-expert tensors `ffn_{gate,up,down}_shexp`), each with its bytes and
its time per decode step on the GPU and from host memory, plus the rest of the block (attention,
norms, router, dense FFN, its KV cache) on the GPU or, for a host block, in host memory.
Times are seconds per decode step, sizes bytes. Names live only in `layer_names` / `group_names`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.common import Solution


@dataclass(frozen=True)
class LlamaCppProblem:
    """Everything the llama.cpp placement solvers read."""

    layer_names: tuple[str, ...]        # GGUF block names, "blk.0" ... in order
    group_names: tuple[str, ...]        # offloadable tensor groups (columns of the arrays below)
    group_present: np.ndarray           # (L, G) bool: the block has this group
    group_bytes: np.ndarray             # (L, G) int64: bytes of the group (weights and their biases)
    group_gpu_s: np.ndarray             # (L, G) s per step with the group on the GPU
    group_host_s: np.ndarray            # (L, G) s per step with the group in host memory
    rest_bytes: np.ndarray              # (L,) int64: rest of the block on the GPU (weights + KV cache)
    rest_gpu_s: np.ndarray              # (L,) s per step for the rest of the block on the GPU
    rest_host_s: np.ndarray             # (L,) s per step for the rest of the block on the host (host block)
    switch_s: float                     # one GPU <-> host hand-over inside a block (sync + activation copy)
    group_segments: tuple[tuple[int, ...], ...]   # groups computed in a row between two GPU parts of a block
    output_bytes: int                   # output head (and its norm)
    output_gpu_s: float
    output_host_s: float
    budget_bytes: int                   # VRAM for weights and KV cache (compute buffers and margin taken off)
    allow_host_layers: bool = True      # may the plan keep leading blocks in host memory (-ngl below the count)

    @property
    def num_layers(self) -> int:
        """L, every transformer block (dense ones included)."""
        return len(self.layer_names)

    @property
    def num_groups(self) -> int:
        """G."""
        return len(self.group_names)


@dataclass(frozen=True, kw_only=True)
class LlamaCppSolution(Solution):
    """A placement: the first `host_layers` blocks entirely in host memory, for every other block which
    groups sit on the GPU, and whether the output head is on the GPU. `objective` is the predicted time
    per decode step (s); `metrics` the cost model's `LlamaCppMetrics` for exactly these decisions."""

    host_layers: int
    gpu_groups: np.ndarray              # (L, G) bool; False for host blocks and absent groups
    output_on_gpu: bool
