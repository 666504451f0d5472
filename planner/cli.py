"""`planner`: the command line. Renders output; the library underneath only logs.

Exit codes: 0 success, 1 `diff` found a regression, 2 bad input (one line naming the problem and
the fix; `--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from core.errors import EXIT_BAD_INPUT, EXIT_REGRESSION, PlannerError

log = logging.getLogger("planner")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=200 if not sys.stdout.isatty() else None)


def _percent(text: str) -> float:
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise PlannerError(f"cannot read tolerance '{text}'", "write it like 1% or 0.01") from None


# ------------------------------------------------------------------ commands
def cmd_plan(args: argparse.Namespace) -> int:
    from planner.lowering.moe_offload import MoeOffloadOptions
    from planner.pipeline import PlanRequest, plan
    from planner.serde import dumps, save

    if args.sim_tokens < 1:
        raise PlannerError("--sim-tokens must be at least 1", "pass e.g. --sim-tokens 1024")
    opts = MoeOffloadOptions(expert_bits=args.expert_bits, context_tokens=args.context, batch=args.batch,
                             expert_budget=args.expert_budget, trace_path=args.trace, trace_preset=args.trace_preset,
                             trace_tokens=args.trace_tokens, seed=args.seed, theta_granularity=args.theta_granularity,
                             k_prefetch=args.k_prefetch, inner=args.inner, sim_tokens=args.sim_tokens,
                             calibrate=args.calibrate, cpu_misses=not args.no_cpu_experts)
    split = None
    if args.cloud or args.link or args.scenario == "split-inference":
        from planner.lowering.split_inference import SplitOptions
        from planner.units import parse_link, parse_seconds

        rate, rng = parse_link(args.link or "20mbps")
        split = SplitOptions(cloud=args.cloud or "a100_80gb", link_bits_per_s=rate, link_range_bits_per_s=rng,
                             rtt_s=parse_seconds(args.rtt, "--rtt"), epsilon=args.epsilon,
                             t_max_s=parse_seconds(args.t_max, "--t-max") if args.t_max else float("inf"),
                             calibrate=args.calibrate)
    req = PlanRequest(args.model, args.hardware, args.scenario, args.cloud, args.link, args.clients,
                      args.record_timing, args.tiny, opts, split)
    err = _console(stderr=True)
    ctx = plan(req, on_phase=lambda name: log.info("phase %s", name))
    err.print(f"scenario: {ctx.family} ({ctx.scenario_reason})")
    err.print(f"solver wall time: {ctx.solution.wall_time_s:.3f} s; total {sum(ctx.phase_times_s.values()):.1f} s")
    for note in ctx.plan.notes:
        err.print(f"note: {note}")
    if args.output:
        path = save(ctx.plan, args.output)
        err.print(f"wrote {path}")
    if args.json:
        sys.stdout.write(dumps(ctx.plan))
    elif not args.quiet:
        from planner.inspect_view import render

        _console().print(render(ctx.plan))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from planner.serde import dumps, load

    plan = load(args.plan)
    if args.json:
        sys.stdout.write(dumps(plan))
        return 0
    from planner.inspect_view import plot, render

    _console().print(render(plan))
    if args.plot:
        try:
            plot(plan, args.plot)
        except ValueError as exc:
            raise PlannerError(str(exc), "plot a moe-offload or split-inference plan") from exc
        _console(stderr=True).print(f"wrote {args.plot}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from planner.pipeline import plan_validator
    from planner.plan_diff import diff_plans
    from planner.serde import load

    old, new = load(args.old), load(args.new)
    tol = _percent(args.tolerance)
    if tol < 0:
        raise PlannerError("--tolerance is negative", "pass a non-negative tolerance such as 1%")
    res = diff_plans(old, new, tol, plan_validator)
    out = _console()
    if not res.changes:
        out.print("plans are identical (volatile fields such as wall time ignored)")
    else:
        from rich.table import Table

        t = Table(title=f"{len(res.changes)} changed value(s)", title_justify="left")
        t.add_column("path")
        t.add_column("old", justify="right")
        t.add_column("new", justify="right")
        for c in res.changes[: args.max_rows]:
            t.add_row(c.path, str(c.old), str(c.new))
        if len(res.changes) > args.max_rows:
            t.add_row(f"... {len(res.changes) - args.max_rows} more", "", "")
        out.print(t)
    out.print(f"{res.objective_metric}: {res.objective_old:.6g} -> {res.objective_new:.6g} "
              f"({'worse' if res.relative_change > 0 else 'better or equal'} by {abs(res.relative_change):.2%}, tolerance {tol:.2%})")
    for v in res.violations:
        out.print(f"violation: {v}")
    if res.regressed:
        for r in res.reasons:
            out.print(f"REGRESSION: {r}")
        return EXIT_REGRESSION
    out.print("OK: no regression")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import resource
    import time

    from planner.registry import resolve_model
    from planner.units import fmt_bytes, fmt_count
    from profilers.graph import profile_model

    t0 = time.perf_counter()
    prof = profile_model(resolve_model(args.model), tiny=args.tiny, seq_len=args.seq_len)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.json:
        from planner.serde import canonical

        d = canonical(prof)
        if not args.nodes:
            d.pop("nodes")
        sys.stdout.write(json.dumps(d, sort_keys=True, indent=2) + "\n")
        return 0
    from rich.table import Table

    out = _console()
    out.print(f"[bold]{prof.name}[/bold] ({prof.source})")
    out.print(f"parameters {fmt_count(prof.num_params)} ({prof.num_params:,}), {fmt_bytes(prof.param_bytes)} at {prof.dtype}"
              f"{' (tiny)' if prof.tiny else ''}; inputs {list(prof.input_shapes)}")
    out.print(f"graph: {prof.capture}, {len(prof.nodes)} nodes; matmul FLOPs {fmt_count(prof.flops)}, vector FLOPs "
              f"{fmt_count(prof.vector_flops)}, activations {fmt_bytes(prof.activation_bytes)}")
    if prof.moe:
        m = prof.moe
        out.print(f"MoE: {len(m.moe_layers)} MoE layers of {m.num_layers} x {m.num_experts} experts, top-{m.top_k}, "
                  f"{m.num_shared_experts} shared; {fmt_bytes(m.bytes_per_expert)} per expert "
                  f"(d={m.hidden_size}, f={m.expert_intermediate_size}); all experts {fmt_bytes(m.expert_bytes_total)}; "
                  f"non-expert {fmt_bytes(m.non_expert_bytes)}; KV cache {fmt_bytes(m.kv_bytes_per_token)}/token")
    t = Table(title="per block", title_justify="left")
    for col in ("block", "nodes", "matmul FLOPs", "params", "activations"):
        t.add_column(col, justify="left" if col == "block" else "right")
    blocks = prof.blocks if args.all_blocks else prof.blocks[: args.max_blocks]
    for b in blocks:
        t.add_row(b.name, str(b.n_nodes), fmt_count(b.flops), fmt_bytes(b.param_bytes), fmt_bytes(b.activation_bytes))
    if len(prof.blocks) > len(blocks):
        t.add_row(f"... {len(prof.blocks) - len(blocks)} more (--all-blocks)", "", "", "", "")
    out.print(t)
    if args.nodes:
        nt = Table(title=f"first {args.nodes} compute nodes", title_justify="left")
        for col in ("node", "op", "block", "FLOPs", "param bytes", "out bytes", "shape"):
            nt.add_column(col)
        for n in [n for n in prof.nodes if not n.is_view][: args.nodes]:
            nt.add_row(n.name, n.target, n.block, fmt_count(n.flops), fmt_bytes(n.param_bytes), fmt_bytes(n.output_bytes),
                       str(list(n.output_shape)))
        out.print(nt)
    out.print(f"profiled in {wall:.1f} s, peak memory {fmt_bytes(peak)}")
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    from rich.table import Table

    from planner.registry import hardware_catalog, resolve_hardware
    from planner.units import fmt_bytes, fmt_rate

    out = _console()
    if args.hw_cmd == "list":
        t = Table(title="hardware catalog (also: <base>_<N>gb caps memory; a YAML path works anywhere)", title_justify="left")
        for col in ("name", "kind", "memory", "mem BW", "fp16 FLOP/s", "host->device", "uplink"):
            t.add_column(col, justify="left" if col in ("name", "kind") else "right")
        for name, hw in sorted(hardware_catalog().items()):
            fp16 = hw.peak_flops_per_s.get("fp16") or hw.peak_flops_per_s.get("fp32")
            t.add_row(name, hw.kind, fmt_bytes(hw.memory_bytes), f"{hw.memory_bandwidth_bytes_per_s / 1e9:.0f} GB/s",
                      f"{fp16 / 1e12:.1f} T", f"{hw.host_to_device_bytes_per_s / 1e9:.0f} GB/s" if hw.host_to_device_bytes_per_s else "unified",
                      fmt_rate(hw.uplink_bits_per_s) if hw.uplink_bits_per_s else "-")
        out.print(t)
        return 0
    if args.hw_cmd == "show":
        import yaml

        hw = resolve_hardware(args.name)
        sys.stdout.write(yaml.safe_dump(hw.to_dict(), sort_keys=False, width=110))
        return 0
    if args.hw_cmd == "measure":
        import yaml
        from rich.progress import Progress

        from core.atomic_io import write_text_atomic
        from profilers.hardware import measure_this_machine

        with Progress(console=_console(stderr=True), transient=True) as prog:
            task = prog.add_task("measuring", total=5)

            def tick(label: str, done: int, total: int) -> None:
                prog.update(task, completed=done, total=total, description=label)

            hw, results = measure_this_machine(name=args.name or Path(args.output).stem, progress=tick)
        for r in results:
            out.print(f"{r.name}: {r.value:.4g} {r.unit} ({r.detail})")
        write_text_atomic(args.output, "# written by `planner hardware measure`; usable as --hardware FILE\n"
                          + yaml.safe_dump(hw.to_dict(), sort_keys=False, width=110))
        out.print(f"wrote {args.output}")
        return 0
    raise PlannerError("missing hardware subcommand", "use `planner hardware list|show NAME|measure -o FILE`")


def cmd_trace(args: argparse.Namespace) -> int:
    from planner.registry import resolve_model

    spec = resolve_model(args.model)
    if args.preset:
        from profilers.graph import profile_model
        from profilers.synthetic_traces import PRESETS, generate_trace

        if args.preset not in PRESETS:
            raise PlannerError(f"unknown trace preset '{args.preset}'", f"use one of: {', '.join(PRESETS)}")
        m = profile_model(spec, tiny=args.tiny, with_graph=False).moe
        if m is None:
            raise PlannerError(f"{spec.name} has no MoE layers to trace", "pick an MoE model")
        trace = generate_trace(len(m.moe_layers), m.num_experts, m.top_k, args.preset, model=spec.name,
                               tokens=args.tokens, seed=args.seed)
    else:
        if not args.tiny:
            raise PlannerError("recording a trace needs real weights, and only tiny models run here",
                               "pass --tiny (same architecture, small dimensions) or --preset NAME for a synthetic trace")
        import torch

        from profilers.models import build_model
        from profilers.moe import record_trace

        built = build_model(spec, tiny=True)
        vocab = built.module.config.vocab_size
        if args.prompts:
            lines = [l for l in Path(args.prompts).read_text(encoding="utf-8").splitlines() if l.strip()]
            if not lines:
                raise PlannerError(f"{args.prompts} has no prompts", "put one prompt per line")
            # tiny models have no tokenizer: bytes of each prompt, folded into the vocabulary
            prompts = [[b % vocab for b in line.encode("utf-8")][:64] for line in lines]
        else:
            g = torch.Generator().manual_seed(args.seed)
            prompts = [torch.randint(0, vocab, (16,), generator=g).tolist() for _ in range(4)]
        trace = record_trace(built.module, prompts, args.max_new_tokens, model_name=spec.name,
                             temperature=args.temperature, seed=args.seed)
    path = trace.save(args.output)
    _console(stderr=True).print(f"wrote {path}: {trace.num_tokens} steps x {trace.num_layers} MoE layers x top-{trace.top_k} ({trace.source})")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests)."""
    p = argparse.ArgumentParser(prog="planner", description="Plan deployment configurations for ML models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="cmd", required=True)

    pl = sub.add_parser("plan", help="compute a plan")
    pl.add_argument("model", help="catalog name, config.json path, or package.module:factory")
    pl.add_argument("--hardware", required=True, help="catalog name, <base>_<N>gb, or YAML path")
    pl.add_argument("--scenario", help="force a family (moe-offload, split-inference, fed-lora, fed-compress)")
    pl.add_argument("--cloud", help="cloud hardware (split inference)")
    pl.add_argument("--link", help="uplink rate, e.g. 20mbps, or a range 1mbps..100mbps for a plan table")
    pl.add_argument("--clients", help="client population YAML (federated)")
    pl.add_argument("-o", "--output", help="write the plan JSON here")
    pl.add_argument("--json", action="store_true", help="print the plan JSON instead of tables")
    pl.add_argument("-q", "--quiet", action="store_true", help="print nothing but the scenario line")
    pl.add_argument("--tiny", action="store_true",
                    help="plan the small same-architecture model (real weights; what `planner run` executes here)")
    pl.add_argument("--calibrate", action="store_true",
                    help="time the model on this CPU: moe-offload replaces the roofline (tiny models); "
                         "split-inference scales per-node CPU times to each device")
    pl.add_argument("--record-timing", action="store_true",
                    help="store the solver wall time in the plan (makes plan bytes differ between runs)")
    sp = pl.add_argument_group("split-inference")
    sp.add_argument("--rtt", default="20ms", help="round-trip time of the link")
    sp.add_argument("--epsilon", type=float, default=0.005, help="accuracy-loss cap (fraction)")
    sp.add_argument("--t-max", help="latency bound, e.g. 200ms (default none)")
    g = pl.add_argument_group("moe-offload")
    g.add_argument("--expert-bits", type=int, default=16, choices=(16, 8, 4), help="expert weight precision")
    g.add_argument("--context", type=int, default=2048, help="KV-cache context reserved (tokens)")
    g.add_argument("--batch", type=int, default=1, help="decode batch size")
    g.add_argument("--expert-budget", help="expert-cache VRAM, e.g. 12GiB or 50%% of all expert bytes (default: derived)")
    g.add_argument("--trace", help="routing trace .npz (default: a synthetic preset)")
    g.add_argument("--trace-preset", default="moepic-calibrated", help="synthetic trace preset")
    g.add_argument("--trace-tokens", type=int, default=2048, help="synthetic trace length (decode steps)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--theta-granularity", type=int, help="split granularity in columns (default 64/128/16 by width)")
    g.add_argument("--k-prefetch", type=int, help="experts prefetched per layer (default top-k)")
    g.add_argument("--inner", choices=("fixed_point", "scan"), default="fixed_point", help="inner solver")
    g.add_argument("--sim-tokens", type=int, default=1024, help="trace tokens the simulator replays")
    g.add_argument("--no-cpu-experts", action="store_true",
                   help="GPU-only plan space (MoEpic as published): no layer computes its misses on the host CPU")
    pl.set_defaults(fn=cmd_plan)

    ins = sub.add_parser("inspect", help="show a plan")
    ins.add_argument("plan")
    ins.add_argument("--json", action="store_true", help="print the plan JSON as stored")
    ins.add_argument("--plot", help="write a PNG of budget and theta per layer")
    ins.set_defaults(fn=cmd_inspect)

    df = sub.add_parser("diff", help="compare two plans; exit 1 on a regression")
    df.add_argument("old")
    df.add_argument("new")
    df.add_argument("--tolerance", default="1%", help="allowed relative worsening of the objective")
    df.add_argument("--max-rows", type=int, default=40)
    df.set_defaults(fn=cmd_diff)

    pr = sub.add_parser("profile", help="profile a model graph (meta device, no weights)")
    pr.add_argument("model")
    pr.add_argument("--tiny", action="store_true", help="the small same-architecture model with real weights")
    pr.add_argument("--seq-len", type=int, help="tokens in the example input")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--nodes", type=int, default=0, help="also list the first N compute nodes")
    pr.add_argument("--max-blocks", type=int, default=12)
    pr.add_argument("--all-blocks", action="store_true")
    pr.set_defaults(fn=cmd_profile)

    hw = sub.add_parser("hardware", help="hardware catalog and micro-benchmarks")
    hws = hw.add_subparsers(dest="hw_cmd", required=True)
    hws.add_parser("list")
    sh = hws.add_parser("show")
    sh.add_argument("name")
    me = hws.add_parser("measure")
    me.add_argument("-o", "--output", required=True, help="profile YAML to write")
    me.add_argument("--name", help="profile name (default: file stem)")
    hw.set_defaults(fn=cmd_hardware)

    tr = sub.add_parser("trace", help="record (tiny model) or synthesise a routing trace")
    tr.add_argument("model")
    tr.add_argument("-o", "--output", required=True)
    tr.add_argument("--tiny", action="store_true")
    tr.add_argument("--prompts", help="text file, one prompt per line")
    tr.add_argument("--max-new-tokens", type=int, default=64)
    tr.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: seeded sampling")
    tr.add_argument("--preset", help="synthesise from a preset instead of recording")
    tr.add_argument("--tokens", type=int, default=2048, help="synthetic trace length")
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(fn=cmd_trace)
    _add_runtime_commands(sub)
    return p


def _add_runtime_commands(sub: Any) -> None:
    """`emit` and `run` (codegen and runtime), registered when those packages provide them."""
    try:
        from planner.cli_runtime import add_commands
    except ImportError:
        return
    add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `planner` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from solvers.common import InfeasibleError

    try:
        return int(args.fn(args))
    except (PlannerError, InfeasibleError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
