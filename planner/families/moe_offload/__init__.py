"""The moe-offload family (MoEpic): per-layer VRAM budget, expert split ratio and resident expert tops,
plus CPU-miss layers where the host is fast. Design notes: docs/moe-offload.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from core.errors import PlannerError
from planner.families.base import Family, Phase, PlanContext, Progress, RunReport
from planner.flags import Flag, FlagValues

from profilers.synthetic_traces import PRESETS

TRACE_PRESETS = tuple(PRESETS)
# llama.cpp file types (profilers.gguf_inventory.FILE_TYPES, a test checks)
GGUF_FILE_TYPES = ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q3_k_m",
                   "q3_k_s", "q3_k_l", "q2_k", "mxfp4_moe", "bf16", "f16", "f32")
LLAMACPP_ONLY = ("--quant", "--ubatch", "--compute-buffer")


def request_context(v: FlagValues) -> int:
    """The KV-cache context to reserve: --context when given (it must hold the request: prompt + output tokens),
    else the larger of its default and the request."""
    need = int(v["prompt_tokens"]) + int(v["output_tokens"])
    if "--context" in v.given:
        if int(v["context"]) < need:
            raise PlannerError(f"--context {v['context']} is shorter than the request ({v['prompt_tokens']} prompt + "
                               f"{v['output_tokens']} output tokens = {need})",
                               f"use --context {need} or more, or shorten --prompt-tokens/--output-tokens")
        return int(v["context"])
    return max(int(v["context"]), need)


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
    metric_labels = {"tpot_ms": "TPOT ms", "ttft_ms": "TTFT ms", "e2e_ms": "e2e ms", "hit_rate": "hit",
                     "bytes_per_token": "B/token", "vram_bytes": "VRAM", "host_group_bytes": "host"}
    plan_flags = (
        Flag("--expert-bits", "choice", "expert weight precision in bits", default="16", choices=("16", "8", "4")),
        Flag("--context", "int", "KV-cache context reserved, in tokens", default=2048, minimum=1),
        Flag("--batch", "int", "decode batch size (sequences)", default=1, minimum=1),
        Flag("--expert-budget", "bytes_or_share", "expert-cache VRAM (default: what the device has left)"),
        Flag("--trace", "path", "routing trace .npz from `planner trace` (default: a synthetic preset)"),
        Flag("--trace-preset", "choice", "synthetic trace preset", default="moepic-calibrated", choices=TRACE_PRESETS),
        Flag("--trace-tokens", "int", "synthetic trace length in decode steps (all sequences)", default=4096, minimum=16),
        Flag("--trace-sequences", "int", "independent sequences in a synthetic trace (half choose the plan, half "
             "score it)", default=16, minimum=1),
        Flag("--seed", "int", "seed of synthetic traces", default=0, minimum=0),
        Flag("--theta-granularity", "int", "split granularity in columns (default 64/128/16 by width)", minimum=1),
        Flag("--k-prefetch", "int", "experts prefetched per layer (default: top-k)", minimum=0),
        Flag("--inner", "choice", "inner solver", default="fixed_point", choices=("fixed_point", "scan")),
        Flag("--sim-tokens", "int", "trace tokens the simulator replays", default=1024, minimum=1),
        Flag("--robust", "switch", "pick the plan with the least worst-case regret over the uncertain constants (host "
             "efficiency 0.6-1.0, link x0.8-1.2, DRAM contention) instead of the best at the nominal ones"),
        Flag("--all-baselines", "switch", "replay every baseline in the simulator (default: llama.cpp's and the "
             "strongest predicted)"),
        Flag("--no-cpu-experts", "switch",
             "GPU-only plan space (MoEpic as published): no layer computes its misses on the host CPU"),
        Flag("--calibration", "path", "decode timings measured by `planner calibrate MODEL --tiny` (tiny plans)"),
        Flag("--target", "choice", "what runs the plan: the planner's runtime, or llama.cpp (whole tensors on the GPU "
             "or in host memory; apply with `planner export --to llama.cpp`)", default="planner",
             choices=("planner", "llama.cpp")),
        Flag("--quant", "choice", "GGUF file type for --target llama.cpp (llama-quantize's name)", default="q4_k_m",
             choices=GGUF_FILE_TYPES),
        Flag("--ubatch", "int", "llama.cpp micro-batch -ub in tokens (sizes its compute buffer)", default=512, minimum=1),
        Flag("--compute-buffer", "bytes", "llama.cpp's CUDA compute buffer (default: an estimate from the model and -ub)"),
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
        Flag("--weights", "path", "a Hugging Face model directory (config.json + safetensors) to run a full-size plan on"),
    )
    export_targets = ("llama.cpp",)

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
        if v["target"] == "llama.cpp":
            from planner.families.moe_offload.llamacpp.phases import options as llamacpp_options

            return llamacpp_options(ctx)
        for name in LLAMACPP_ONLY:
            if name in v.given:
                raise PlannerError(f"{name} applies to --target llama.cpp only", f"add --target llama.cpp or drop {name}")
        ctx.require_hardware()
        if v["trace"] is not None and not Path(v["trace"]).is_file():
            raise PlannerError(f"--trace {v['trace']} does not exist",
                               "record one with `planner trace MODEL --tiny -o FILE` or drop --trace")
        timing, calibration = None, None
        if v["calibration"] is not None:
            timing, calibration = read_calibration(Path(v["calibration"]), ctx.spec, ctx.request.tiny)
        budget = v["expert_budget"]
        return MoeOffloadOptions(
            expert_bits=int(v["expert_bits"]), context_tokens=request_context(v), batch=v["batch"], expert_budget=budget,
            trace_path=v["trace"], trace_preset=v["trace_preset"], trace_tokens=v["trace_tokens"], seed=v["seed"],
            trace_sequences=v["trace_sequences"], all_baselines=bool(v["all_baselines"]), robust=bool(v["robust"]),
            theta_granularity=v["theta_granularity"], k_prefetch=v["k_prefetch"], inner=v["inner"],
            sim_tokens=v["sim_tokens"], cpu_misses=not v["no_cpu_experts"], measured_timing=timing,
            calibration=calibration, **request_options(v))

    def calibrate(self, spec: Any, tiny: bool) -> dict[str, Any]:
        """Decode-step timings of the tiny model on this CPU (`planner calibrate MODEL --tiny`)."""
        from planner.families.moe_offload.calibration import measure

        return measure(spec, tiny)

    def phases(self) -> Sequence[Phase]:
        from planner.families.moe_offload import phases as ph
        from planner.families.moe_offload.llamacpp import phases as lp

        def by_target(ours: Any, llamacpp: Any) -> Any:
            # the options' type says which space is planned (`--target`); the phases correspond one for one
            return lambda ctx: (llamacpp if isinstance(ctx.options, lp.LlamaCppOptions) else ours)(ctx)

        return tuple(Phase(name, by_target(getattr(ph, name), getattr(lp, name)))
                     for name in ("lower", "solve", "baselines", "bound", "simulate", "verify", "requests", "lift"))

    def validate_plan(self, plan: Any) -> list[str]:
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan, validate_plan as validate_llamacpp
        from planner.families.moe_offload.lowering import validate_plan_decisions

        if is_llamacpp_plan(plan):
            return validate_llamacpp(dict(plan.decisions), dict(plan.constraints))
        return validate_plan_decisions(dict(plan.decisions), dict(plan.constraints))

    def inspect(self, plan: Any, wide: bool = False) -> list[Any]:
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan
        from planner.families.moe_offload.views import inspect_tables

        if is_llamacpp_plan(plan):
            from planner.families.moe_offload.llamacpp.views import llamacpp_tables

            return llamacpp_tables(plan, wide)
        return inspect_tables(plan, wide)

    def baseline_metrics(self, plan: Any, wide: bool = False) -> tuple[str, ...]:
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan

        if is_llamacpp_plan(plan):
            return (("tpot_ms", "ttft_ms", "vram_bytes", "fits", "host_group_bytes") if wide
                    else ("tpot_ms", "ttft_ms", "vram_bytes", "fits"))
        if "ttft_ms" in plan.predicted:   # a whole-request plan
            return ("e2e_ms", "ttft_ms", "tpot_ms", "hit_rate") if wide else ("e2e_ms", "ttft_ms", "tpot_ms")
        return ("tpot_ms", "hit_rate", "bytes_per_token") if wide else ("tpot_ms", "hit_rate")

    def plot(self, plan: Any) -> Any:
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan
        from planner.families.moe_offload.views import budget_plot

        if is_llamacpp_plan(plan):
            return None
        return budget_plot(plan)

    def export(self, plan: Any, target: str) -> tuple[str, str]:
        """`planner export PLAN --to llama.cpp`: the llama-server / llama-cli flags of a --target llama.cpp plan."""
        from codegen.llamacpp import export_flags
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan

        if not is_llamacpp_plan(plan):
            raise PlannerError("this plan was made for the planner's own runtime (split experts, an expert cache), "
                               "which llama.cpp cannot express", "re-plan with --target llama.cpp and export that plan")
        return export_flags(plan), ".txt"

    def emit(self, plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
        from planner.families.moe_offload.artifact import emit
        from planner.families.moe_offload.llamacpp.phases import is_llamacpp_plan

        if is_llamacpp_plan(plan):
            raise PlannerError("a --target llama.cpp plan runs in llama.cpp, not in the planner's runtime",
                               "print its flags with `planner export PLAN --to llama.cpp`")
        return emit(plan, values, staging, progress)

    def run(self, artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
        from planner.families.moe_offload.artifact import run

        return run(artifact, values, progress)
