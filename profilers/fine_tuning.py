"""Memory and time of LoRA fine-tuning at a given LoRA depth, measured on this CPU (docs/fed-lora.md, "Inputs").

A *task model* is an `nn.Module` with `fine_tuning_batch(batch_size, seq_len, seed) -> dict` and
`fine_tuning_loss(batch) -> Tensor`; `task_model(module, task)` wraps a causal LM (`CausalLMTask`: next
token loss, frozen tied head) or an encoder (`EncoderClassifier`: mean pooling + a trainable linear
classifier). Its transformer blocks are the longest `nn.ModuleList` of identical modules
(`block_layout`); LoRA targets the attention projections of each block (q/k/v/o, or GPT-2's fused
`c_attn` and `c_proj`).

`measure_step(...)` runs one real training step with PEFT LoRA on the top `depth` blocks, the saved
activations of the lowest `quant_blocks` of them quantised (kernels.saved_activations), and counts:
weight bytes, LoRA/head parameter + gradient + Adam bytes, the bytes autograd holds for backward
(`torch.autograd.graph.saved_tensors_hooks`, deduplicated by storage, parameters excluded), forward
and backward FLOPs (`FlopCounterMode`) and wall times.

`profile_fine_tuning(...)` measures four steps, (d, q) = (1, 0), (1, 1), (L, 0), (L, L), and fits the
per-block model used by the planner:

    S(d, q)  = S1 + (d − 1)·A_mid                                     if q = 0   (saved activation bytes)
             = S1q + (q − 1)·Aq_mid + (d − q)·A_mid                   if q ≥ 1
    M(d, q)  = M_W + d·m_lora + m_head + S(d, q) + M_ws                (peak training bytes)
    S1 = A_head + A_first (bottom trainable block's input needs no gradient, so it saves less than a
    middle block); S1q, Aq_mid: the same with the block quantised; quantised sizes at other bit widths
    come from the recorded shapes of the quantised tensors (`kernels.uniform_quant.grouped_nbytes`).
    M_ws, the transient workspace: what the step holds at its peak beyond the state and the saved
    activations (a causal LM's loss head makes batch × seq × vocabulary fp32 logits, their shifted copy,
    the log-softmax and their gradients, none of them seen by the saved-tensor hooks). It is measured
    at the allocator: the peak of live bytes torch's CPU allocator hands out during the step
    (`torch.profiler` memory events, `allocator_peak_bytes`), minus the state and saved bytes; the
    largest of the four profiled steps.

`FineTuneProfile.predict(d, q, bits)` gives the model's numbers; the validation test measures other
(d, q) points and compares. `closed_form_profile` is the fallback when a model cannot be run here
(the textbook closed form `s·β·h·(34 + 5·a·s/h)` bytes per fp16 layer, scaled to the weight dtype;
docs/fed-lora.md, "What was measured").
"""
from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kernels.saved_activations import SavedTensorLedger, parameter_storages, quantize_saved_activations, storage_key
from kernels.uniform_quant import grouped_nbytes

log = logging.getLogger(__name__)

ADAM_STATE_PER_PARAM = 2          # exp_avg and exp_avg_sq, same dtype as the parameter
PROFILE_VERSION = 5               # 3: the workspace is the allocator-measured transient peak; 5: step times
                                  # as a client's round: runtime allocator policy, 3 steps + Adam, median


# ------------------------------------------------------------------ task models
class CausalLMTask(nn.Module):
    """A causal LM trained on next-token loss over random token ids (the head is tied and stays frozen)."""

    trainable_head: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def fine_tuning_batch(self, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random token ids (batch_size, seq_len)."""
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, int(self.model.config.vocab_size), (batch_size, seq_len), generator=g)
        return {"input_ids": ids}

    def fine_tuning_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross entropy."""
        ids = batch["input_ids"]
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False)
        return out.loss


