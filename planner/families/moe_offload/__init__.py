"""The moe-offload family (MoEpic): per-layer VRAM budget, expert split ratio and resident expert tops,
plus CPU-miss layers where the host is fast. Design notes: docs/moe-offload.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues

TRACE_PRESETS = ("moepic-calibrated", "zipf-static", "bursty")   # profilers.synthetic_traces.PRESETS (a test checks)


def request_options(v: FlagValues) -> dict[str, Any]:
    """The whole-request options from the flags, checked (targets in ms; one target at a time)."""
    if v["target_tpot"] is not None and v["target_ttft"] is not None:
        raise PlannerError("--target-tpot and --target-ttft were both given", "give one target at a time")
    for name in ("target_tpot", "target_ttft"):
        if v[name] is not None and v[name] <= 0:
            raise PlannerError(f"--{name.replace('_', '-')} must be a positive time", "e.g. --target-tpot 80ms")
    if v["objective"] in ("e2e", "ttft") and v["prompt_tokens"] == 0:
        raise PlannerError(f"--objective {v['objective']} needs a prompt", "give --prompt-tokens N or use --objective tpot")
    if v["target_ttft"] is not None and v["prompt_tokens"] == 0:
        raise PlannerError("--target-ttft needs a prompt", "give --prompt-tokens N")
    return {"prompt_tokens": v["prompt_tokens"], "output_tokens": v["output_tokens"], "objective": v["objective"],
            "target_tpot_ms": None if v["target_tpot"] is None else v["target_tpot"] * 1e3,
            "target_ttft_ms": None if v["target_ttft"] is None else v["target_ttft"] * 1e3}


class MoeOffloadFamily(Family):
    """Expert offloading for MoE models on one GPU plus host memory."""

    name = "moe-offload"
    method = "MoEpic"
    description = "per-layer VRAM budget and expert split ratio for MoE offloading"
    objective_metric = "tpot_ms"
    objective_sense = "min"
    claim_hint = "an MoE model alone plans expert offloading"
    plan_flags = (
        Flag("--expert-bits", "choice", "expert weight precision in bits", default="16", choices=("16", "8", "4")),
        Flag("--context", "int", "KV-cache context reserved, in tokens", default=2048, minimum=1),
        Flag("--batch", "int", "decode batch size (sequences)", default=1, minimum=1),
        Flag("--expert-budget", "bytes_or_share", "expert-cache VRAM (default: what the device has left)"),
        Flag("--trace", "path", "routing trace .npz from `planner trace` (default: a synthetic preset)"),
        Flag("--trace-preset", "choice", "synthetic trace preset", default="moepic-calibrated", choices=TRACE_PRESETS),
        Flag("--trace-tokens", "int", "synthetic trace length in decode steps", default=2048, minimum=16),
        Flag("--seed", "int", "seed of synthetic traces", default=0, minimum=0),
        Flag("--theta-granularity", "int", "split granularity in columns (default 64/128/16 by width)", minimum=1),
        Flag("--k-prefetch", "int", "experts prefetched per layer (default: top-k)", minimum=0),
        Flag("--inner", "choice", "inner solver", default="fixed_point", choices=("fixed_point", "scan")),
        Flag("--sim-tokens", "int", "trace tokens the simulator replays", default=1024, minimum=1),
        Flag("--no-cpu-experts", "switch",
             "GPU-only plan space (MoEpic as published): no layer computes its misses on the host CPU"),
        Flag("--calibration", "path", "decode timings measured by `planner calibrate MODEL --tiny` (tiny plans)"),
        # whole requests (docs/moe-offload.md §12)
        Flag("--prompt-tokens", "int", "prompt length per sequence, in tokens (0: decode only)", default=512, minimum=0),
        Flag("--output-tokens", "int", "tokens generated per sequence", default=256, minimum=1),
        Flag("--objective", "choice", "what the plan minimises: end-to-end request time, TTFT or TPOT", default="e2e",
             choices=("e2e", "ttft", "tpot")),
        Flag("--target-tpot", "duration", "dual mode: the smallest expert budget whose plan meets this TPOT"),
        Flag("--target-ttft", "duration", "dual mode: the smallest expert budget whose plan meets this TTFT"),
    )
    emit_flags = (
        Flag("--seed", "int", "seed of the tiny model's weights", default=0, minimum=0),
    )
    run_flags = (
        Flag("--prompt", "str", "prompt text (tiny models have no tokenizer: UTF-8 bytes become token ids)",
             default="The quick brown fox jumps over the lazy dog."),
        Flag("--max-new-tokens", "int", "decode steps to run", default=32, minimum=1),
        Flag("--temperature", "float", "0: greedy; above 0: seeded sampling", default=0.0, minimum=0.0),
        Flag("--seed", "int", "sampling seed", default=0, minimum=0),
        Flag("--policy", "choice", "override the eviction policy", choices=("lcp", "lru", "lfu")),
        Flag("--baseline", "str", "run a baseline's settings from the plan (e.g. mixtral_offloading)"),
        Flag("--cpu", "switch", "emulated link on the CPU even if CUDA is present"),
    )

    def claim(self, ctx: PlanContext) -> str | None:
        from planner.units import fmt_bytes

        s = ctx.moe_structure()
        if s is None:
            return None
        hw = ctx.hardware
        total = s.non_expert_bytes + s.bytes_per_expert * s.num_experts * len(s.moe_layers)
        if hw is None:
            return f"{ctx.spec.name} is an MoE model: expert offloading"
        if total <= hw.memory_bytes:
            return (f"{ctx.spec.name} is an MoE model whose weights ({fmt_bytes(total)}) fit {hw.name} "
                    f"({fmt_bytes(hw.memory_bytes)}): the plan decides how much expert cache the rest of memory allows")
        return (f"{ctx.spec.name} is an MoE model whose weights ({fmt_bytes(total)}) do not fit {hw.name} "
                f"({fmt_bytes(hw.memory_bytes)}): expert offloading")

    def options(self, ctx: PlanContext) -> Any:
        from planner.families.moe_offload.calibration import read_calibration
        from planner.families.moe_offload.lowering import MoeOffloadOptions

        v = ctx.request.flags
        ctx.require_hardware()
        if v["trace"] is not None and not Path(v["trace"]).is_file():
            raise PlannerError(f"--trace {v['trace']} does not exist",
                               "record one with `planner trace MODEL --tiny -o FILE` or drop --trace")
        timing, calibration = None, None
        if v["calibration"] is not None:
            timing, calibration = read_calibration(Path(v["calibration"]), ctx.spec, ctx.request.tiny)
        budget = v["expert_budget"]
        return MoeOffloadOptions(
            expert_bits=int(v["expert_bits"]), context_tokens=v["context"], batch=v["batch"], expert_budget=budget,
            trace_path=v["trace"], trace_preset=v["trace_preset"], trace_tokens=v["trace_tokens"], seed=v["seed"],
            theta_granularity=v["theta_granularity"], k_prefetch=v["k_prefetch"], inner=v["inner"],
            sim_tokens=v["sim_tokens"], cpu_misses=not v["no_cpu_experts"], measured_timing=timing,
            calibration=calibration, **request_options(v))

    def calibrate(self, spec: Any, tiny: bool) -> dict[str, Any]:
        """Decode-step timings of the tiny model on this CPU (`planner calibrate MODEL --tiny`)."""
        from planner.families.moe_offload.calibration import measure

        return measure(spec, tiny)

    def phases(self) -> Sequence[Phase]:
        from planner.families.moe_offload import phases as ph

        return (Phase("lower", ph.lower), Phase("solve", ph.solve), Phase("baselines", ph.baselines),
                Phase("bound", ph.bound), Phase("simulate", ph.simulate), Phase("verify", ph.verify),
                Phase("requests", ph.requests), Phase("lift", ph.lift))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.moe_offload.lowering import validate_plan_decisions

        return validate_plan_decisions(dict(plan.decisions), dict(plan.constraints))

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.moe_offload.views import inspect_tables

        return inspect_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        if "ttft_ms" in plan.predicted:   # a whole-request plan
            return ("e2e_ms", "ttft_ms", "tpot_ms", "hit_rate") if wide else ("e2e_ms", "ttft_ms", "tpot_ms")
        return ("tpot_ms", "hit_rate", "bytes_per_token") if wide else ("tpot_ms", "hit_rate")

    def plot(self, plan: Any) -> Any:
        from planner.families.moe_offload.views import budget_plot

        return budget_plot(plan)

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.moe_offload.artifact import emit

        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.moe_offload.artifact import run

        return run(artifact, values, progress)
