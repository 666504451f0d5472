"""fed-lora benchmark (issues 10, 20): the memory model at full size and against peak RSS, FedQuad vs every baseline
on 10 / 100 / 10 000 devices, and federated LoRA fine-tuning of truncated SmolLM2, the plan vs uniform depth.

1. memory: MiniLM (real weights), GPT-2 and BERT-base at full size; predicted (profile fitted from four
   steps) vs MEASURED bytes (saved-tensor hooks + parameters/gradients/Adam) at other depths and
   quantisation, and the textbook closed form for comparison.
2. solver: populations gen:10, gen:100, gen:10000 (seed 0) planning GPT-2 (batch 4, seq 256; --quick: gen:10 and
   gen:100 planning the bed's smollm2-135m:4L at batch 4, seq 48, whose profile the bed measures anyway): solver time,
   predicted round time and progress rate, participants (memory feasibility) of the plan vs every
   baseline, the CP-SAT gap where it applies. Round times are PREDICTED from this CPU's measured times
   scaled by FLOP/s ratios to the catalog devices.
3. the instruction bed (issue 20, the default `--bed instruct`): SmolLM2-135M truncated to 4 blocks (real
   weights) fine-tuned with LoRA on the instruction tasks format, recall and upper (non-IID by task), 4 clients
   (two with room, two phones that hold depth 1 unquantised or depth 4 quantised); FedQuad's plan vs uniform
   depth through the same Flower apps in-process, the same start, split and participation per seed; held-out
   answer-token accuracy vs the EMULATED clock, time to a target half-way from the start to the best final.
   `--baselines memory_fit,full_depth` (the default; none with --quick) runs those baselines on the same seeds
   too (one whose client configurations equal an earlier run's is not run twice) and reports whether any reached
   the target before the plan; `--utility-fit FILE` plans with the pilot's fitted utility (benchmarks/fed_lora_pilot.py, decision seed).
   `--bed digits`: the older digits-transformer bed (starts at 80.8 %; kept for comparison).
1b. the memory model vs peak RSS of a fresh process per training step (smollm2-135m:4L), under the client
   runtime's allocator policy and under glibc's default.

    nice .venv/bin/python -m benchmarks.fed_lora --quick [--skip-memory] [--skip-solver] [--skip-real]
        [--skip-independent] [--seeds N] [--rounds R] [--reuse EARLIER.json] [--baselines B,B] [--utility-fit F]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from core.atomic_io import write_text_atomic

OUT = Path("build/bench/fed_lora.json")


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def timed(timing: dict, name: str):
    """Record a section's wall seconds, CPU seconds (this process and its children) and the 1-minute load average at
    its start and end in `timing[name]`: on a shared machine the CPU seconds say what a quiet run would take."""
    wall0, cpu0, load0 = time.perf_counter(), _cpu_s(), os.getloadavg()[0]
    try:
        yield
    finally:
        timing[name] = {"wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(_cpu_s() - cpu0, 1),
                        "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def table(title: str, cols: list[str], rows: list[list[object]]) -> str:
    """A plain fixed-width table."""
    cells = [[str(c) for c in cols]] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths))]
    lines += ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells[1:]]
    return "\n".join(lines)


# ------------------------------------------------------------------ 1. memory model at full size
def bench_memory(quick: bool) -> list[dict]:
    import torch

    from planner.registry import resolve_model
    from profilers.fine_tuning import closed_form_profile, measure_step, profile_fine_tuning, task_model
    from profilers.models import build_model

    torch.set_num_threads(1)
    rows = []
    for name in (("minilm",) if quick else ("minilm", "gpt2", "bert-base")):
        spec = resolve_model(name)
        torch.manual_seed(0)
        model = task_model(build_model(spec, tiny=False, device="cpu", seq_len=64).module, spec.task)
        prof = profile_fine_tuning(model, name, batch_size=2, seq_len=64, repeats=1, local_steps=1)
        L = prof.num_blocks
        cfg = model.encoder.config if hasattr(model, "encoder") else model.model.config
        hidden = int(getattr(cfg, "hidden_size", getattr(cfg, "n_embd", 0)))
        heads = int(getattr(cfg, "num_attention_heads", getattr(cfg, "n_head", 0)))
        blocks = model.get_submodule(prof.layout.path)
        closed = closed_form_profile(name, L, hidden, heads, sum(p.numel() for p in model.parameters()),
                                     sum(p.numel() for p in blocks[0].parameters()), 2, 64)
        for d, q, bits in ((L // 2, 0, 8), (L // 2, L // 2, 8), (L - 1, 2, 8), (L, L, 4)):
            m = measure_step(model, prof.layout, d, q, bits, batch_size=2, seq_len=64, count_flops=False)
            rows.append({"model": name, "blocks": L, "depth": d, "quant": q, "bits": bits,
                         "saved_pred": prof.saved_bytes(d, q, bits), "saved_meas": m.activation_bytes,
                         "total_pred": prof.training_bytes(d, q, bits), "total_meas": m.training_bytes,
                         "closed_form_saved": closed.saved_bytes(d, q, bits),
                         "trained_blocks_ok": m.trainable_blocks == tuple(range(L - d, L))})
    return rows


# ------------------------------------------------------------------ 2. solver at scale
SOLVER_MODEL = ("gpt2", 4, 256, 20)                   # (model, batch, seq, local steps)
SOLVER_MODEL_QUICK = ("smollm2-135m:4L", 4, 48, 3)    # the instruction bed's model and shape (BED_MODEL below)
def bench_solver(quick: bool) -> list[dict]:
    from planner.api import plan_from_argv
    from planner.families.fed_lora.lowering import build_problem
    from solvers.fed_lora import baselines as bl
    from solvers.fed_lora import greedy
    from solvers.fed_lora.exact import CpSat

    rows = []
    sizes = (10, 100) if quick else (10, 100, 10_000)
    # --quick plans the bed's model at the bed's shape (its profile is measured once and serves both sections);
    # GPT-2's profile at seq 256 costs minutes of CPU on a cold cache (profile version 5: 36 timed steps).
    model = SOLVER_MODEL_QUICK if quick else SOLVER_MODEL
    for n in sizes:
        t0 = time.perf_counter()
        ctx = plan_from_argv([model[0], "--scenario", "fed-lora", "--clients", f"gen:{n}:0", "--batch-size", str(model[1]),
                              "--seq-len", str(model[2]), "--local-steps", str(model[3]), "--allow-sit-out"])
        plan_s = time.perf_counter() - t0
        low = build_problem(ctx.state.population, ctx.state.profile, ctx.options)
        p = low.problem
        times = []
        for _ in range(3):
            t = time.perf_counter()
            sol = greedy.solve(p)
            times.append(time.perf_counter() - t)
        entries = {"fedquad": sol} | {b.name: b.solve(p) for b in bl.baselines()}
        gap = None
        if CpSat().unsupported(p) is None:
            e = CpSat().solve(p, time_limit_s=60)
            gap = (e.objective - sol.objective) / e.objective
        for name, s in entries.items():
            m = s.metrics
            rows.append({"devices": n, "model": model[0], "config": name,
                         "solver_s": min(times) if name == "fedquad" else s.wall_time_s,
                         "round_time_s": m.round_time_s, "progress_rate": m.progress_rate,
                         "participants": m.participants, "sitting_out": len(m.sitting_out),
                         "memory_ok": bool(np.all(m.memory_ok)), "spread": m.spread,
                         "mean_depth": float(np.mean(s.depth[s.depth > 0])) if m.participants else 0.0,
                         "gap_to_exact": gap if name == "fedquad" else None, "plan_pipeline_s": plan_s})
    return rows


# ------------------------------------------------------------------ 3. real task, 20 clients
REAL_TIERS = (("jetson_agx_orin_32gb", 3, "24MiB", "50mbps"), ("jetson_orin_nano_8gb", 6, "9MiB", "20mbps"),
              ("jetson_tx2_8gb", 5, "7MiB", "20mbps"), ("phone_midrange_8gb", 6, "5MiB", "10mbps"))


def real_population(path: Path, alpha: float, seed: int) -> None:
    """20 clients of four tiers; samples = their share of the Dirichlet split the runtime uses."""
    from runtime.fed.data import dirichlet_partition, load_digits_split

    ids = []
    for kind, count, _, _ in REAL_TIERS:
        ids += [f"{kind}-{i}" for i in range(count)]
    parts = dirichlet_partition(load_digits_split(seed).y_train, len(ids), alpha, seed)
    # The runtime gives client k (in the plan's sorted id order) partition k; samples must match.
    size = {cid: len(parts[sorted(ids).index(cid)]) for cid in ids}
    lines = ["devices:"]
    for kind, count, mem, link in REAL_TIERS:
        for i in range(count):
            cid = f"{kind}-{i}"
            lines.append(f"  - {{id: {cid}, kind: {kind}, memory: {mem}, link: {link}, samples: {size[cid]}}}")
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ 1b. memory model vs an independent measurement
PROBE_MODEL = "smollm2-135m:4L"      # truncated SmolLM2-135M (real weights, testbeds/smollm2.py)
PROBE_CONFIGS = ((1, 0), (2, 0), (4, 0), (2, 1), (4, 2), (4, 4))
# glibc's default raises its mmap threshold after frees (up to 32 MiB) and keeps freed chunks below it in the heap,
# so a process's peak RSS exceeds the live bytes; the fed-lora client runtime fixes the threshold at 128 KiB
# (kernels/malloc_policy.py), which returns every larger chunk on free. The probe runs both: the runtime's
# policy through the runtime's own call, and glibc's default.
RUNTIME_POLICY = "runtime policy (mmap threshold 128 KiB)"
MALLOC_MODES = ("glibc default", RUNTIME_POLICY)
PROBE_CONFIGS_QUICK = ((2, 0), (2, 1), (4, 2))     # none of them among the four fitted steps


def _rss_bytes(field: str) -> int:
    """VmRSS or VmHWM of this process from /proc/self/status (B)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_probe(depth: int, quant: int, batch: int, seq: int, pin: int = 0) -> dict:
    """In a fresh process: load the model, page every weight in (the safetensors copy is memory-mapped, so an
    untouched weight is not resident: the first forward used to add ~130 MiB of weight pages to the "training"
    peak), run one warm-up step at batch 1 x seq 8 on a copy (lazy imports and kernel setup are paid once per
    process), return freed heap to the system (glibc `malloc_trim`), reset the peak-RSS mark, run one real training
    step (LoRA on the top `depth` blocks, `quant` of them storing 8-bit activations, Adam), and report the peak
    RSS above the resident size before the step (B). Independent of the saved-tensor hooks and of torch's
    allocator counters."""
    if pin:     # what the client runtime does first (runtime/fed/lora_app.py train_client)
        from kernels.malloc_policy import pin_mmap_threshold

        if not pin_mmap_threshold():
            raise RuntimeError("could not set the malloc mmap threshold (not glibc?)")
    import torch

    from profilers.fine_tuning import block_layout, measure_step, task_model
    from testbeds.smollm2 import load_model

    torch.set_num_threads(1)
    model = task_model(load_model(PROBE_MODEL), "causal-lm")
    layout = block_layout(model)
    import ctypes
    import gc

    with torch.no_grad():
        paged = sum(float(p.sum()) for p in model.parameters())   # reads every page, allocates only scalars
    # One warm-up step on a copy at batch 1 x seq 8 loads the code the step runs (PEFT, Adam, the quantisation
    # kernels import lazily; oneDNN/MKL set up their buffers): costs a process pays once, not per step.
    measure_step(model, layout, 1, min(quant, 1), 8, 64, batch_size=1, seq_len=8, copy_model=True, count_flops=False)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")          # reset VmHWM to the current RSS (Linux)
    before = _rss_bytes("VmRSS")
    cpu0 = time.process_time()
    measure_step(model, layout, depth, quant, 8, 64, batch_size=batch, seq_len=seq, copy_model=False, count_flops=False)
    return {"depth": depth, "quant": quant, "rss_before": before, "rss_peak": _rss_bytes("VmHWM"), "paged_sum": paged,
            "measured_training_bytes": _rss_bytes("VmHWM") - before, "step_cpu_s": time.process_time() - cpu0}