class EncoderClassifier(nn.Module):
    """An encoder with mean pooling and a linear classifier (`classifier`, trained in full)."""

    trainable_head: tuple[str, ...] = ("classifier",)

    def __init__(self, encoder: nn.Module, num_labels: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.classifier = nn.Linear(int(encoder.config.hidden_size), num_labels)
        self.num_labels = num_labels

    def fine_tuning_batch(self, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random token ids and labels."""
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, int(self.encoder.config.vocab_size), (batch_size, seq_len), generator=g)
        return {"input_ids": ids, "labels": torch.randint(0, self.num_labels, (batch_size,), generator=g)}

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Class logits from mean-pooled last hidden states."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
        return self.classifier(hidden.mean(dim=1))

    def fine_tuning_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross entropy of the classifier."""
        return nn.functional.cross_entropy(self.logits(batch["input_ids"]), batch["labels"])


def task_model(module: nn.Module, task: str, num_labels: int = 2) -> nn.Module:
    """Wrap a built model for fine-tuning: modules that define `fine_tuning_loss` are used as they are."""
    if hasattr(module, "fine_tuning_loss") and hasattr(module, "fine_tuning_batch"):
        return module
    if task == "causal-lm":
        return CausalLMTask(module)
    if task == "encoder":
        return EncoderClassifier(module, num_labels)
    raise ValueError(f"no fine-tuning task for models of task '{task}'")


# ------------------------------------------------------------------ structure
@dataclass(frozen=True)
class BlockLayout:
    """Where the blocks are (`path` of the ModuleList, its last name `pattern` for PEFT's
    `layers_pattern`), how many, the LoRA target module names inside a block, and the head modules
    trained in full."""

    path: str
    pattern: str
    num_blocks: int
    target_modules: tuple[str, ...]
    head_modules: tuple[str, ...]


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def block_layout(model: nn.Module, target_modules: tuple[str, ...] | None = None) -> BlockLayout:
    """Find the transformer blocks (the longest ModuleList of one module class) and the attention projections."""
    best: tuple[int, str] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(c) for c in mod}) == 1:
            if best is None or len(mod) > best[0]:
                best = (len(mod), name)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of identical blocks to put LoRA on")
    path = best[1]
    blocks = model.get_submodule(path)
    if target_modules is None:
        names = [n for n, m in blocks[0].named_modules()
                 if n and _is_linear(m) and ("attn" in n or "attention" in n)]
        target_modules = tuple(names)
    if not target_modules:
        raise ValueError(f"no attention projections found in {path}.0 for LoRA")
    head = tuple(getattr(model, "trainable_head", ()))
    return BlockLayout(path=path, pattern=path.split(".")[-1], num_blocks=len(blocks),
                       target_modules=tuple(target_modules), head_modules=head)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (FedQuad's defaults)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0


def apply_lora(model: nn.Module, layout: BlockLayout, depth: int, lora: LoraSettings) -> nn.Module:
    """Insert PEFT LoRA adapters into the top `depth` blocks in place; freeze everything else except the head."""
    from peft import LoraConfig, inject_adapter_in_model

    top = list(range(layout.num_blocks - depth, layout.num_blocks))
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(layout.target_modules), layers_to_transform=top,
                     layers_pattern=layout.pattern)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or any(name.startswith(h + ".") for h in layout.head_modules))
    return model


# ------------------------------------------------------------------ one measured step
@dataclass(frozen=True)
class StepMeasurement:
    """What one training step held and did (bytes, FLOPs, seconds on this CPU)."""

    depth: int
    quant_blocks: int
    bits: int
    weight_bytes: int               # frozen parameters and buffers (B)
    lora_param_bytes: int           # LoRA parameters (B)
    head_param_bytes: int           # head parameters trained in full (B)
    grad_bytes: int                 # gradients after backward (B)
    optimizer_bytes: int            # Adam state after one step (B)
    activation_bytes: int           # held for backward at the end of the forward (B)
    quantised_elements: int         # elements stored quantised
    quantised_numels: tuple[int, ...]   # element count of every quantised tensor (to size other bit widths)
    trainable_blocks: tuple[int, ...]   # blocks whose LoRA weights received a gradient
    forward_flops: int
    backward_flops: int
    forward_s: float
    backward_s: float
    step_peak_bytes: int = -1       # peak live allocator bytes during the step above its start (B); -1: not tracked
    step_s_mean: float = -1.0       # mean CPU s of the `repeats` consecutive steps, forward + backward + optimizer

    @property
    def training_bytes(self) -> int:
        """Weights + LoRA/head parameters, gradients and optimizer state + saved activations (B)."""
        return (self.weight_bytes + self.lora_param_bytes + self.head_param_bytes + self.grad_bytes
                + self.optimizer_bytes + self.activation_bytes)


