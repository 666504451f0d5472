"""fed-expand lowering: population + data split + measured profile -> FedExpandProblem, for each layout of the
added blocks; and the predictions of the baselines that train other parameters (LoRA, full fine-tuning).

  * clients in natural id order (profilers/population.py); memory M_c = what the population gives, less
    `--memory-margin`; deadline: `--deadline` (the same for every client, inf without it); links in bytes/s;
  * samples and data signatures from the `--data` split (testbeds/instruct.py), one share per client;
  * host step constants measured on this CPU (profilers/block_expansion.py) and scaled to each device by this
    CPU's matmul FLOP per CPU second over the device profile's fp32 FLOP/s (as fed-lora does);
  * layouts: the P added blocks interleaved uniformly over the top `span` base blocks (LLaMA-Pro inserts one
    after every L/P blocks: span = L); spans from L down to P are tried and the widest one every client can
    take part in wins (a wider span adapts lower representations, but backward then runs deeper).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import PlannerError
from planner.units import fmt_bytes
from profilers.block_expansion import BlockExpansionProfile
from profilers.population import Population
from solvers.fed_expand.problem import FedExpandProblem

OPTIMIZER_FACTOR = 3.0          # fp32 Adam: gradient + two moments per trained parameter byte
LORA_RANK = 8                   # the LoRA FedAvg baseline's rank on q, k, v, o (fed-lora's default)


@dataclass(frozen=True)
class FedExpandOptions:
    """Typed `planner plan` options of the fed-expand family."""

    clients: str
    data: str = "instruct:4tasks"
    added_blocks: int | None = None
    batch_size: int = 8
    seq_len: int = 48
    answer_tokens: int = 12
    local_steps: int = 10
    rounds: int = 10
    deadline_s: float = math.inf
    memory_margin: float = 0.1
    round_overhead_s: float = 0.02
    home_bonus: float = 1.0
    allow_sit_out: bool = False
    exact_time_limit_s: float = 20.0


@dataclass
class Inputs:
    """What every layout's problem shares."""

    population: Population
    samples: np.ndarray
    signatures: np.ndarray
    cluster: np.ndarray
    slowdown: np.ndarray
    num_base_blocks: int
    num_added: int
    notes: list[str] = field(default_factory=list)


def auto_added(num_base: int, clusters: int) -> int:
    """P when --added-blocks is not given: a quarter of the stack (LLaMA-Pro: 32 -> 40), at least one per
    cluster, at most the model's blocks."""
    return int(min(num_base, max(clusters, math.ceil(num_base / 4))))


def layout(num_base: int, num_added: int, span: int) -> tuple[int, ...]:
    """Base indices after which the added blocks go: uniform over the top `span` base blocks."""
    start = num_base - span
    return tuple(int(start + round((k + 1) * span / num_added) - 1) for k in range(num_added))


def spans(num_base: int, num_added: int) -> list[int]:
    """Candidate spans, widest first (each gives distinct positions)."""
    out = []
    for s in range(num_base, num_added - 1, -1):
        pos = layout(num_base, num_added, s)
        if len(set(pos)) == num_added and pos not in [layout(num_base, num_added, t) for t in out]:
            out.append(s)
    return out


def compute_slowdown(host_flops: float, population: Population) -> np.ndarray:
    """Per client: host CPU seconds -> device seconds (FLOP/s ratio)."""
    if host_flops <= 0:
        return np.ones(len(population))
    return np.array([host_flops / d.hardware.flops_per_s("fp32") for d in population.devices])


def build_problem(inp: Inputs, prof: BlockExpansionProfile, opts: FedExpandOptions, added_after: tuple[int, ...],
                  home: np.ndarray) -> FedExpandProblem:
    """The problem of one layout."""
    pop = inp.population
    n = len(pop)
    return FedExpandProblem(
        client_ids=pop.ids, num_base_blocks=inp.num_base_blocks, added_after=added_after, samples=inp.samples,
        home=home, cluster=inp.cluster,
        memory_budget_bytes=np.array([d.memory_bytes for d in pop.devices], dtype=float) * (1 - opts.memory_margin),
        deadline_s=np.full(n, opts.deadline_s), slowdown=inp.slowdown,
        uplink_bytes_per_s=np.array([d.uplink_bits_per_s / 8 for d in pop.devices]),
        downlink_bytes_per_s=np.array([d.downlink_bits_per_s / 8 for d in pop.devices]),
        latency_s=np.full(n, opts.round_overhead_s), local_steps=opts.local_steps, frozen_bytes=prof.base_bytes,
        block_bytes=prof.block_bytes, optimizer_factor=OPTIMIZER_FACTOR, act_fixed_bytes=prof.act_fixed_bytes,
        act_block_bytes=prof.act_block_bytes, act_train_bytes=prof.act_train_bytes,
        workspace_bytes=prof.act_block_bytes, forward_s=prof.forward_s, backward_fixed_s=prof.backward_fixed_s,
        backward_block_s=prof.backward_block_s, backward_train_s=prof.backward_train_s, home_bonus=opts.home_bonus)