def bench_memory_independent(batch: int = 4, seq: int = 128, configs: tuple = PROBE_CONFIGS) -> dict:
    """The fitted memory model (hooks and the allocator's peak, 4 steps) against peak RSS of separate processes
    at other (d, q)."""
    import subprocess

    import torch

    from profilers.fine_tuning import profile_fine_tuning, task_model
    from testbeds.smollm2 import load_model

    torch.set_num_threads(1)
    model = task_model(load_model(PROBE_MODEL), "causal-lm")
    prof = profile_fine_tuning(model, PROBE_MODEL, batch_size=batch, seq_len=seq, repeats=1, local_steps=1)
    del model
    rows = []
    import os

    for d, q in configs:
        pred = prof.peak_bytes(d, q, 8) - prof.weight_bytes
        for malloc in MALLOC_MODES:
            # the frozen weights are resident before the step in the probe: compare what the step adds
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            out = subprocess.run([sys.executable, "-m", "benchmarks.fed_lora", "--rss-probe", str(d), str(q), str(batch),
                                  str(seq), str(int(malloc == RUNTIME_POLICY))], capture_output=True, text=True,
                                 check=True, env={**env, "OMP_NUM_THREADS": "1"})
            got = json.loads(out.stdout.strip().splitlines()[-1])
            got.update(malloc=malloc, predicted_training_bytes=pred, error=pred / got["measured_training_bytes"] - 1)
            rows.append(got)
            print(f"  {PROBE_MODEL} d={d} q={q} ({malloc}): predicted {pred / 2**20:.1f} MiB, peak RSS above the "
                  f"loaded model {got['measured_training_bytes'] / 2**20:.1f} MiB ({got['error']:+.1%})", flush=True)
    fixed = [abs(r["error"]) for r in rows if r["malloc"] == RUNTIME_POLICY]
    rows_default = [r for r in rows if r["malloc"] == "glibc default"]
    errs = [abs(r["error"]) for r in rows_default]
    return {"model": PROBE_MODEL, "batch": batch, "seq": seq, "rows": rows,
            "median_abs_error": float(np.median(errs)), "max_abs_error": float(max(errs)),
            "median_abs_error_runtime_policy": float(np.median(fixed)),
            "max_abs_error_runtime_policy": float(max(fixed)),
            "weight_bytes": prof.weight_bytes, "workspace_bytes": prof.workspace_bytes}