@contextlib.contextmanager
def _stderr_silenced() -> Any:
    """File descriptor 2 points at /dev/null inside the block (native code's log lines included)."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def allocator_peak_bytes() -> Any:
    """Context manager yielding a dict whose "peak" is, on exit, the largest sum of live bytes torch's CPU
    allocator handed out inside the block above what was live at its start (B), from the profiler's
    memory events (every allocation and free, in time order); independent of autograd's saved-tensor hooks."""
    from torch.profiler import ProfilerActivity, profile

    out = {"peak": 0, "end": 0}
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():      # kineto writes "USDT: ... profiler_start/stop" lines to fd 2
        prof.start()
    try:
        yield out
    finally:
        with _stderr_silenced():
            prof.stop()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += int(e.nbytes())
        peak = max(peak, live)
    out["peak"], out["end"] = peak, live


def _bytes_of(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        seen[storage_key(t)] = int(t.untyped_storage().nbytes())
    return sum(seen.values())


def measure_step(model: nn.Module, layout: BlockLayout, depth: int, quant_blocks: int = 0, bits: int = 8,
                 group: int = 64, lora: LoraSettings = LoraSettings(), batch_size: int = 4, seq_len: int = 64,
                 seed: int = 0, copy_model: bool = True, count_flops: bool = True, repeats: int = 1,
                 track_allocator: bool = False) -> StepMeasurement:
    """One real training step of `model` (a task model) with LoRA on the top `depth` blocks, the lowest
    `quant_blocks` of them storing their saved activations at `bits` bits; see `StepMeasurement`.
    FLOPs are counted only with `count_flops` (the counter slows small models down several times).
    Times are CPU seconds of this process (`time.process_time`, so other load on the machine does not
    inflate them), the least of `repeats` steps; bytes and FLOPs come from the first step. With
    `track_allocator` the steps run under `allocator_peak_bytes` (slower) and `step_peak_bytes` is set."""
    if not 1 <= depth <= layout.num_blocks or not 0 <= quant_blocks <= depth:
        raise ValueError(f"need 1 <= depth <= {layout.num_blocks} and 0 <= quant_blocks <= depth")
    m = copy.deepcopy(model) if copy_model else model
    apply_lora(m, layout, depth, lora)
    m.train()
    blocks = m.get_submodule(layout.path)
    first = layout.num_blocks - depth
    ledger = SavedTensorLedger(skip=parameter_storages(m))
    handles = quantize_saved_activations([blocks[i] for i in range(first, first + quant_blocks)], bits=bits,
                                         group=group, ledger=ledger)

    trainable = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-4)
    batch = m.fine_tuning_batch(batch_size, seq_len, seed)
    fwd_times, bwd_times, step_times = [], [], []
    tracker = allocator_peak_bytes() if track_allocator else contextlib.nullcontext({"peak": -1})
    try:
        with tracker as peak:
            for rep in range(max(1, repeats)):
                first_rep = rep == 0
                opt.zero_grad(set_to_none=True)
                ledger.reset()
                fwd = FlopCounterMode(display=False) if (count_flops and first_rep) else contextlib.nullcontext()
                t0 = time.process_time()
                with ledger.counting(), fwd:
                    loss = m.fine_tuning_loss(batch)
                t1 = time.process_time()
                if first_rep:
                    activation = ledger.activation_bytes
                    qel = ledger.quantised_elements
                    numels = _quantised_numels(ledger)
                    fwd_flops = int(fwd.get_total_flops()) if count_flops else 0
                bwd = FlopCounterMode(display=False) if (count_flops and first_rep) else contextlib.nullcontext()
                with bwd:
                    loss.backward()
                t2 = time.process_time()
                if first_rep:
                    bwd_flops = int(bwd.get_total_flops()) if count_flops else 0
                fwd_times.append(t1 - t0)
                bwd_times.append(t2 - t1)
                opt.step()
                step_times.append(time.process_time() - t0)
    finally:
        for h in handles:
            h.remove()
    lora_params = [p for n, p in m.named_parameters() if "lora_" in n]
    head_params = [p for n, p in m.named_parameters() if p.requires_grad and "lora_" not in n]
    frozen = [p for p in m.parameters() if not p.requires_grad] + list(m.buffers())
    grads = [p.grad for p in trainable if p.grad is not None]
    states = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    got_grad = tuple(i for i in range(layout.num_blocks)
                     if any("lora_" in n and p.grad is not None for n, p in blocks[i].named_parameters()))
    return StepMeasurement(
        depth=depth, quant_blocks=quant_blocks, bits=bits, weight_bytes=_bytes_of(frozen),
        lora_param_bytes=_bytes_of(lora_params), head_param_bytes=_bytes_of(head_params),
        grad_bytes=_bytes_of(grads), optimizer_bytes=_bytes_of(states), activation_bytes=activation,
        quantised_elements=qel, quantised_numels=tuple(numels), trainable_blocks=got_grad,
        forward_flops=fwd_flops, backward_flops=bwd_flops, forward_s=min(fwd_times), backward_s=min(bwd_times),
        step_peak_bytes=int(peak["peak"]), step_s_mean=sum(step_times) / len(step_times))


