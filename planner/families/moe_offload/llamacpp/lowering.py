"""Lowering for `--target llama.cpp`: model config + hardware + GGUF file type -> LlamaCppProblem, with
llama.cpp's own VRAM accounting and the source of every figure.

VRAM, as llama.cpp spends it (each item's source is recorded in the plan):
  * weights at the GGUF file type the user names (`--quant`): every tensor's type from llama-quantize's
    rules and ggml's block sizes (profilers.gguf_inventory); the input embedding stays in host memory
    (llama.cpp keeps the input layer on the CPU), the output head is on the GPU only with -ngl above the
    block count;
  * KV cache: f16 K and V (llama.cpp's default cache type) for n_ctx = context x sequences cells,
    padded to 256; MLA (DeepSeek) caches kv_lora_rank + rope dims as K and kv_lora_rank as V; a
    sliding-window block holds min(n_ctx, n_swa x sequences + n_ubatch) cells; a host block's cache
    lives in host memory;
  * the CUDA compute buffer: an estimate (or `--compute-buffer`) from the largest activation the graph
    holds at once for one micro-batch of `--ubatch` tokens with flash attention;
  * a free-memory margin of 1024 MiB, the default target margin of llama.cpp's `--fit`;
  * the CUDA context (667 MiB) and the driver's reservation (512 MiB), which --fit never sees (it starts from
    the free memory) but a plan made from the device's total must subtract (sources in MEMORY_SOURCES).
What is left is the budget the placement solver shares between blocks and tensor groups.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import PlannerError
from profilers.gguf_inventory import (EXPERT_STEMS, FILE_TYPES, SHARED_STEMS, SOURCES, GgufModel, inventory,
                                      tensor_bytes, tensor_types)
from profilers.hardware import GIB, HardwareProfile
from solvers.moe_offload.llamacpp.cost import Machine, evaluate, gpu_s, host_s, host_weight_s, switch_s
from solvers.moe_offload.llamacpp.problem import LlamaCppProblem

GROUPS = EXPERT_STEMS + SHARED_STEMS
SEGMENTS = ((0, 1, 2), (3, 4, 5))
FIT_MARGIN_BYTES = 1024 << 20
# not llama.cpp's allocations, but device memory its process cannot use (--fit works from cudaMemGetInfo's free
# memory, which already excludes both, and keeps FIT_MARGIN_BYTES free on top)
CUDA_CONTEXT_BYTES = 667 << 20     # eager module loading; ~287 MB with lazy loading (CUDA >= 12.2 on Linux)
DRIVER_RESERVED_BYTES = 512 << 20  # what an idle GPU shows in use with no process
KV_PAD = 256
KV_TYPE_BYTES = 2          # f16 K and V

MEMORY_SOURCES = {
    "weights": f"GGUF tensor types of the file type from {SOURCES['types']}; bytes from {SOURCES['block_sizes']}; "
               f"names and shapes from {SOURCES['names']}",
    "input_embedding": "in host memory: llama.cpp keeps the input layer (token_embd) on the CPU",
    "output_head": "on the GPU only when -ngl exceeds the block count (llama.cpp assigns the output layer to the GPU "
                   "for n_gpu_layers > n_layer)",
    "kv_cache": "llama.cpp KV cache: f16 K and V (default --cache-type-k/-v f16), n_ctx cells padded to 256, "
                "K = n_embd_k_gqa and V = n_embd_v_gqa per block (MLA: kv_lora_rank + rope dims and kv_lora_rank, one "
                "head; GGUF key_length/value_length of llama.cpp's DeepSeek conversion); sliding-window blocks hold "
                "min(n_ctx, n_swa x n_seq + n_ubatch) cells (llama.cpp's iSWA cache)",
    "compute_buffer": "estimate, not llama.cpp's figure: the largest live activations of one micro-batch (logits "
                      "n_vocab x ub x 4 B, expert/FFN intermediates, flash-attention tiles) plus 4 hidden-state "
                      "copies; llama.cpp prints its own as 'CUDA0 compute buffer size' (set it with --compute-buffer)",
    "margin": "1024 MiB: the default free-memory target margin of llama.cpp's --fit (common/fit.cpp)",
    "cuda_context": "667 MiB: a CUDA runtime context with eager module loading, as measured in PyTorch PR #86509 "
                    "(666,632,192 B eager vs 287,047,680 B with CUDA_MODULE_LOADING=LAZY, lazy loading being the "
                    "default on Linux since CUDA 12.2 per NVIDIA's CUDA Programming Guide, 'Lazy Loading'); the eager "
                    "figure is kept so a plan does not run out of memory at load",
    "driver_reserved": "512 MiB: device memory in use on an idle GPU with no process (nvidia-smi shows 459-507 MiB "
                       "of 24564 MiB on RTX 4090s with driver 550, reported in RLinf/RLinf issue #255); a reported "
                       "figure, not a documented constant",
}


@dataclass(frozen=True)
class LlamaCppOptions:
    """Settings of a `--target llama.cpp` plan (CLI flags map onto these)."""

    quant: str = "q4_k_m"
    context_tokens: int = 2048
    batch: int = 1                      # decode sequences in flight (-np); the KV cache holds context x batch
    ubatch: int = 512                   # -ub: micro-batch of prompt processing (sizes the compute buffer)
    compute_buffer_bytes: int | None = None
    margin_bytes: int = FIT_MARGIN_BYTES
    allow_host_layers: bool = True
    prompt_tokens: int = 512            # prompt length for the predicted TTFT (reported, not optimised)
    output_tokens: int = 256            # answer length for the predicted end-to-end time


@dataclass
class LlamaCppLowered:
    """The problem plus what lift and export need to name and explain it."""

    problem: LlamaCppProblem
    model: GgufModel
    types: dict[str, str]
    memory: dict[str, Any]
    options: LlamaCppOptions
    timing_source: str
    group_tensors: dict[tuple[int, str], list[str]] = field(default_factory=dict)   # (block, group) -> tensor names
    prefill: list[LlamaCppProblem] = field(default_factory=list)   # one problem per prompt micro-batch (same arrays but times)
    notes: list[str] = field(default_factory=list)

    def ttft_s(self, host_layers: int, gpu_groups: np.ndarray, output_on_gpu: bool) -> float:
        """Predicted time to first token of a placement: every prompt micro-batch in turn (s)."""
        return float(sum(evaluate(p, host_layers, gpu_groups, output_on_gpu).tpot_s for p in self.prefill))


def machine(hw: HardwareProfile) -> Machine:
    """The cost model's hardware constants from a profile (sustained figures)."""
    host = hw.host_bandwidth_bytes_per_s()
    if host is None:
        raise PlannerError(f"{hw.name} has no host memory bandwidth (host_memory_bandwidth_bytes_per_s), which a "
                           "llama.cpp plan needs for the tensors it keeps in host memory",
                           "add the field to the hardware profile or pick another --hardware")
    return Machine(gpu_bytes_per_s=hw.bandwidth_bytes_per_s(), gpu_flops_per_s=hw.flops_per_s("bf16"),
                   host_bytes_per_s=host, h2d_bytes_per_s=hw.h2d_bytes_per_s(), op_overhead_s=hw.op_overhead())