def time_to(curve: list[dict], target: float) -> float | None:
    """Emulated seconds until held-out accuracy first reaches `target` (None if never)."""
    for r in curve:
        if r["accuracy"] >= target:
            return float(r["emulated_clock_s"])
    return None


def bench_real(rounds: int, target: float, local_steps: int, lr: float, seed: int = 0) -> dict:
    """One seed (population split and participation) of the plan vs uniform depth on Flower."""
    from planner.api import emit_artifact, plan_from_argv
    from runtime.fed.lora_run import run_fed_lora

    work = Path(tempfile.mkdtemp(prefix="fedlora-bench-"))
    pop = work / "clients.yaml"
    real_population(pop, alpha=1.0, seed=seed)
    ctx = plan_from_argv(["digits-transformer", "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", "32",
                          "--local-steps", str(local_steps), "--rounds", str(rounds)])
    art = emit_artifact(ctx.plan, work / "build", ["--lr", str(lr)])
    out = {"plan_predicted_round_s": ctx.plan.predicted["round_time_s"],
           "uniform_predicted_round_s": ctx.plan.baselines["uniform_depth"].predicted["round_time_s"],
           "depths_plan": ctx.plan.decisions["depth_histogram"],
           "depths_uniform": ctx.plan.baselines["uniform_depth"].decisions["depth_histogram"], "runs": {}}
    for config in ("plan", "uniform_depth"):
        t0 = time.perf_counter()
        rec = run_fed_lora(art, mode="simulation", rounds=rounds, baseline=None if config == "plan" else config,
                           on_round=lambda r, c=config: print(f"  [{c}] round {r['round']}: acc {r['accuracy']:.3f} "
                                                              f"emulated round {r.get('emulated_round_s', 0):.3g} s",
                                                              file=sys.stderr, flush=True))
        errs = [abs(e["round_time_error"]) for e in rec["devices"].values() if e.get("round_time_error") is not None]
        merr = [abs(e["memory_error"]) for e in rec["devices"].values() if e.get("memory_error") is not None]
        out["runs"][config] = {"curve": rec["rounds"], "wall_s": time.perf_counter() - t0,
                               "final_accuracy": rec["final_accuracy"], "emulated_clock_s": rec["emulated_clock_s"],
                               "time_to_target_s": time_to(rec["rounds"], target),
                               "median_round_time_error": float(np.median(errs)) if errs else None,
                               "max_memory_error": float(max(merr)) if merr else None,
                               "all_trained_planned_depth": all(e.get("trained_planned_depth", True)
                                                                for e in rec["devices"].values() if not e.get("sits_out"))}
    a, b = out["runs"]["plan"]["time_to_target_s"], out["runs"]["uniform_depth"]["time_to_target_s"]
    out["target_accuracy"] = target
    out["seed"] = seed
    out["start_accuracy"] = out["runs"]["plan"]["curve"][0]["accuracy"] if out["runs"]["plan"]["curve"] else None
    out["speedup_to_target"] = (b / a) if (a and b) else None
    return out