def transient_bytes(step: StepMeasurement, peak_bytes: int) -> int:
    """What a step held at its allocator peak beyond the state it creates (gradients, Adam) and the activations
    saved for backward (B); `peak_bytes` is its `step_peak_bytes` (live bytes above the step's start, where the
    weights and LoRA parameters already exist)."""
    return max(0, int(peak_bytes) - step.grad_bytes - step.optimizer_bytes - step.activation_bytes)


def _quantised_numels(ledger: SavedTensorLedger) -> list[int]:
    """Element counts of the quantised views in a ledger (view keys hold the shape)."""
    return [n for n, _ in ledger.packed]


# ------------------------------------------------------------------ the fitted model
@dataclass(frozen=True)
class FineTuneProfile:
    """Per-block memory/FLOP model of LoRA fine-tuning one model at (batch_size, seq_len); bytes in B.

    See the module docstring for the formulas. `quantised_numels_first/_mid` are the element counts
    of the tensors a bottom/middle trainable block stores quantised; `*_q_fixed_bytes` what such a
    block still saves unquantised (small tensors, integer masks).
    """

    model: str
    num_blocks: int
    batch_size: int
    seq_len: int
    layout: BlockLayout
    lora: LoraSettings
    group: int
    weight_bytes: int
    lora_param_bytes_per_block: int
    lora_state_bytes_per_block: int         # m_lora: parameters + gradients + Adam (B)
    head_state_bytes: int                   # trainable head: parameters + gradients + Adam (B)
    saved_first_bytes: int                  # S1 = A_head + A_first
    saved_mid_bytes: int                    # A_mid
    first_q_fixed_bytes: int                # S1q minus its quantised tensors
    mid_q_fixed_bytes: int
    quantised_numels_first: tuple[int, ...]
    quantised_numels_mid: tuple[int, ...]
    workspace_bytes: int                    # M_ws
    forward_flops: int                      # whole model, per step
    backward_flops_first: int               # head + bottom trainable block
    backward_flops_mid: int                 # one more trainable block
    block_param_bytes: int                  # weights of one block (read in forward and backward)
    host_forward_s: float                   # CPU s here, one thread: forward at depth 1
    host_backward_s_first: float            # backward at depth 1 (head + bottom trainable block)
    host_backward_s_mid: float              # each further trainable block: its backward + extra forward
    host_quant_s_first: float               # quantise + restore the bottom block's saved activations, CPU s
    host_quant_s_mid: float
    host_flops_per_cpu_s: float             # fp32 matmul FLOP per CPU second of this process, here
    source: str
    version: int = PROFILE_VERSION

    def quantised_block_bytes(self, position: str, bits: int) -> int:
        """Saved bytes of a quantised bottom ('first', including the head) or middle ('mid') block (B)."""
        numels = self.quantised_numels_first if position == "first" else self.quantised_numels_mid
        fixed = self.first_q_fixed_bytes if position == "first" else self.mid_q_fixed_bytes
        return fixed + sum(grouped_nbytes(n, bits, self.group) for n in numels)

    def saved_bytes(self, depth: int, quant_blocks: int, bits: int = 8) -> int:
        """S(d, q): bytes held for backward (B)."""
        d, q = int(depth), int(quant_blocks)
        if q == 0:
            return self.saved_first_bytes + (d - 1) * self.saved_mid_bytes
        return (self.quantised_block_bytes("first", bits) + (q - 1) * self.quantised_block_bytes("mid", bits)
                + (d - q) * self.saved_mid_bytes)

    def state_bytes(self, depth: int) -> int:
        """Weights + LoRA and head parameters, gradients and Adam state (B)."""
        return self.weight_bytes + depth * self.lora_state_bytes_per_block + self.head_state_bytes

    def training_bytes(self, depth: int, quant_blocks: int, bits: int = 8) -> int:
        """What `StepMeasurement.training_bytes` measures: state + saved activations (B)."""
        return self.state_bytes(depth) + self.saved_bytes(depth, quant_blocks, bits)

    def peak_bytes(self, depth: int, quant_blocks: int, bits: int = 8) -> int:
        """M(d, q): training bytes plus the workspace (B)."""
        return self.training_bytes(depth, quant_blocks, bits) + self.workspace_bytes

    def quantised_elements(self, position: str) -> int:
        """Elements one quantised block stores quantised (for the quantisation time)."""
        return sum(self.quantised_numels_first if position == "first" else self.quantised_numels_mid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        d = asdict(self)
        d["layout"] = asdict(self.layout)
        d["lora"] = asdict(self.lora)
        return d


def profile_from_dict(d: Mapping[str, Any]) -> FineTuneProfile:
    """Inverse of `FineTuneProfile.to_dict`."""
    vals = dict(d)
    lay = dict(vals["layout"])
    vals["layout"] = BlockLayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in lay.items()})
    vals["lora"] = LoraSettings(**vals["lora"])
    for k in ("quantised_numels_first", "quantised_numels_mid"):
        vals[k] = tuple(int(x) for x in vals[k])
    return FineTuneProfile(**vals)


