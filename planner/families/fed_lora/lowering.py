"""fed-lora lowering and lifting: client population + measured fine-tuning profile <-> FedLoraProblem <-> plan.

Lowering (docs/fed-lora.md, "Inputs" and "Cost model"):
  * clients in natural id order (profilers/population.py); memory M_i = what the file (or generator)
    gives for training; links in bytes/s; `--round-overhead` as lat_i;
  * M(d, q) from the fine-tuning profile measured on this CPU (profilers/fine_tuning.py: four PEFT steps,
    saved-tensor hooks), the same for every client (one batch size and sequence length);
  * step times: this CPU's measured CPU seconds for the forward, the bottom and each further trainable
    block's backward, and the quantisation of a block, scaled to each device by the ratio of this CPU's
    matmul FLOP per CPU second to the device profile's sustained fp32 FLOP/s (FedQuad's reference-device
    scaling; docs/fed-lora.md, "Where we depart from the paper and the spec");
  * data weights w_i from the clients' sample counts (equal when the population gives none).
Lifting writes per-client decisions and predictions by id, for the plan and every baseline.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import PlannerError
from planner.units import fmt_bytes
from profilers.fine_tuning import FineTuneProfile
from profilers.population import Population
from solvers.fed_lora.problem import FedLoraProblem, FedLoraSolution

log = logging.getLogger(__name__)

GAMMA_DEFAULT = {8: 0.1, 4: 0.3}
MAX_CLIENT_DETAIL = 1000          # baselines carry per-client tables up to this population size
GIB = 2.0**30


@dataclass(frozen=True)
class FedLoraOptions:
    """Typed `planner plan` options of the fed-lora family."""

    clients: str
    batch_size: int = 8
    seq_len: int | None = None
    local_steps: int = 20
    lora_rank: int = 8
    lora_alpha: int = 16
    act_bits: int = 8
    memory_margin: float = 0.1
    coverage: float = 0.0
    coverage_blocks: int | None = None
    deadline_s: float = math.inf
    gamma: float | None = None
    utility_fit: str | None = None          # JSON path: {"gamma", "depth_exponent", "source"} from a pilot
    round_overhead_s: float = 0.02
    rounds: int = 20
    allow_sit_out: bool = False
    num_labels: int = 2
    exact_time_limit_s: float = 30.0


@dataclass
class FedLoraLowered:
    """The problem and what the lift needs to name things."""

    problem: FedLoraProblem
    population: Population
    profile: FineTuneProfile
    options: FedLoraOptions
    compute_slowdown: np.ndarray            # host CPU seconds -> device seconds, per client
    notes: list[str] = field(default_factory=list)


def memory_table(profile: FineTuneProfile, bits: int) -> np.ndarray:
    """M(d, q) for d, q in 0..L (+inf where q > d or d = 0)."""
    L = profile.num_blocks
    t = np.full((L + 1, L + 1), np.inf)
    for d in range(1, L + 1):
        for q in range(d + 1):
            t[d, q] = profile.peak_bytes(d, q, bits)
    return t


def compute_slowdown(profile: FineTuneProfile, population: Population) -> np.ndarray:
    """Per client: this CPU's matmul FLOP per CPU second / the device's sustained fp32 FLOP/s."""
    host = profile.host_flops_per_cpu_s
    if host <= 0:
        return np.ones(len(population))
    return np.array([host / d.hardware.flops_per_s("fp32") for d in population.devices])


def check_devices_fit(problem: FedLoraProblem, population: Population, allow_sit_out: bool) -> list[str]:
    """Devices that cannot hold even depth d_min with every trainable block quantised: an error naming the
    device and what it lacks (or, with --allow-sit-out, notes)."""
    need = float(np.nanmin(problem.memory_table_bytes[problem.d_min, : problem.d_min + 1]))
    usable = problem.usable_memory_bytes()
    short = [i for i in range(problem.num_devices) if usable[i] < need]
    if not short:
        return []
    first = population.devices[short[0]]
    lacks = need / (1 - problem.memory_margin)
    at_least = f"{math.ceil(lacks / 2**20)}MiB"      # rounded up, so the suggested figure is enough
    what = (f"device {first.id} ({first.hardware.base or first.hardware.name}) has {fmt_bytes(first.memory_bytes)} "
            f"for training, but LoRA depth {problem.d_min} needs {fmt_bytes(lacks)} with its block quantised "
            f"(incl. the {problem.memory_margin:.0%} margin)")
    if len(short) > 1:
        what += f"; {len(short) - 1} more device(s) lack memory too"
    if allow_sit_out:
        return [what + " (sitting out)"]
    raise PlannerError(what, f"give it at least {at_least} ('memory:' in the population), lower --batch-size "
                             "or --seq-len, or pass --allow-sit-out")


def utility_setting(opts: FedLoraOptions) -> tuple[float, float, str]:
    """(γ, α, source) of the utility u(d, q) = d^α − γ·q: the spec's default (α = 1, γ by bit width), `--gamma`,
    or a pilot's fit (`--utility-fit FILE`, written by benchmarks/fed_lora_pilot.py)."""
    if opts.utility_fit is None:
        if opts.gamma is not None:
            return float(opts.gamma), 1.0, "--gamma; linear depth utility (spec default)"
        return GAMMA_DEFAULT[opts.act_bits], 1.0, f"spec default (gamma {GAMMA_DEFAULT[opts.act_bits]} at " \
                                                  f"{opts.act_bits} bit, linear depth utility), not fitted"
    path = Path(opts.utility_fit)
    fix = "pass the JSON that benchmarks/fed_lora_pilot.py writes ({\"gamma\": G, \"depth_exponent\": A, \"source\": ...})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlannerError(f"--utility-fit {path}: cannot read it ({exc.strerror or 'unreadable'})", fix) from None
    except ValueError:
        raise PlannerError(f"--utility-fit {path}: cannot read it as JSON", fix) from None
    if not isinstance(data, dict):
        raise PlannerError(f"--utility-fit {path}: expected a JSON object", fix)
    try:
        gamma, alpha = float(data["gamma"]), float(data["depth_exponent"])
    except (KeyError, TypeError, ValueError):
        raise PlannerError(f"--utility-fit {path}: needs numbers 'gamma' and 'depth_exponent'", fix) from None
    if not (math.isfinite(gamma) and gamma >= 0 and 0 < alpha <= 1):
        raise PlannerError(f"--utility-fit {path}: gamma must be >= 0 and depth_exponent in (0, 1] "
                           f"(got {gamma:g}, {alpha:g})", fix)
    if opts.gamma is not None and opts.gamma != gamma:
        raise PlannerError(f"--gamma {opts.gamma:g} contradicts --utility-fit {path} (gamma {gamma:g})",
                           "pass one of them")
    return gamma, alpha, f"fitted: {data.get('source', path.name)}"