def check_clients_fit(p: FedExpandProblem, population: Population, opts: FedExpandOptions) -> list[str]:
    """Clients that cannot train even the top added block: an error naming the first and the memory (or
    deadline) it needs, or with --allow-sit-out notes."""
    from solvers.fed_expand.cost import fits, memory_bytes, round_time_s

    top = p.num_added - 1
    short = [c for c in range(p.num_clients) if not fits(p, c, top, 1)]
    if not short:
        return []
    c = short[0]
    d = population.devices[c]
    need = memory_bytes(p, top, 1)
    if need > p.memory_budget_bytes[c]:
        lacks = need / (1 - opts.memory_margin)
        what = (f"client {d.id} ({d.hardware.base or d.hardware.name}) has {fmt_bytes(d.memory_bytes)} for training, "
                f"but one added block needs {fmt_bytes(lacks)} (the {p.num_added}-block expanded model, one block's "
                f"gradients and Adam state, activations above it; incl. the {opts.memory_margin:.0%} margin)")
        fix = (f"give it at least {math.ceil(lacks / 2**20)}MiB ('memory:' in the population), lower --batch-size "
               "or --seq-len, or pass --allow-sit-out")
    else:
        what = (f"client {d.id} needs {round_time_s(p, c, top, 1):.3g} s for a round with one added block, beyond "
                f"the {opts.deadline_s:.3g} s deadline")
        fix = "raise --deadline, lower --local-steps, or pass --allow-sit-out"
    if len(short) > 1:
        what += f"; {len(short) - 1} more client(s) cannot either"
    if opts.allow_sit_out:
        return [what + " (sitting out)"]
    raise PlannerError(what, fix)


def lora_block_params(config: Any, rank: int = LORA_RANK) -> int:
    """LoRA parameters of one block on q, k, v, o: rank·(in + out) each."""
    h = int(config.hidden_size)
    kv = int(config.num_key_value_heads) * int(getattr(config, "head_dim", None) or h // int(config.num_attention_heads))
    return rank * ((h + h) + (h + kv) + (h + kv) + (h + h))


def other_methods(p: FedExpandProblem, prof: BlockExpansionProfile, lora_block_bytes: float) -> dict[str, dict[str, Any]]:
    """Per-client predictions of LoRA FedAvg (uniform depth: every base block) and full fine-tuning FedAvg,
    from the same measured constants (forward scaled to the base model's L of E blocks; a LoRA block's extra
    saved bytes and backward taken as a trained block's, an upper estimate)."""
    L, E, n = p.num_base_blocks, prof.num_blocks, p.num_clients
    fwd = prof.forward_s * (L + 1) / (E + 1)              # blocks + embedding/head, as a share
    out: dict[str, dict[str, Any]] = {}
    specs = {
        "lora_fedavg": (lora_block_bytes * L, lora_block_bytes * L * (1 + OPTIMIZER_FACTOR), L * prof.backward_train_s * 0.25,
                        L * prof.act_train_bytes * 0.5,
                        "LoRA FedAvg (rank 8 on q, k, v, o of every base block; the fed-lora runtime at uniform depth)"),
        "full_ft": (prof.base_bytes, prof.base_bytes * OPTIMIZER_FACTOR, L * prof.backward_train_s,
                    L * prof.act_train_bytes, "full fine-tuning FedAvg (every parameter, embeddings included)"),
    }
    for name, (moved, state, extra_bwd, extra_act, desc) in specs.items():
        step = fwd + prof.backward_fixed_s + L * prof.backward_block_s + extra_bwd
        T = p.local_steps * step * p.slowdown + moved / p.downlink_bytes_per_s + moved / p.uplink_bytes_per_s + p.latency_s
        M = prof.base_bytes + state + prof.act_fixed_bytes + L * prof.act_block_bytes + extra_act + prof.act_block_bytes
        ok = (M <= p.memory_budget_bytes * (1 + 1e-12)) & (T <= p.deadline_s * (1 + 1e-12))
        out[name] = {"description": desc, "round_time_s": T, "memory_bytes": np.full(n, M),
                     "bytes_per_round": np.full(n, 2 * moved), "within_budgets": ok}
    return out