def _split_numels(outer: tuple[int, ...], inner: tuple[int, ...]) -> tuple[int, ...]:
    """Multiset difference outer − inner (the tensors the middle blocks add)."""
    rest = list(outer)
    for n in inner:
        if n in rest:
            rest.remove(n)
    return tuple(rest)


def profile_fine_tuning(model: nn.Module, name: str, batch_size: int, seq_len: int,
                        lora: LoraSettings = LoraSettings(), group: int = 64, bits: int = 8,
                        target_modules: tuple[str, ...] | None = None, seed: int = 0, repeats: int = 3,
                        runtime_allocator: bool = False, local_steps: int = 3) -> FineTuneProfile:
    """Measure four training steps of `model` (a task model, real weights on CPU) and fit `FineTuneProfile`;
    this CPU's matmul FLOP per CPU second is measured alongside (the planner scales host times to a device by
    the FLOP/s ratio).

    Host times are what the fed-lora client runtime pays per step: each of `repeats` rounds runs the four
    configurations once each, interleaved (so load drifts hit them alike), each as a client's round does:
    `local_steps` consecutive steps (forward, backward, Adam) on a fresh copy of the model; a configuration's
    time is the MEDIAN over rounds of the mean CPU seconds per step. With `runtime_allocator` the process first fixes glibc's mmap threshold as every client does
    (`kernels.malloc_policy`; for the whole process, irreversibly): under that policy every multi-MiB tensor is
    a fresh mapping whose pages the kernel faults in and zeroes, a cost that grows with the bytes a step
    allocates, so with the saved activations of every trainable block (docs/fed-lora.md, "Round-time model").
    Before (profile version 3) the times were the least of 2 steps under glibc's default policy: on
    SmolLM2:4L at batch 4, seq 48 a further trainable block read 2 ms where the client runtime paid ~80 ms."""
    layout = block_layout(model, target_modules)
    L = layout.num_blocks
    runs, workspace = {}, {}
    # One intra-op thread: CPU seconds then measure work, not the spin-waiting of idle OpenMP threads
    # (with two threads on a loaded machine the same step read 2-6x more CPU seconds, erratically).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configs = ((1, 0), (1, 1), (L, 0), (L, L))
    fwd_s: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    step_s: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    if runtime_allocator:
        from kernels.malloc_policy import pin_mmap_threshold

        pin_mmap_threshold()
    try:
        for d, q in configs:
            runs[(d, q)] = measure_step(model, layout, d, q, bits, group, lora, batch_size, seq_len, seed,
                                        count_flops=(q == 0))
            # the allocator's peak in a separate step: the profiler would inflate the CPU times above
            peak = measure_step(model, layout, d, q, bits, group, lora, batch_size, seq_len, seed,
                                count_flops=False, track_allocator=True).step_peak_bytes
            workspace[(d, q)] = transient_bytes(runs[(d, q)], peak)
            log.debug("profile %s d=%d q=%d: %s", name, d, q, runs[(d, q)])
        for _ in range(max(1, repeats)):            # timing: interleaved, a client's round on a fresh copy each
            for d, q in configs:
                m = measure_step(model, layout, d, q, bits, group, lora, batch_size, seq_len, seed,
                                 count_flops=False, repeats=local_steps)
                fwd_s[(d, q)].append(m.forward_s)
                step_s[(d, q)].append(m.step_s_mean)
        host_rate = host_matmul_flops_per_cpu_s()
    finally:
        torch.set_num_threads(threads)
    t = {c: float(statistics.median(v)) for c, v in step_s.items()}
    t_fwd = float(statistics.median(fwd_s[(1, 0)]))
    r10, r11, rL0, rLL = runs[(1, 0)], runs[(1, 1)], runs[(L, 0)], runs[(L, L)]
    mids = max(L - 1, 1)
    a_mid = (rL0.activation_bytes - r10.activation_bytes) // mids if L > 1 else 0
    lora_block = rL0.lora_param_bytes // L
    first_numels = r11.quantised_numels
    mid_numels_all = _split_numels(rLL.quantised_numels, first_numels)
    mid_numels = _one_block(mid_numels_all, mids) if L > 1 else ()
    q_first_bytes = sum(grouped_nbytes(n, bits, group) for n in first_numels)
    q_all_bytes = sum(grouped_nbytes(n, bits, group) for n in rLL.quantised_numels)
    first_fixed = r11.activation_bytes - q_first_bytes
    mid_fixed = ((rLL.activation_bytes - q_all_bytes) - first_fixed) // mids if L > 1 else 0
    # Gradients and Adam moments have the parameters' dtype and size.
    state_factor = 2 + ADAM_STATE_PER_PARAM
    head = r10.head_param_bytes
    blocks = model.get_submodule(layout.path)
    block_bytes = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    return FineTuneProfile(
        model=name, num_blocks=L, batch_size=batch_size, seq_len=seq_len, layout=layout, lora=lora, group=group,
        weight_bytes=r10.weight_bytes, lora_param_bytes_per_block=lora_block,
        lora_state_bytes_per_block=state_factor * lora_block, head_state_bytes=state_factor * head,
        saved_first_bytes=r10.activation_bytes, saved_mid_bytes=a_mid,
        first_q_fixed_bytes=max(0, first_fixed), mid_q_fixed_bytes=max(0, mid_fixed),
        quantised_numels_first=tuple(first_numels), quantised_numels_mid=mid_numels,
        workspace_bytes=max(workspace.values()),
        forward_flops=r10.forward_flops, backward_flops_first=r10.backward_flops,
        backward_flops_mid=(rL0.backward_flops - r10.backward_flops) // mids if L > 1 else 0,
        block_param_bytes=block_bytes, host_forward_s=t_fwd,
        host_backward_s_first=max(0.0, t[(1, 0)] - t_fwd),
        # A further trainable block costs its backward, the extra forward work autograd records for it and the
        # allocator's cost of its saved activations.
        host_backward_s_mid=max(0.0, (t[(L, 0)] - t[(1, 0)]) / mids) if L > 1 else 0.0,
        host_quant_s_first=max(0.0, t[(1, 1)] - t[(1, 0)]),
        host_quant_s_mid=max(0.0, (t[(L, L)] - t[(L, 0)] - max(0.0, t[(1, 1)] - t[(1, 0)])) / mids)
        if L > 1 else 0.0,
        host_flops_per_cpu_s=host_rate,
        source=(f"measured on this CPU: 4 training steps (d,q) in (1,0),(1,1),({L},0),({L},{L}) at batch "
                f"{batch_size}, seq {seq_len}; saved_tensors_hooks bytes, FlopCounterMode FLOPs, workspace from the "
                f"allocator's peak (torch.profiler memory events); CPU s per step: median over {max(1, repeats)} "
                f"interleaved rounds of {local_steps} steps (forward, backward, Adam) on fresh copies"
                + (", under the client runtime's allocator policy (mmap threshold 128 KiB)" if runtime_allocator
                   else ", under glibc's default allocator policy")))