# ------------------------------------------------------------------ 3. the SmolLM2 instruction test bed (issue 20)
BED_MODEL = "smollm2-135m:4L"
BED_TASKS = "format+recall+upper"      # prompt and answer fit 48 tokens (arith/reverse: ~0 % for a 4-layer model)
BED_LR = 3e-3          # fed-lora's default client learning rate
# The target (held-out answer-token accuracy) is fed-expand's rule, fixed before the runs: the mean start plus half
# the gap to the best configuration's mean final accuracy (so it is well above where every run starts).
# Two devices with room to spare and two phones whose memory for training (312 MiB, 280.8 MiB after the plan's 10 %
# margin) holds SmolLM2:4L's LoRA step at depth 1 unquantised (276.0 MiB predicted at batch 4, seq 48) but not
# depth 2 (282.2 MiB): quantising saved activations lets them go deeper (depth 4 with 4 quantised blocks: 279.8
# MiB). Uniform depth (the deepest the weakest device holds, for everyone) is therefore depth 1.
BED_CLIENTS = [
    ("orin", "jetson_orin_nano_8gb", "1GiB", "100mbps"),
    ("pi5", "raspberry_pi5_8gb", "1GiB", "50mbps"),
    ("phone-a", "phone_midrange_8gb", "312MiB", "20mbps"),
    ("phone-b", "phone_midrange_8gb", "312MiB", "20mbps"),
]


def bed_population(path: Path) -> None:
    """The instruction bed's client population (no sample counts: each client's share comes from the split)."""
    lines = ["devices:"] + [f"  - {{id: {cid}, kind: {kind}, memory: {mem}, link: {link}}}"
                            for cid, kind, mem, link in BED_CLIENTS]
    path.write_text("\n".join(lines) + "\n")


