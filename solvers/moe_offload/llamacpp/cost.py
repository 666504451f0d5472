"""Cost model of llama.cpp's static placement: time per decode step and VRAM of a placement.

Per-tensor times (used by the lowering to fill the problem's arrays), from hardware constants given
as data (`Machine`):
  * a weight on the GPU: roofline, max(FLOPs / GPU FLOP/s, bytes read / GPU bandwidth);
  * a weight in host memory with fewer than `offload_min_batch` tokens in the step: computed on the
    host where it lives, bytes read / host memory bandwidth (memory-bound: the profiles carry no host
    FLOP/s figure, so large host batches are under-estimated);
  * a weight in host memory with at least `offload_min_batch` tokens (llama.cpp copies host weights to
    the GPU for the op from a batch of 32; ggml's CUDA backend `offload_op`, and for MUL_MAT_ID only
    the experts the batch uses): copied bytes / host-to-device bandwidth + the GPU roofline.
A block's time adds its parts and one `switch_s` per hand-over between GPU and host inside the block:
the ops of a block run in the order GPU (attention, router) -> each segment of groups (routed
experts gate, up, down; then shared experts) -> GPU, and every change of side is a graph split
(synchronisation plus a copy of the activations). A host block (below -ngl) runs wholly on the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.moe_offload.llamacpp.problem import LlamaCppProblem


@dataclass(frozen=True)
class Machine:
    """Hardware constants the per-tensor times need (sustained figures, SI units)."""

    gpu_bytes_per_s: float
    gpu_flops_per_s: float
    host_bytes_per_s: float
    h2d_bytes_per_s: float
    op_overhead_s: float
    offload_min_batch: int = 32


def gpu_s(m: Machine, bytes_read: float, flops: float) -> float:
    """A weight (or attention over the KV cache) computed on the GPU (s)."""
    return max(flops / m.gpu_flops_per_s, bytes_read / m.gpu_bytes_per_s)


def host_weight_s(m: Machine, tokens: int, bytes_read: float, flops: float, copy_bytes: float) -> float:
    """A weight in host memory: host compute below the offload batch, else copy to the GPU and compute there (s)."""
    if tokens >= m.offload_min_batch:
        return copy_bytes / m.h2d_bytes_per_s + gpu_s(m, bytes_read, flops)
    return bytes_read / m.host_bytes_per_s


def host_s(m: Machine, bytes_read: float) -> float:
    """Work of a host block (below -ngl) read from host memory (s)."""
    return bytes_read / m.host_bytes_per_s


def switch_s(m: Machine, activation_bytes: float) -> float:
    """One GPU <-> host hand-over: a synchronisation plus the activations over the link (s)."""
    return m.op_overhead_s + activation_bytes / m.h2d_bytes_per_s


# ------------------------------------------------------------------ placements
def switches(problem: LlamaCppProblem, layer: int, gpu_mask: np.ndarray) -> int:
    """Hand-overs between GPU and host inside a GPU block whose groups `gpu_mask` sit on the GPU."""
    n = 0
    present = problem.group_present[layer]
    for seg in problem.group_segments:
        side = True  # GPU before the segment
        for g in seg:
            if not present[g]:
                continue
            if bool(gpu_mask[g]) != side:
                n += 1
                side = bool(gpu_mask[g])
        if not side:
            n += 1  # back to the GPU after the segment
    return n


def layer_time_s(problem: LlamaCppProblem, layer: int, gpu_mask: np.ndarray, host_layer: bool) -> float:
    """Time of one block per decode step (s)."""
    present = problem.group_present[layer]
    if host_layer:
        return float(problem.rest_host_s[layer] + problem.group_host_s[layer][present].sum())
    on = present & gpu_mask
    off = present & ~gpu_mask
    return float(problem.rest_gpu_s[layer] + problem.group_gpu_s[layer][on].sum() + problem.group_host_s[layer][off].sum()
                 + problem.switch_s * switches(problem, layer, gpu_mask))


def layer_vram_bytes(problem: LlamaCppProblem, layer: int, gpu_mask: np.ndarray, host_layer: bool) -> int:
    """VRAM the block takes (weights and KV cache on the GPU)."""
    if host_layer:
        return 0
    on = problem.group_present[layer] & gpu_mask
    return int(problem.rest_bytes[layer] + problem.group_bytes[layer][on].sum())


def layer_options(problem: LlamaCppProblem, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every GPU-block placement of one block: (masks (K, G) bool, VRAM (K,), time (K,)).

    Masks cover the subsets of the groups the block has (absent groups stay False)."""
    present = np.flatnonzero(problem.group_present[layer])
    K = 1 << len(present)
    masks = np.zeros((K, problem.num_groups), dtype=bool)
    for k in range(K):
        for j, g in enumerate(present):
            masks[k, g] = bool(k >> j & 1)
    vram = np.array([layer_vram_bytes(problem, layer, m, False) for m in masks], dtype=np.int64)
    time = np.array([layer_time_s(problem, layer, m, False) for m in masks])
    return masks, vram, time


@dataclass(frozen=True)
class LlamaCppMetrics:
    """Predicted figures of one placement (times in s per decode step, sizes in bytes)."""

    layer_time_s: np.ndarray
    layer_vram_bytes: np.ndarray
    output_s: float
    tpot_s: float
    vram_bytes: int                   # weights + KV cache on the GPU (compute buffers and margin excluded)
    host_switches: int                # GPU <-> host hand-overs per step
    gpu_group_bytes: int              # offloadable tensor bytes on the GPU
    host_group_bytes: int             # offloadable tensor bytes in host memory


def evaluate(problem: LlamaCppProblem, host_layers: int, gpu_groups: np.ndarray, output_on_gpu: bool) -> LlamaCppMetrics:
    """Predicted metrics of a full placement."""
    L = problem.num_layers
    times = np.zeros(L)
    vram = np.zeros(L, dtype=np.int64)
    sw = 0
    for i in range(L):
        host = i < host_layers
        times[i] = layer_time_s(problem, i, gpu_groups[i], host)
        vram[i] = layer_vram_bytes(problem, i, gpu_groups[i], host)
        if not host:
            sw += switches(problem, i, gpu_groups[i])
    if 0 < host_layers < L:
        times[host_layers] += problem.switch_s   # the hand-over from the host blocks to the GPU blocks
        sw += 1
    out_s = problem.output_gpu_s if output_on_gpu else problem.output_host_s
    on = problem.group_present & gpu_groups
    on[:host_layers] = False
    total_vram = int(vram.sum()) + (problem.output_bytes if output_on_gpu else 0)
    gpu_bytes = int(problem.group_bytes[on].sum())
    host_bytes = int(problem.group_bytes[problem.group_present].sum()) - gpu_bytes
    return LlamaCppMetrics(times, vram, float(out_s), float(times.sum() + out_s), total_vram, sw, gpu_bytes, host_bytes)


def host_layer_time_s(problem: LlamaCppProblem, layer: int) -> float:
    """Time of a host block (everything in host memory)."""
    return layer_time_s(problem, layer, np.zeros(problem.num_groups, dtype=bool), True)