def build_problem(population: Population, profile: FineTuneProfile, opts: FedLoraOptions) -> FedLoraLowered:
    """The FedLoraProblem of a population and a measured profile (see the module docstring)."""
    n = len(population)
    L = profile.num_blocks
    slow = compute_slowdown(profile, population)
    samples = [d.samples for d in population.devices]
    if all(s is None for s in samples):
        w = np.full(n, 1.0 / n)
    elif any(s is None for s in samples):
        missing = next(d.id for d in population.devices if d.samples is None)
        raise PlannerError(f"{population.source}: device {missing} has no 'samples' while others do",
                           "give every device 'samples:' (or none, for equal data weights)")
    else:
        arr = np.array(samples, dtype=float)
        w = arr / arr.sum()
    gamma, alpha, _ = utility_setting(opts)
    cov_blocks = opts.coverage_blocks if opts.coverage_blocks is not None else (L // 2 if opts.coverage > 0 else 0)
    if cov_blocks > L:
        raise PlannerError(f"--coverage-blocks {cov_blocks} exceeds the model's {L} blocks", f"pass at most {L}")
    head_bytes = profile.head_state_bytes / 4.0           # parameters only (state = params + grads + 2 Adam)
    problem = FedLoraProblem(
        device_ids=population.ids, num_blocks=L, memory_table_bytes=memory_table(profile, opts.act_bits),
        memory_budget_bytes=np.array([d.memory_bytes for d in population.devices], dtype=float),
        forward_s=profile.host_forward_s * slow, backward_first_s=profile.host_backward_s_first * slow,
        backward_mid_s=profile.host_backward_s_mid * slow, quant_first_s=profile.host_quant_s_first * slow,
        quant_mid_s=profile.host_quant_s_mid * slow, local_steps=np.full(n, float(opts.local_steps)),
        uplink_bytes_per_s=np.array([d.uplink_bits_per_s / 8 for d in population.devices]),
        downlink_bytes_per_s=np.array([d.downlink_bits_per_s / 8 for d in population.devices]),
        latency_s=np.full(n, opts.round_overhead_s), weights=w,
        lora_block_bytes=float(profile.lora_param_bytes_per_block), head_bytes=float(head_bytes),
        act_bits=opts.act_bits, gamma=gamma, depth_exponent=alpha, memory_margin=opts.memory_margin, d_min=1, deadline_s=opts.deadline_s,
        coverage_kappa=opts.coverage, coverage_blocks=cov_blocks)
    problem.check()
    notes = check_devices_fit(problem, population, opts.allow_sit_out)
    return FedLoraLowered(problem, population, profile, opts, slow, notes)


# ------------------------------------------------------------------ lifting
def quant_blocks(L: int, depth: int, q: int) -> list[int]:
    """The quantised blocks: the lowest q trainable ones, L−d .. L−d+q−1 (0-based from the input)."""
    return list(range(L - depth, L - depth + q)) if depth > 0 else []


def client_decisions(low: FedLoraLowered, sol: FedLoraSolution) -> dict[str, dict[str, Any]]:
    """decisions.clients: per id, depth, quantised blocks, bits, local steps, batch size."""
    p, L = low.problem, low.problem.num_blocks
    out = {}
    for i, cid in enumerate(p.device_ids):
        d, q = int(sol.depth[i]), int(sol.quant_blocks[i])
        out[cid] = {"lora_depth": d, "act_quant_layers": quant_blocks(L, d, q), "act_bits": p.act_bits,
                    "local_steps": int(p.local_steps[i]), "batch_size": low.options.batch_size, "sits_out": d == 0}
    return out


def client_predictions(low: FedLoraLowered, sol: FedLoraSolution) -> dict[str, dict[str, Any]]:
    """predicted.clients: per id, peak memory (and the part the runtime counts), round/step/link/wait times."""
    p, m, prof = low.problem, sol.metrics, low.profile
    out = {}
    for i, cid in enumerate(p.device_ids):
        d = int(sol.depth[i])
        entry: dict[str, Any] = {"memory_budget_bytes": int(p.memory_budget_bytes[i])}
        if d > 0:
            q = int(sol.quant_blocks[i])
            entry.update({"peak_memory_bytes": int(m.peak_memory_bytes[i]),
                          "training_bytes": int(prof.training_bytes(d, q, p.act_bits)),
                          "round_time_s": float(m.device_round_s[i]), "step_time_s": float(m.step_s[i]),
                          "comm_s": float(m.comm_s[i]), "wait_s": float(m.wait_s[i])})
        out[cid] = entry
    return out


def metrics_dict(low: FedLoraLowered, sol: FedLoraSolution, per_client: bool = True) -> dict[str, Any]:
    """The plan's (or a baseline's) `predicted` record."""
    m = sol.metrics
    p = low.problem
    d = {"round_time_s": m.round_time_s, "progress_rate_per_s": m.progress_rate, "utility": m.utility,
         "round_time_spread": m.spread, "participants": m.participants, "sitting_out": len(m.sitting_out),
         "memory_feasible": bool(np.all(m.memory_ok)),
         "coverage": [float(c) for c in m.coverage],
         "max_peak_memory_bytes": float(np.nanmax(m.peak_memory_bytes)) if m.participants else 0.0,
         "mean_depth": float(np.mean(sol.depth[sol.depth > 0])) if m.participants else 0.0,
         "quantised_blocks_total": int(np.sum(sol.quant_blocks))}
    if p.coverage_kappa > 0:
        d["uncovered_blocks"] = list(sol.uncovered_blocks)
    if per_client:
        d["clients"] = client_predictions(low, sol)
    return d


def depth_histogram(sol: FedLoraSolution) -> dict[str, int]:
    """{"d=3,q=1": count} over participating clients (the summary of large populations)."""
    out: dict[str, int] = {}
    for d, q in zip(sol.depth, sol.quant_blocks):
        key = "sits out" if d == 0 else f"d={int(d)},q={int(q)}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def population_inputs(low: FedLoraLowered) -> dict[str, Any]:
    """inputs.population: source, fingerprint and per-device resources (incl. the emulation ratio)."""
    pop = low.population
    return {"source": pop.source, "fingerprint": pop.fingerprint(), "devices": {
        d.id: {"kind": d.kind, "hardware": d.hardware.name, "memory_bytes": d.memory_bytes,
               "uplink_bits_per_s": d.uplink_bits_per_s, "downlink_bits_per_s": d.downlink_bits_per_s,
               "samples": d.samples, "speed_factor": d.speed_factor,
               "fp32_flops_per_s": d.hardware.flops_per_s("fp32"), "compute_slowdown": float(low.compute_slowdown[i])}
        for i, d in enumerate(pop.devices)}}


# ------------------------------------------------------------------ plan validation (from JSON alone)
def validate_plan_decisions(decisions: Mapping[str, Any], predicted: Mapping[str, Any],
                            constraints: Mapping[str, Any], baselines: Mapping[str, Any] | None = None) -> list[str]:
    """Every constraint a fed-lora plan states, checked from the plan alone (empty when valid)."""
    out: list[str] = []
    L = int(decisions["num_blocks"])
    margin = float(constraints.get("memory_margin", 0.1))
    deadline = constraints.get("deadline_s")
    kappa = float(constraints.get("coverage_kappa", 0.0) or 0.0)
    cov_blocks = int(constraints.get("coverage_blocks", 0) or 0)

    def check(name: str, clients: Mapping[str, Any], pred: Mapping[str, Any]) -> None:
        pc = pred.get("clients")
        times = []
        for cid, c in clients.items():
            d = int(c["lora_depth"])
            ql = [int(b) for b in c.get("act_quant_layers", [])]
            if d != 0 and not 1 <= d <= L:
                out.append(f"{name}: client {cid}: LoRA depth {d} outside 1..{L}")
                continue
            if ql != list(range(L - d, L - d + len(ql))) or len(ql) > d:
                out.append(f"{name}: client {cid}: quantised blocks {ql} are not the lowest of its trainable blocks "
                           f"{L - d}..{L - 1}")
            if int(c.get("act_bits", 8)) not in (4, 8):
                out.append(f"{name}: client {cid}: act_bits {c.get('act_bits')} not 4 or 8")
            if bool(c.get("sits_out", d == 0)) != (d == 0):
                out.append(f"{name}: client {cid}: sits_out disagrees with depth {d}")
            if pc is None or d == 0:
                continue
            e = pc.get(cid)
            if e is None:
                out.append(f"{name}: client {cid} has no prediction")
                continue
            if e["peak_memory_bytes"] > (1 - margin) * e["memory_budget_bytes"] * (1 + 1e-9):
                out.append(f"{name}: client {cid} needs {e['peak_memory_bytes']} B, has "
                           f"{(1 - margin) * e['memory_budget_bytes']:.0f} B after the margin")
            if deadline is not None and e["round_time_s"] > float(deadline) * (1 + 1e-9):
                out.append(f"{name}: client {cid} round {e['round_time_s']:.4g} s > deadline {deadline} s")
            times.append(float(e["round_time_s"]))
            if abs(float(e["wait_s"]) - (float(pred["round_time_s"]) - float(e["round_time_s"]))) > 1e-6 * max(1.0, float(pred["round_time_s"])):
                out.append(f"{name}: client {cid} wait time disagrees with the round time")
        if pc is not None and times and abs(max(times) - float(pred["round_time_s"])) > 1e-6 * max(1.0, max(times)):
            out.append(f"{name}: round time {pred['round_time_s']} is not the slowest client's {max(times)}")

    check("plan", decisions["clients"], predicted)
    if kappa > 0:
        cov = predicted.get("coverage", [])
        uncovered = set(predicted.get("uncovered_blocks", []))
        for need in range(1, cov_blocks + 1):
            b = L - need
            if b < len(cov) and cov[b] < kappa * (1 - 1e-9) and b not in uncovered:
                out.append(f"plan: block {b} is trained by {cov[b]:.3f} of the data < coverage {kappa}")
    for name, b in (baselines or {}).items():
        dec = b.get("decisions", {})
        if "clients" in dec:
            check(name, dec["clients"], b.get("predicted", {}))
    return out