def host_matmul_flops_per_cpu_s(n: int = 384, repeats: int = 7) -> float:
    """fp32 matmul FLOP per CPU second of this process (median of `repeats` n x n products after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(4):
            torch.mm(a, b)
        times.append((time.process_time() - t0) / 4)
    times.sort()
    return 2.0 * n**3 / max(times[len(times) // 2], 1e-9)


def _one_block(numels: tuple[int, ...], blocks: int) -> tuple[int, ...]:
    """The element counts of one middle block, given those of `blocks` identical middle blocks."""
    counts: dict[int, int] = {}
    for n in numels:
        counts[n] = counts.get(n, 0) + 1
    out = []
    for n, c in sorted(counts.items()):
        out += [n] * (c // blocks)
    return tuple(out)


def closed_form_profile(name: str, num_blocks: int, hidden: int, heads: int, param_count: int, block_params: int,
                        batch_size: int, seq_len: int, dtype_bytes: int = 4, lora: LoraSettings = LoraSettings(),
                        group: int = 64, lora_targets_per_block: int = 4) -> FineTuneProfile:
    """Fallback when a model cannot be run here: the textbook per-layer activation size
    `s·β·h·(34 + 5·a·s/h)` bytes per fp16 layer (scaled to `dtype_bytes`), FLOPs from 2·params·tokens."""
    tokens = batch_size * seq_len
    a_block = int(tokens * hidden * (34 + 5 * heads * seq_len / hidden) * dtype_bytes / 2)
    lora_block = lora_targets_per_block * lora.rank * 2 * hidden * dtype_bytes
    elems = a_block // dtype_bytes
    numels = tuple([group * 1024] * (elems // (group * 1024)))
    fwd = 2 * param_count * tokens
    layout = BlockLayout(path="?", pattern="?", num_blocks=num_blocks, target_modules=(), head_modules=())
    return FineTuneProfile(
        model=name, num_blocks=num_blocks, batch_size=batch_size, seq_len=seq_len, layout=layout, lora=lora,
        group=group, weight_bytes=param_count * dtype_bytes, lora_param_bytes_per_block=lora_block,
        lora_state_bytes_per_block=4 * lora_block, head_state_bytes=0, saved_first_bytes=a_block,
        saved_mid_bytes=a_block, first_q_fixed_bytes=0, mid_q_fixed_bytes=0, quantised_numels_first=numels,
        quantised_numels_mid=numels, workspace_bytes=a_block, forward_flops=fwd,
        backward_flops_first=2 * block_params * tokens, backward_flops_mid=2 * block_params * tokens,
        block_param_bytes=block_params * dtype_bytes, host_forward_s=0.0, host_backward_s_first=0.0,
        host_backward_s_mid=0.0, host_quant_s_first=0.0, host_quant_s_mid=0.0, host_flops_per_cpu_s=0.0, source="closed form s·β·h·(34 + 5·a·s/h) (not measured)")


__all__ = ["BlockLayout", "CausalLMTask", "EncoderClassifier", "FineTuneProfile", "LoraSettings", "StepMeasurement",
           "apply_lora", "block_layout", "closed_form_profile", "measure_step", "profile_fine_tuning",
           "profile_from_dict", "task_model"]