def distinct_experts(n_expert: int, k: int, tokens: int) -> float:
    """Expected distinct experts used by `tokens` tokens routed uniformly, k each: N(1 - (1 - k/N)^t)."""
    return n_expert * (1.0 - (1.0 - k / n_expert) ** tokens)


def kv_cells(m: GgufModel, layer: int, opts: LlamaCppOptions) -> int:
    """KV cells of one block."""
    n_ctx = math.ceil(opts.context_tokens * opts.batch / KV_PAD) * KV_PAD
    if m.swa_layers[layer]:
        swa = math.ceil((m.sliding_window * opts.batch + opts.ubatch) / KV_PAD) * KV_PAD
        return min(n_ctx, swa)
    return n_ctx


def compute_buffer_estimate(m: GgufModel, config: dict[str, Any], opts: LlamaCppOptions) -> int:
    """Estimated CUDA compute buffer for one micro-batch (bytes; see MEMORY_SOURCES['compute_buffer'])."""
    ub = opts.ubatch
    f32 = 4
    head_dim = int(config.get("head_dim") or config.get("v_head_dim") or m.n_embd // m.n_head)
    dense_ff = int(config.get("intermediate_size") or 0)
    candidates = [m.n_vocab * ub * f32,                              # logits of every micro-batch token
                  3 * m.n_expert_used * m.n_ff_exp * ub * f32,        # gate, up and their product per routed expert
                  3 * dense_ff * ub * f32,                            # dense FFN blocks
                  2 * m.n_head * max(head_dim, 128) * ub * f32]       # flash-attention Q and output
    return int(max(candidates) + 4 * m.n_embd * ub * f32)


def lower(config: dict[str, Any], hw: HardwareProfile, opts: LlamaCppOptions) -> LlamaCppLowered:
    """Build the llama.cpp placement problem for this model, device and workload."""
    if opts.quant not in FILE_TYPES:
        raise PlannerError(f"--quant {opts.quant} is not a llama.cpp file type known here", f"use one of: {', '.join(FILE_TYPES)}")
    mach = machine(hw)
    m = inventory(config)
    types = tensor_types(m, opts.quant)
    by_name = {t.name: t for t in m.tensors}
    size = {t.name: tensor_bytes(t, types[t.name]) for t in m.tensors}
    L, G = m.n_layer, len(GROUPS)
    B = opts.batch
    present = np.zeros((L, G), dtype=bool)
    gbytes = np.zeros((L, G), dtype=np.int64)
    gelems = np.zeros((L, G))
    rest_b = np.zeros(L, dtype=np.int64)
    rest_w = np.zeros(L)
    rest_elems = np.zeros(L)
    kv_cell = np.zeros(L)
    group_tensors: dict[tuple[int, str], list[str]] = {}
    kv_total = 0
    for l in range(L):
        names = [t.name for t in m.tensors if t.layer == l]
        grouped: set[str] = set()
        for g, stem in enumerate(GROUPS):
            members = [n for n in names if by_name[n].stem == stem]
            if not members:
                continue
            grouped.update(members)
            group_tensors[(l, stem)] = members
            present[l, g] = True
            gbytes[l, g] = sum(size[n] for n in members)
            gelems[l, g] = sum(by_name[n].elements for n in members)
        rest = [n for n in names if n not in grouped]
        rest_w[l] = sum(size[n] for n in rest)
        rest_elems[l] = sum(by_name[n].elements for n in rest)
        kv_cell[l] = (m.kv_k_per_token[l] + m.kv_v_per_token[l]) * KV_TYPE_BYTES
        kv = int(kv_cell[l]) * kv_cells(m, l, opts)
        kv_total += kv
        rest_b[l] = int(rest_w[l]) + kv
    is_expert = np.array([g in EXPERT_STEMS for g in GROUPS])

    def step_times(tokens: int, seqs: int, kv_len: int, attn_len: float) -> tuple[np.ndarray, ...]:
        """Per-step times of every group (GPU / host) and block rest (GPU / host) for `tokens` tokens of `seqs`
        sequences whose attention reads `kv_len` cached positions each (`attn_len` on average per token)."""
        g_gpu, g_host = np.zeros((L, G)), np.zeros((L, G))
        r_gpu, r_host = np.zeros(L), np.zeros(L)
        used = distinct_experts(m.n_expert, m.n_expert_used, tokens)
        for l in range(L):
            for g in np.flatnonzero(present[l]):
                if is_expert[g]:
                    # MUL_MAT_ID reads (and, offloaded, copies) only the experts the step's tokens use
                    read = gbytes[l, g] * used / m.n_expert
                    flops = 2.0 * tokens * m.n_expert_used * gelems[l, g] / m.n_expert
                else:
                    read, flops = float(gbytes[l, g]), 2.0 * tokens * gelems[l, g]
                g_gpu[l, g] = gpu_s(mach, read, flops)
                g_host[l, g] = host_weight_s(mach, tokens, read, flops, read)
            span = min(kv_len, m.sliding_window) if m.swa_layers[l] else kv_len
            attn = min(attn_len, m.sliding_window) if m.swa_layers[l] else attn_len
            kv_read = kv_cell[l] * span * seqs
            flops = 2.0 * tokens * rest_elems[l] + 2.0 * tokens * attn * kv_cell[l] / KV_TYPE_BYTES * m.n_gqa
            r_gpu[l] = gpu_s(mach, rest_w[l] + kv_read, flops)
            # a host block's weights follow the same rule (host compute, or copied to the GPU from 32 tokens)
            r_host[l] = host_weight_s(mach, tokens, rest_w[l] + kv_read, flops, rest_w[l] + kv_read)
        return g_gpu, g_host, r_gpu, r_host

    # decode: each of the B sequences reads the KV cache of its whole context (the end of a full context)
    g_gpu, g_host, rest_gpu, rest_host = step_times(B, B, opts.context_tokens, opts.context_tokens)
    out_name = "output.weight" if "output.weight" in by_name else "token_embd.weight"
    out_b = size[out_name] + size["output_norm.weight"]
    out_flops = 2.0 * B * by_name[out_name].elements
    cb = opts.compute_buffer_bytes if opts.compute_buffer_bytes is not None else compute_buffer_estimate(m, dict(config), opts)
    budget = hw.memory_bytes - cb - opts.margin_bytes - CUDA_CONTEXT_BYTES - DRIVER_RESERVED_BYTES
    all_weights = sum(size.values())
    memory = {
        "device_memory_bytes": int(hw.memory_bytes),
        "margin_bytes": int(opts.margin_bytes),
        "cuda_context_bytes": CUDA_CONTEXT_BYTES,
        "driver_reserved_bytes": DRIVER_RESERVED_BYTES,
        "compute_buffer_bytes": int(cb),
        "compute_buffer_source": "given (--compute-buffer)" if opts.compute_buffer_bytes is not None else "estimate",
        "weights_and_kv_budget_bytes": int(budget),
        "model_file_bytes": int(all_weights),
        "input_embedding_bytes": int(size["token_embd.weight"]) if out_name != "token_embd.weight" else 0,
        "output_head_bytes": int(out_b),
        "kv_cache_bytes_all_blocks": int(kv_total),
        "offloadable_group_bytes": int(gbytes.sum()),
        "n_ctx": int(math.ceil(opts.context_tokens * opts.batch / KV_PAD) * KV_PAD),
        "sources": dict(MEMORY_SOURCES),
    }
    if budget <= 0:
        raise PlannerError(f"{hw.name} has {hw.memory_bytes / GIB:.1f} GiB, less than llama.cpp's compute buffer "
                           f"({cb / GIB:.2f} GiB), the {opts.margin_bytes >> 20} MiB margin, the CUDA context and the "
                           f"driver's reservation ({(CUDA_CONTEXT_BYTES + DRIVER_RESERVED_BYTES) >> 20} MiB)",
                           "use a device with more memory or a smaller --ubatch")
    problem = LlamaCppProblem(
        layer_names=tuple(f"blk.{l}" for l in range(L)), group_names=GROUPS, group_present=present, group_bytes=gbytes,
        group_gpu_s=g_gpu, group_host_s=g_host, rest_bytes=rest_b, rest_gpu_s=rest_gpu, rest_host_s=rest_host,
        switch_s=switch_s(mach, 2.0 * m.n_embd * 4 * B), group_segments=SEGMENTS, output_bytes=int(out_b),
        output_gpu_s=gpu_s(mach, out_b, out_flops), output_host_s=host_s(mach, out_b), budget_bytes=int(budget),
        allow_host_layers=opts.allow_host_layers)
    # prompt processing, micro-batch by micro-batch (-ub tokens each): llama.cpp copies host weights to the GPU
    # for every micro-batch of at least 32 tokens (only the experts it uses), so each gets its own times;
    # logits are computed for the last prompt token only
    prefill = []
    P, ub = opts.prompt_tokens, opts.ubatch
    for i in range(math.ceil(P / ub)):
        u = min(ub, P - i * ub)
        pg, ph, rg, rh = step_times(u, 1, i * ub + u, i * ub + u / 2)
        last = i == math.ceil(P / ub) - 1
        out_one = 2.0 * by_name[out_name].elements
        prefill.append(dataclasses.replace(
            problem, group_gpu_s=pg, group_host_s=ph, rest_gpu_s=rg, rest_host_s=rh,
            switch_s=switch_s(mach, 2.0 * m.n_embd * 4 * u),
            output_gpu_s=gpu_s(mach, out_b, out_one) if last else 0.0, output_host_s=host_s(mach, out_b) if last else 0.0))
    source = (f"roofline on {hw.name} ({'measured' if hw.measured else 'catalog'} constants): GPU "
              f"{mach.gpu_bytes_per_s / 1e9:.0f} GB/s, host memory {mach.host_bytes_per_s / 1e9:.0f} GB/s, "
              f"link {mach.h2d_bytes_per_s / 1e9:.0f} GB/s, {mach.op_overhead_s * 1e6:.0f} us per GPU<->host hand-over")
    notes = []
    if B >= mach.offload_min_batch:
        notes.append(f"a decode batch of {B} reaches llama.cpp's offload threshold (32 tokens): host weights are "
                     "copied to the GPU for every step")
    return LlamaCppLowered(problem, m, types, memory, opts, source, group_tensors, prefill, notes)