def bed_artifact(work: Path, seed: int, rounds: int, local_steps: int = 3,
                 plan_args: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """Plan the instruction bed's population (clients written into `work`), emit it with the bed's learning rate
    and task data of `seed`: (artifact directory, its runtime.yaml as a dict). The pilot and the diagnosis build
    their variants on it."""
    from planner.api import emit_artifact, plan_from_argv

    pop = work / "clients.yaml"
    bed_population(pop)
    ctx = plan_from_argv([BED_MODEL, "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", "4",
                          "--seq-len", "48", "--local-steps", str(local_steps), "--rounds", str(rounds), *plan_args])
    data = f"instruct:{BED_TASKS},total=400,test_per_task=12,seed={seed}"
    art = Path(emit_artifact(ctx.plan, work / "build", ["--lr", str(BED_LR), "--seed", str(seed),
                                                        "--task-data", data]))
    return art, yaml.safe_load((art / "runtime.yaml").read_text())


def bench_instruct_seed(seed: int, args: argparse.Namespace, configs: tuple[str, ...]) -> dict:
    """One seed of the instruction bed: plan, emit (data split `seed`), then every configuration through the same
    Flower apps in this process (same start: the emitted initial adapters; same split; every client every round)."""
    from planner.api import emit_artifact, plan_from_argv
    from runtime.fed.lora_run import run_in_process

    work = Path(tempfile.mkdtemp(prefix="fedlora-bed-"))
    pop = work / "clients.yaml"
    bed_population(pop)
    ctx = plan_from_argv([args.model, "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", str(args.batch_size),
                          "--seq-len", str(args.seq_len), "--local-steps", str(args.local_steps), "--rounds",
                          str(args.rounds)] + (["--utility-fit", str(args.utility_fit)] if args.utility_fit else []))
    data = f"instruct:{BED_TASKS},total={args.total},test_per_task={args.test_per_task},seed={seed}"
    art = emit_artifact(ctx.plan, work / "build", ["--lr", str(args.lr), "--seed", str(seed), "--task-data", data])
    plan = ctx.plan
    out: dict = {"seed": seed, "data": data, "plan_notes": list(plan.notes), "solver_config": dict(plan.solver.config),
                 "profile": {k: v for k, v in plan.inputs["profile"].items() if k.startswith("host_") or k == "source"},
                 "clients": {cfg: {cid: {"lora_depth": c["lora_depth"], "act_quant_blocks": len(c.get("act_quant_layers", []))}
                                   for cid, c in (plan.decisions["clients"] if cfg == "plan"
                                                  else plan.baselines[cfg].decisions["clients"]).items()}
                             for cfg in configs},
                 "predicted_round_s": {cfg: (plan.predicted if cfg == "plan" else plan.baselines[cfg].predicted)["round_time_s"]
                                       for cfg in configs},
                 "predicted_progress_rate": {cfg: (plan.predicted if cfg == "plan"
                                                   else plan.baselines[cfg].predicted)["progress_rate_per_s"]
                                             for cfg in configs},
                 "runs": {}}
    for cfg in configs:
        same = next((c for c in out["runs"] if out["clients"][c] == out["clients"][cfg]), None)
        if same is not None:        # the same client configurations: the same run (recorded once, marked)
            out["runs"][cfg] = {**out["runs"][same], "identical_to": same}
            print(f"  seed {seed} [{cfg}]: the same client configurations as {same}; not run again", flush=True)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        rec = run_in_process(art, rounds=args.rounds, baseline=None if cfg == "plan" else cfg,
                             on_round=lambda r, c=cfg: print(f"  seed {seed} [{c}] round {r['round']}: answer-token acc "
                                                              f"{r['accuracy']:.3f} emulated round {r['emulated_round_s']:.3g} s",
                                                              flush=True))
        errs = [abs(e["round_time_error"]) for e in rec["devices"].values() if e.get("round_time_error") is not None]
        merr = [abs(e["memory_error"]) for e in rec["devices"].values() if e.get("memory_error") is not None]
        out["runs"][cfg] = {"curve": [{k: r[k] for k in ("round", "accuracy", "loss", "emulated_round_s", "emulated_clock_s")}
                                      for r in rec["rounds"]],
                            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                            "final_accuracy": rec["final_accuracy"],
                            "emulated_clock_s": rec["emulated_clock_s"],
                            "median_round_time_error": float(np.median(errs)) if errs else None,
                            "max_memory_error": float(max(merr)) if merr else None,
                            "all_trained_planned_depth": all(e.get("trained_planned_depth", True)
                                                             for e in rec["devices"].values() if not e.get("sits_out"))}
    out["start_accuracy"] = out["runs"][configs[0]]["curve"][0]["accuracy"]
    return out


def score_bed(seeds: list[dict], target: float, baseline: str = "uniform_depth") -> dict:
    """Per seed: emulated seconds (and rounds) to `target` for the plan and `baseline`, and the speed-up
    (baseline's time / the plan's; a run that never reaches the target is censored at its last clock: the
    speed-up is then a bound, flagged)."""
    rows = []
    for s in seeds:
        if baseline not in s["runs"]:
            continue
        a, b = s["runs"]["plan"], s["runs"][baseline]
        ta, tb = time_to(a["curve"], target), time_to(b["curve"], target)
        ra = next((r["round"] for r in a["curve"] if r["accuracy"] >= target), None)
        rb = next((r["round"] for r in b["curve"] if r["accuracy"] >= target), None)
        if ta and tb:
            speed, kind = tb / ta, "measured"
        elif ta and not tb:
            speed, kind = b["emulated_clock_s"] / ta, "lower bound (uniform never reached the target)"
        elif tb and not ta:
            speed, kind = tb / a["emulated_clock_s"], "upper bound (the plan never reached the target)"
        else:
            speed, kind = None, "neither reached the target"
        rows.append({"seed": s["seed"], "plan_time_to_target_s": ta, "uniform_time_to_target_s": tb,
                     "plan_rounds_to_target": ra, "uniform_rounds_to_target": rb, "speedup": speed, "kind": kind})
    return {"target": target, "per_seed": rows}


def summary_of(result: dict) -> dict:
    """The headline figures (median over seeds, with min-max) from whatever parts ran; None where a part did not."""
    bed = result.get("bed")
    mem = result.get("memory_independent")
    out: dict = {}
    if bed:
        rescore(bed)
        sc = bed["score"]
        speed = [r["speedup"] for r in sc["per_seed"] if r["kind"] == "measured"]
        rounds = [r["uniform_rounds_to_target"] / r["plan_rounds_to_target"] for r in sc["per_seed"]
                  if r["kind"] == "measured"]
        ratio = [float(np.median([c["emulated_round_s"] for c in s["runs"]["plan"]["curve"][1:]]))
                 / float(np.median([c["emulated_round_s"] for c in s["runs"]["uniform_depth"]["curve"][1:]]))
                 for s in bed["seeds"]]
        out.update({
            "time_to_target_speedup_vs_uniform": float(np.median(speed)) if speed else None,
            "time_to_target_speedup_range": [min(speed), max(speed)] if speed else None,
            "time_to_target_speedup_per_seed": [r["speedup"] for r in sc["per_seed"]],
            "seeds_where_both_reached_target": len(speed),
            "rounds_to_target_speedup_vs_uniform": float(np.median(rounds)) if rounds else None,
            "round_time_ratio_plan_over_uniform_emulated": [round(x, 3) for x in ratio],
            "round_time_ratio_plan_over_uniform_predicted":
                bed["seeds"][0]["predicted_round_s"]["plan"] / bed["seeds"][0]["predicted_round_s"]["uniform_depth"],
            "progress_rate_ratio_plan_over_uniform_predicted":
                bed["seeds"][0]["predicted_progress_rate"]["plan"] / bed["seeds"][0]["predicted_progress_rate"]["uniform_depth"],
            "time_to_target_speedup_kind_per_seed": [r["kind"] for r in sc["per_seed"]],
            "baselines_vs_plan_time_to_target": {k: {"median_speedup_of_plan": v["median_speedup"], "range": v["range"],
                                                     "beats_plan_on_seeds": v["beats_plan_on_seeds"],
                                                     "identical_to": v["identical_to"]}
                                                 for k, v in vs_baselines(bed).items()},
            "utility": bed["seeds"][0].get("solver_config", {}).get("utility"),
            "utility_source": bed["seeds"][0].get("solver_config", {}).get("utility_source"),
            "round_time_error_plan_median": float(np.median([s["runs"]["plan"]["median_round_time_error"]
                                                             for s in bed["seeds"]])),
            "round_time_error_uniform_median": float(np.median([s["runs"]["uniform_depth"]["median_round_time_error"]
                                                                for s in bed["seeds"]])),
            "time_to_target_clock": "EMULATED (client CPU seconds here x FLOP/s ratio + link time, slowest client per round)",
            "seeds": len(bed["seeds"]),
            "start_accuracy": float(np.median([s["start_accuracy"] for s in bed["seeds"]])),
            "target_accuracy": sc["target"],
            "accuracy_metric": "held-out answer-token accuracy, teacher-forced (instruction test bed)",
            "final_accuracy_plan": float(np.median([s["runs"]["plan"]["final_accuracy"] for s in bed["seeds"]])),
            "final_accuracy_uniform": float(np.median([s["runs"]["uniform_depth"]["final_accuracy"] for s in bed["seeds"]])),
            "target_rule": "mean start + 0.5 x (best configuration's mean final - mean start), fed-expand's rule",
            "time_to_target_speedup_vs_uniform_at_quarter_gap": bed["quarter_gap"]["median"],
            "time_to_target_speedup_vs_uniform_at_three_quarter_gap": bed["three_quarter_gap"]["median"],
            "bed": f"{bed['model']}, {len(BED_CLIENTS)} clients, instruct:{BED_TASKS}, {bed['rounds']} rounds x "
                   f"{bed['local_steps']} local steps, batch {bed['batch_size']}, seq {bed['seq_len']}",
        })
    else:
        out.update({"time_to_target_speedup_vs_uniform": None, "seeds": 0, "start_accuracy": None,
                    "target_accuracy": None})
    if mem:
        out.update({
            "memory_model_error_vs_independent": mem["median_abs_error_runtime_policy"],
            "memory_model_error_vs_independent_max": mem["max_abs_error_runtime_policy"],
            "memory_model_independent_reference": "peak RSS of a fresh process during one training step, under the "
                                                  "allocator policy the fed-lora client runtime sets (mmap threshold "
                                                  "128 KiB)",
            "memory_model_error_vs_independent_glibc_default": mem["median_abs_error"],
            "memory_model_error_vs_independent_glibc_default_max": mem["max_abs_error"],
            "memory_model_probe": f"{mem['model']}, batch {mem['batch']}, seq {mem['seq']}, peak RSS",
        })
    return out


def run_bed(args: argparse.Namespace) -> dict:
    """The instruction bed over `args.seeds` seeds, plan vs uniform depth (and `--baselines`), per seed in turn."""
    configs = ("plan", "uniform_depth") + tuple(b for b in args.baselines if b not in ("plan", "uniform_depth"))
    seeds = [bench_instruct_seed(seed, args, configs) for seed in range(args.seed_base, args.seed_base + args.seeds)]
    start = float(np.mean([s["start_accuracy"] for s in seeds]))
    best = max(float(np.mean([s["runs"][c]["final_accuracy"] for s in seeds])) for c in ("plan", "uniform_depth"))
    target = args.target if args.target is not None else start + 0.5 * (best - start)
    bed = {"model": args.model, "rounds": args.rounds, "local_steps": args.local_steps, "batch_size": args.batch_size,
           "seq_len": args.seq_len, "lr": args.lr, "clients": BED_CLIENTS, "seeds": seeds}
    bed["score"] = score_bed(seeds, target)
    bed["start_mean"], bed["best_final_mean"] = start, best
    bed["vs_baselines"] = vs_baselines(bed)
    return bed


def vs_baselines(bed: dict) -> dict:
    """Per baseline that ran beside the plan: the speed-up to the primary target (median over the seeds where both
    reached it) and whether it beat the plan on any seed; the plan must not be beaten by its own baselines."""
    out = {}
    names = sorted({c for s in bed["seeds"] for c in s["runs"]} - {"plan"})
    for name in names:
        sc = score_bed(bed["seeds"], bed["score"]["target"], baseline=name)
        xs = [r["speedup"] for r in sc["per_seed"] if r["kind"] == "measured"]
        same = sorted({s["runs"][name].get("identical_to", "") for s in bed["seeds"] if name in s["runs"]} - {""})
        out[name] = {"per_seed": sc["per_seed"], "median_speedup": float(np.median(xs)) if xs else None,
                     "range": [min(xs), max(xs)] if xs else None,
                     "beats_plan_on_seeds": [r["seed"] for r in sc["per_seed"] if r["speedup"] is not None
                                             and r["speedup"] < 1 and r["kind"] != "lower bound (uniform never reached "
                                                                                   "the target)"],
                     "identical_to": same}
    return out


def rescore(bed: dict) -> None:
    """The primary score and the robustness targets (a quarter and three quarters of the way from the start to the
    best configuration's mean final accuracy); medians over the seeds where both configurations reached the target
    (censored seeds are listed, not averaged in)."""
    seeds = bed["seeds"]
    start = float(np.mean([s["start_accuracy"] for s in seeds]))
    best = max(float(np.mean([s["runs"][c]["final_accuracy"] for s in seeds])) for c in ("plan", "uniform_depth"))
    for name, frac in (("score", 0.5), ("quarter_gap", 0.25), ("three_quarter_gap", 0.75)):
        target = bed["score"]["target"] if name == "score" else start + frac * (best - start)
        sc = score_bed(seeds, target)
        xs = [r["speedup"] for r in sc["per_seed"] if r["kind"] == "measured"]
        bed[name] = {**sc, "median": float(np.median(xs)) if xs else None, "measured_seeds": len(xs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, MiniLM only, 6 rounds, 3 probe points")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-solver", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--target", type=float, default=None,
                    help="held-out accuracy target (default: digits 0.85; instruction bed: half-way from the start to the "
                         "best configuration's mean final accuracy)")
    ap.add_argument("--local-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--bed", choices=("instruct", "digits"), default="instruct",
                    help="the learning-curve bed: SmolLM2 on the instruction tasks (issue 20) or the old digits one")
    ap.add_argument("--model", default=BED_MODEL)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=48)
    ap.add_argument("--total", type=int, default=400, help="instruction bed: training examples over all clients")
    ap.add_argument("--test-per-task", type=int, default=12)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON output (default build/bench/fed_lora.json)")
    ap.add_argument("--rss-probe", type=int, nargs=5, metavar=("D", "Q", "BATCH", "SEQ", "PIN"), help=argparse.SUPPRESS)
    ap.add_argument("--reuse", type=Path, default=None,
                    help="take the parts this run skips (bed, memory_independent) from an earlier output JSON")
    ap.add_argument("--skip-independent", action="store_true")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the real-task comparison (population split)")
    ap.add_argument("--seed-base", type=int, default=0, help="first seed (pilots use 100+, never scored)")
    ap.add_argument("--baselines", default=None,
                    help="instruction bed: more of the plan's baselines to run beside plan and uniform depth (comma "
                         "list; one with an earlier run's client configurations is not run twice); default "
                         "memory_fit,full_depth, none with --quick (time); '' for none")
    ap.add_argument("--utility-fit", type=Path, default=None,
                    help="instruction bed: plan with this pilot fit (benchmarks/fed_lora_pilot.py) of the utility")
    args = ap.parse_args(argv)
    if args.baselines is None:
        args.baselines = "" if args.quick else "memory_fit,full_depth"
    args.baselines = [b for b in args.baselines.split(",") if b]
    if args.rss_probe:
        print(json.dumps(rss_probe(*args.rss_probe)))
        return 0
    result: dict = {}
    timing: dict = {}
    wall0, cpu0, load0 = time.perf_counter(), _cpu_s(), os.getloadavg()[0]
    if not args.skip_independent:
        print("1b. memory model (fitted from saved-tensor hooks) vs peak RSS of a fresh process per step", flush=True)
        with timed(timing, "memory_independent"):
            result["memory_independent"] = bench_memory_independent(
                configs=PROBE_CONFIGS_QUICK if args.quick else PROBE_CONFIGS)
    if not args.skip_memory:
        with timed(timing, "memory"):
            rows = bench_memory(args.quick)
        result["memory"] = rows
        print(table("1. memory model vs measurement (full-size models, batch 2, seq 64; MiB)",
                    ["model", "d", "q", "bits", "saved pred", "saved meas", "err", "total err", "closed-form err"],
                    [[r["model"], r["depth"], r["quant"], r["bits"], r["saved_pred"] / 2**20, r["saved_meas"] / 2**20,
                      f"{r['saved_pred'] / r['saved_meas'] - 1:+.1%}", f"{r['total_pred'] / r['total_meas'] - 1:+.1%}",
                      f"{r['closed_form_saved'] / r['saved_meas'] - 1:+.0%}"] for r in rows]))
    if not args.skip_solver:
        with timed(timing, "solver"):
            rows = bench_solver(args.quick)
        result["solver"] = rows
        solver_model = SOLVER_MODEL_QUICK if args.quick else SOLVER_MODEL
        print(table(f"2. FedQuad vs baselines, {solver_model[0]} (batch {solver_model[1]}, seq {solver_model[2]}), gen:N "
                    "populations (PREDICTED times)",
                    ["N", "config", "solver s", "round s", "R /s", "train", "out", "spread", "depth", "gap"],
                    [[r["devices"], r["config"], r["solver_s"], r["round_time_s"], r["progress_rate"], r["participants"],
                      r["sitting_out"], f"{r['spread']:.0%}", r["mean_depth"],
                      "-" if r["gap_to_exact"] is None else f"{r['gap_to_exact']:.2%}"] for r in rows]))
    if not args.skip_real and args.bed == "instruct":
        args.rounds = args.rounds or (6 if args.quick else 12)
        args.local_steps = args.local_steps or 3
        args.lr = args.lr or BED_LR
        with timed(timing, "bed"):
            bed = result["bed"] = run_bed(args)
        rows = []
        for s in bed["seeds"]:
            for cfg, r in s["runs"].items():
                depths = sorted(f"{c['lora_depth']}/{c['act_quant_blocks']}q" for c in s["clients"][cfg].values())
                rows.append([s["seed"], cfg, " ".join(depths), r["curve"][0]["accuracy"], r["final_accuracy"],
                             r["emulated_clock_s"], r["median_round_time_error"], r["max_memory_error"],
                             r["all_trained_planned_depth"], r["wall_s"]])
        print(table(f"3. {args.model}, instruction bed, {len(BED_CLIENTS)} clients, {args.rounds} rounds (EMULATED clock)",
                    ["seed", "config", "depth/quant", "start", "final", "emulated s", "round err", "mem err",
                     "depth ok", "wall s"], rows))
        for r in bed["score"]["per_seed"]:
            print(f"   target {bed['score']['target']:.3f} seed {r['seed']}: plan {r['plan_time_to_target_s']} s "
                  f"(round {r['plan_rounds_to_target']}), uniform {r['uniform_time_to_target_s']} s "
                  f"(round {r['uniform_rounds_to_target']}): speed-up {r['speedup']} ({r['kind']})")
        for s in bed["seeds"]:
            for cfg, r in s["runs"].items():
                print(f"   seed {s['seed']} {cfg}: " + ", ".join(f"{c['accuracy']:.3f}@{c['emulated_clock_s']:.3g}s"
                                                            for c in r["curve"]))
    if not args.skip_real and args.bed == "digits":
        args.local_steps = args.local_steps or 5
        args.lr = args.lr or 3e-3
        args.target = args.target if args.target is not None else 0.85
        rounds = args.rounds or (6 if args.quick else 15)
        result["real_seeds"] = [bench_real(rounds, args.target, args.local_steps, args.lr, seed)
                                for seed in range(args.seeds)]
    if args.reuse:
        earlier = json.loads(args.reuse.read_text())
        for part in ("bed", "memory_independent"):
            if part not in result and part in earlier:
                result[part] = earlier[part]
    timing["total"] = {"wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(_cpu_s() - cpu0, 1),
                       "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    result["timing"] = timing
    result["summary"] = summary_of(result)
    result["summary"]["timing"] = timing
    print("summary:", json.dumps(result["summary"], sort_keys=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
