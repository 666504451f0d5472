"""`planner`: the command line. Renders output; the library underneath only logs.

Exit codes: 0 success, 1 `diff` found a regression, 2 bad input (one line naming the problem and the
fix), 3 an internal error (a bug: one line, `--debug` shows the traceback), 130 interrupted (Ctrl-C),
143 terminated (SIGTERM; cleans up as Ctrl-C does). Long steps show progress on stderr when it is a
terminal (phase, elapsed time); stdout holds only the tables or JSON, so pipes stay clean.

The spine names no family: every family's flags come from the registry, the scenario is chosen by the
families themselves, and `emit`/`run` dispatch to the family an artifact or plan belongs to. Every
command that writes checks its output path before the work (`core.output_paths`): it replaces only
what the same command wrote before, unless `--force`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

from core.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_REGRESSION, EXIT_TERMINATED, OutputPathError,
                         PlannerError, Terminated)
from planner.flags import Flag, FlagValues, add_flags, merge_flags, read_flags
from planner.tables import table

log = logging.getLogger("planner")
EXIT_INTERNAL = 3
PLAN_FILE = ("schema_version", "family", "model", "decisions")
RECEIPT_FILE = ("family", "config", "totals")
HARDWARE_HEADER = "# written by `planner hardware measure`"


class CliParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage block, and no abbreviated flags (a prefix
    such as `--exp` would silently pick one of `--expert-bits`/`--expert-budget`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise PlannerError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


# ------------------------------------------------------------------ output helpers
def _console(stderr: bool = False, wide: bool = False) -> Any:
    """A rich console: the terminal's width on a TTY, else $COLUMNS or 80 columns; --wide never narrower than
    160 columns off a terminal, so a $COLUMNS of 80 (set by CI runners and pytest-xdist) cannot drop columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        width = int(os.environ.get("COLUMNS", 0) or 80)
        if wide:
            width = max(width, 160)
    return Console(file=stream, highlight=False, soft_wrap=False, width=width, emoji=False,
                   markup=False)   # user text (gen:100:0, paths with [..]) is printed as written


class Status:
    """Progress of a long step on stderr: on a terminal, one live line (spinner, phase text such as
    "phase 3/7: solve", elapsed time); with -v, log lines; piped, nothing. stdout is never touched."""

    def __init__(self, enabled: bool) -> None:
        self._live: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty() and not log.isEnabledFor(logging.INFO):   # -v: log lines instead
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=_console(stderr=True), transient=True, redirect_stdout=False)
            self._task = self._live.add_task("starting", total=None)

    def __enter__(self) -> "Status":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def __call__(self, text: str) -> None:
        log.info("%s", text)
        if self._live is not None:
            self._live.update(self._task, description=text, refresh=True)   # each phase shown, however short


def _output_kinds() -> dict[str, tuple[str, Any]]:
    """Every kind of file a command writes: key -> (what it is, its recogniser). A command replaces only its
    own kind; another command's output is refused even with --force."""
    from core.output_paths import bytes_within, json_with_keys, text_starting_with, zip_with_members
    from planner.calibration import HEADER as CALIBRATION_HEADER
    from planner.inspect_view import FIGURE_MARK

    return {"plan": ("plan written by `planner plan`", json_with_keys(*PLAN_FILE)),
            "trace": ("routing trace written by `planner trace`", zip_with_members("experts.npy", "header.npy")),
            "calibration": ("calibration file written by `planner calibrate`", text_starting_with(CALIBRATION_HEADER)),
            "hardware": ("hardware profile written by `planner hardware measure`", text_starting_with(HARDWARE_HEADER)),
            "receipt": ("receipt written by `planner run`", json_with_keys(*RECEIPT_FILE)),
            "export": ("export written by `planner export`", text_starting_with(EXPORT_HEADER)),
            "figure": ("figure written by `planner inspect --plot`", bytes_within(FIGURE_MARK.encode("ascii")))}


def _output_file(path: str, flag: str, what: str, kind: str, force: bool) -> Any:
    """The checked output file of kind `kind` (a key of `_output_kinds`); raises before any work."""
    from core.output_paths import OutputFile

    kinds = _output_kinds()
    others = {desc: rec for key, (desc, rec) in kinds.items() if key != kind}
    out = OutputFile(Path(path), flag=flag, what=what, is_previous=kinds[kind][1], force=force, others=others)
    out.check()
    return out


# ------------------------------------------------------------------ family flags
def _family_flags(kind: str) -> dict[str, tuple[Flag, tuple[str, ...]]]:
    from planner.registry import families

    return merge_flags((f.name, getattr(f, f"{kind}_flags")) for f in families())


def _owners(kind: str) -> dict[str, tuple[str, ...]]:
    return {name: owners for name, (_, owners) in _family_flags(kind).items()}


def _read_family_flags(args: argparse.Namespace, kind: str) -> FlagValues:
    return read_flags(args, [f for f, _ in _family_flags(kind).values()])


def family_values(kind: str, argv: Sequence[str]) -> FlagValues:
    """Typed values of the family flags of `planner <kind>` given as an argument list (e.g. ["--seed", "1"])."""
    parser = CliParser(prog=f"planner {kind}", add_help=False)
    add_flags(parser, _family_flags(kind), show_owner=False)
    return _read_family_flags(parser.parse_args(list(argv)), kind)


def _check_foreign(given: frozenset[str], family: Any, kind: str) -> None:
    own = {f.name for f in getattr(family, f"{kind}_flags")}
    for name in sorted(given):
        owners = _owners(kind).get(name)
        if owners is not None and name not in own:
            raise PlannerError(f"{name} is a {'/'.join(owners)} flag, but this artifact is {family.name}",
                               f"drop {name}")


# ------------------------------------------------------------------ commands
def cmd_plan(args: argparse.Namespace) -> int:
    from planner.families.base import PlanRequest
    from planner.pipeline import plan
    from planner.serde import dumps

    values = _read_family_flags(args, "plan")
    out = _output_file(args.output, "-o", "plan", "plan", args.force) if args.output else None
    req = PlanRequest(args.model, args.hardware, args.scenario, args.tiny, args.record_timing, values)
    err = _console(stderr=True)
    with Status(not args.quiet) as status:
        ctx = plan(req, on_phase=status, family_flags=_owners("plan"))
    err.print(f"scenario: {ctx.family.name} ({ctx.scenario_reason})")
    if not args.quiet:
        wall = getattr(getattr(ctx.state, "solution", None), "wall_time_s", None)
        err.print((f"solver wall time: {wall:.3f} s; " if wall is not None else "")
                  + f"total {sum(ctx.phase_times_s.values()):.1f} s")
        if args.json:   # the tables carry the notes; printed once, never twice
            for note in ctx.plan.notes:
                err.print(f"note: {note}")
    text = dumps(ctx.plan)
    if out is not None:
        path = out.write_text(text)
        if not args.quiet:
            err.print(f"wrote {path}")
    if args.json:
        sys.stdout.write(text)
    elif not args.quiet:
        from planner.inspect_view import render

        _console(wide=args.wide).print(render(ctx.plan, ctx.family, args.wide))
    return 0


def _load_plan(path: str, validate: bool = True) -> Any:
    """A plan file, checked against its own family's constraints (every command that reads a plan)."""
    from planner.pipeline import require_valid
    from planner.serde import load

    p = load(path)
    return require_valid(p, path) if validate else p


def _plot_output(path: str, force: bool) -> tuple[Any, str]:
    from planner.inspect_view import PLOT_FORMATS

    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise PlannerError(f"--plot {path}: unknown figure format '.{fmt}'",
                           f"end the file name with one of: {', '.join('.' + f for f in PLOT_FORMATS)}")
    return _output_file(path, "--plot", "figure", "figure", force), fmt


def cmd_inspect(args: argparse.Namespace) -> int:
    from planner.registry import family
    from planner.serde import dumps

    plan_obj = _load_plan(args.plan)
    fam = family(plan_obj.family)
    plot = _plot_output(args.plot, args.force) if args.plot else None
    if args.json:
        sys.stdout.write(dumps(plan_obj))
    else:
        from planner.inspect_view import render

        _console(wide=args.wide).print(render(plan_obj, fam, args.wide))
    if plot is not None:
        from planner.inspect_view import save_figure

        fig = fam.plot(plan_obj)
        if fig is None:
            raise PlannerError(f"the {fam.name} family has no plot", "drop --plot")
        out, fmt = plot
        _console(stderr=True).print(f"wrote {out.write_bytes(save_figure(fig, fmt, plan_obj))}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from planner.plan_diff import diff_plans, render_diff
    from planner.pipeline import plan_validator

    v = read_flags(args, DIFF_FLAGS)
    old, new = _load_plan(args.old, validate=False), _load_plan(args.new, validate=False)
    res = diff_plans(old, new, v["tolerance"], plan_validator)
    _console(wide=args.wide).print(render_diff(res, old, new, v["tolerance"], v["max_rows"]))
    return EXIT_REGRESSION if res.regressed else 0


def cmd_profile(args: argparse.Namespace) -> int:
    import resource
    import time

    from planner.registry import resolve_model
    from planner.units import fmt_bytes, fmt_count
    from profilers.graph import profile_model

    v = read_flags(args, PROFILE_FLAGS)
    spec = resolve_model(args.model)
    t0 = time.perf_counter()
    with Status(True) as status:
        status(f"profiling {spec.name}")
        prof = profile_model(spec, tiny=args.tiny, seq_len=v["seq_len"])
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.json:
        from planner.serde import canonical

        d = canonical(prof)
        if not v["nodes"]:
            d.pop("nodes")
        sys.stdout.write(json.dumps(d, sort_keys=True, indent=2) + "\n")
        return 0

    from rich.text import Text

    out = _console(wide=args.wide)
    out.print(Text.assemble((prof.name, "bold"), f" ({prof.source})"))
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
    t = table("per block")
    for col in ("block", "nodes", "matmul FLOPs", "params", "activations"):
        t.add_column(col, justify="left" if col == "block" else "right")
    blocks = prof.blocks if args.all_blocks else prof.blocks[: v["max_blocks"]]
    for b in blocks:
        t.add_row(b.name, str(b.n_nodes), fmt_count(b.flops), fmt_bytes(b.param_bytes), fmt_bytes(b.activation_bytes))
    if len(prof.blocks) > len(blocks):
        t.add_row(f"... {len(prof.blocks) - len(blocks)} more (--all-blocks)", "", "", "", "")
    out.print(t)
    if v["nodes"]:
        nt = table(f"first {v['nodes']} compute nodes")
        for col in ("node", "op", "FLOPs", "params", "out", "shape"):
            nt.add_column(col)
        for n in [n for n in prof.nodes if not n.is_view][: v["nodes"]]:
            nt.add_row(n.name, n.target, fmt_count(n.flops), fmt_bytes(n.param_bytes), fmt_bytes(n.output_bytes),
                       "x".join(map(str, n.output_shape)))
        out.print(nt)
    out.print(f"profiled in {wall:.1f} s, peak memory {fmt_bytes(peak)}")
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:

    from planner.registry import hardware_catalog, resolve_hardware
    from planner.units import fmt_byte_rate, fmt_bytes, fmt_rate

    out = _console(wide=getattr(args, "wide", False))
    if args.hw_cmd == "list":
        t = table("hardware catalog (<base>_<N>gb caps memory; a YAML path works anywhere)")
        cols = ["name"] + (["kind"] if args.wide else []) + ["memory", "mem BW", "TFLOP/s", "host link", "uplink"]
        for col in cols:
            t.add_column(col, justify="left" if col in ("name", "kind") else "right", no_wrap=True)
        for name, hw in sorted(hardware_catalog().items()):
            fp16 = hw.peak_flops_per_s.get("fp16") or hw.peak_flops_per_s.get("fp32")
            t.add_row(name, *([hw.kind] if args.wide else []), fmt_bytes(hw.memory_bytes),
                      fmt_byte_rate(hw.memory_bandwidth_bytes_per_s), f"{fp16 / 1e12:.3g}",
                      fmt_byte_rate(hw.host_to_device_bytes_per_s) if hw.host_to_device_bytes_per_s else "unified",
                      fmt_rate(hw.uplink_bits_per_s) if hw.uplink_bits_per_s else "-")
        out.print(t)
        return 0
    if args.hw_cmd == "show":
        import yaml

        hw = resolve_hardware(args.name)
        sys.stdout.write(yaml.safe_dump(hw.to_dict(), sort_keys=False, width=110))
        return 0
    # measure
    import yaml
    from rich.progress import Progress

    from profilers.hardware import measure_this_machine

    target = _output_file(args.output, "-o", "hardware profile", "hardware", args.force)
    with Progress(console=_console(stderr=True), transient=True) as prog:
        task = prog.add_task("measuring", total=6)

        def tick(label: str, done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, description=label)

        hw, results = measure_this_machine(name=args.name or Path(args.output).stem, progress=tick)
    for r in results:
        out.print(f"{r.name}: {r.value:.4g} {r.unit} ({r.detail})")
    target.write_text(HARDWARE_HEADER + "; usable as --hardware FILE\n" + yaml.safe_dump(hw.to_dict(), sort_keys=False, width=110))
    out.print(f"wrote {args.output}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from planner.registry import resolve_model

    v = read_flags(args, TRACE_FLAGS)
    out = _output_file(args.output, "-o", "routing trace", "trace", args.force)
    spec = resolve_model(args.model)
    if v["preset"]:
        from profilers.graph import profile_model
        from profilers.synthetic_traces import PRESETS, generate_trace

        if v["preset"] not in PRESETS:
            raise PlannerError(f"unknown trace preset '{v['preset']}'", f"use one of: {', '.join(PRESETS)}")
        m = profile_model(spec, tiny=args.tiny, with_graph=False).moe
        if m is None:
            raise PlannerError(f"{spec.name} has no MoE layers, so it has no routing to trace", "pick an MoE model")
        trace = generate_trace(len(m.moe_layers), m.num_experts, m.top_k, v["preset"], model=spec.name,
                               tokens=v["tokens"], seed=v["seed"])
    else:
        if not args.tiny:
            raise PlannerError("recording a trace needs real weights, and only tiny models run here",
                               "pass --tiny (the tiny model's routing is recorded for the full-size model's plan), "
                               "or --preset NAME for a synthetic trace")
        import torch

        from profilers.models import build_model
        from profilers.moe import record_trace
        from profilers.moe_structure import extract_moe_structure

        built = build_model(spec, tiny=True)
        if extract_moe_structure(built) is None:
            raise PlannerError(f"{spec.name} has no MoE layers, so it has no routing to trace", "pick an MoE model")
        vocab = built.module.config.vocab_size
        if v["prompts"]:
            p = Path(v["prompts"])
            if not p.is_file():
                raise PlannerError(f"--prompts {p} does not exist", "pass a text file with one prompt per line")
            try:
                lines = [l for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
            except UnicodeDecodeError as exc:
                raise PlannerError(f"--prompts {p} is not UTF-8 text", "pass a text file with one prompt per line") from exc
            if not lines:
                raise PlannerError(f"--prompts {p} has no prompts", "put one prompt per line")
            # tiny models have no tokenizer: bytes of each prompt, folded into the vocabulary
            prompts = [[b % vocab for b in line.encode("utf-8")][:64] for line in lines]
        else:
            g = torch.Generator().manual_seed(v["seed"])
            prompts = [torch.randint(0, vocab, (16,), generator=g).tolist() for _ in range(4)]
        with Status(True) as status:
            status(f"recording routing of {len(prompts)} prompts x {v['max_new_tokens']} tokens")
            trace = record_trace(built.module, prompts, v["max_new_tokens"], model_name=spec.name,
                                 temperature=v["temperature"], seed=v["seed"])
    path = out.write_bytes(trace.to_bytes())
    _console(stderr=True).print(f"wrote {path}: {trace.num_tokens} steps x {trace.num_layers} MoE layers x "
                                f"top-{trace.top_k} ({trace.source})")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from planner.calibration import calibration_text
    from planner.registry import family, resolve_model

    out = _output_file(args.output, "-o", "calibration file", "calibration", args.force)
    spec = resolve_model(args.model)
    fam = family(args.scenario)
    if not fam.can_calibrate:
        raise PlannerError(f"the {fam.name} family has no calibration", "plan it from the hardware profile")
    if args.clock not in fam.calibration_clocks:
        raise PlannerError(f"--clock {args.clock}: the {fam.name} calibration is taken in wall time only",
                           "leave --clock out")
    if args.rescale is not None and args.clock != "wall":
        raise PlannerError("--clock with --rescale: a rescale re-times on the clock of the file it rescales",
                           "leave --clock out")
    with Status(True) as status:
        if args.rescale is not None:
            from planner.calibration import read_calibration

            status(f"re-timing {spec.name}'s forward on this machine to rescale {args.rescale}")
            old, record = read_calibration(Path(args.rescale), fam.name, spec, args.tiny, flag="--rescale")
            measured = fam.rescale_calibration(spec, args.tiny, old, record["sha256"])
        else:
            status(f"measuring {spec.name} on this machine")
            measured = fam.calibrate(spec, args.tiny, **({"clock": args.clock} if args.clock != "wall" else {}))
    _console(stderr=True).print(f"wrote {out.write_text(calibration_text(fam.name, spec, args.tiny, measured))}")
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from planner.api import emit_artifact

    plan_obj = _load_plan(args.plan)
    passthrough = _family_argv(args, "emit")
    with Status(True) as status:
        path = emit_artifact(plan_obj, Path(args.output), passthrough, args.force, status)
    summary = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("summary", "")
    _console(stderr=True).print(f"wrote {path}/ ({summary})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from core.artifacts import read_manifest
    from planner.api import run_artifact

    manifest = read_manifest(Path(args.artifact))
    if args.tiny and not manifest.get("tiny"):
        raise PlannerError("--tiny: this artifact is for a full-size model", "emit a plan made with `planner plan --tiny`")
    receipt_out = _output_file(args.json, "--json", "receipt", "receipt", args.force) \
        if args.json else None
    with Status(True) as status:
        report = run_artifact(Path(args.artifact), _family_argv(args, "run"), status, args.wide)
    out = _console(wide=args.wide)
    for view in report.views:
        out.print(view)
    if receipt_out is not None:
        _console(stderr=True).print(f"wrote {receipt_out.write_text(report.receipt_json)}")
    return 0


def _family_argv(args: argparse.Namespace, kind: str) -> list[str]:
    """The family flags the user gave, back as argv (for the api functions, which parse them again)."""
    out: list[str] = []
    for name, (f, _) in _family_flags(kind).items():
        raw = getattr(args, f.dest, None)
        if raw is None:
            continue
        out += [name] if f.kind == "switch" else [name, str(raw)]
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from planner.registry import family

    plan_obj = _load_plan(args.plan)
    fam = family(plan_obj.family)
    if args.to not in fam.export_targets:
        raise PlannerError(f"{fam.name} plans cannot be exported to '{args.to}'",
                           f"use --to {' or '.join(fam.export_targets)}" if fam.export_targets
                           else "this family has no export target")
    out = _output_file(args.output, "-o", f"{args.to} export", "export", args.force) \
        if args.output else None
    text, _ = fam.export(plan_obj, args.to)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if out is not None:
        _console(stderr=True).print(f"wrote {out.write_text(EXPORT_HEADER + f' ({args.to})' + chr(10) + text)}")
    return 0


EXPORT_HEADER = "# written by `planner export`"


# ------------------------------------------------------------------ parser
DIFF_FLAGS = (Flag("--tolerance", "percent", "allowed relative worsening of the objective (e.g. 1%)", default=0.01,
                   minimum=0.0),
              Flag("--max-rows", "int", "changed values listed at most", default=40, minimum=1))
PROFILE_FLAGS = (Flag("--seq-len", "int", "tokens in the example input", minimum=1, maximum=1 << 20),
                 Flag("--nodes", "int", "also list the first N compute nodes", default=0, minimum=0),
                 Flag("--max-blocks", "int", "blocks listed at most", default=12, minimum=1))
TRACE_FLAGS = (Flag("--prompts", "path", "text file, one prompt per line"),
               Flag("--max-new-tokens", "int", "decode steps recorded per prompt", default=64, minimum=1),
               Flag("--temperature", "float", "0: greedy; above 0: seeded sampling", default=0.0, minimum=0.0),
               Flag("--preset", "str", "synthesise from a preset instead of recording"),
               Flag("--tokens", "int", "synthetic trace length (decode steps)", default=2048, minimum=16),
               Flag("--seed", "int", "seed", default=0, minimum=0))


def _common(p: argparse.ArgumentParser, force: bool = False, wide: bool = True) -> None:
    if force:
        p.add_argument("--force", action="store_true", help="replace an output that this command did not write")
    if wide:
        p.add_argument("--wide", action="store_true", help="every column (default: fit the terminal)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests)."""
    p = CliParser(prog="planner", description="Plan deployment configurations for ML models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=CliParser)

    pl = sub.add_parser("plan", help="compute a plan")
    pl.add_argument("model", help="catalog name, a transformers config file or its directory, or package.module:factory")
    pl.add_argument("--hardware", help="device: catalog name, <base>_<N>gb, or YAML path")
    pl.add_argument("--scenario", help="force a family: " + ", ".join(f.name for f in _families()))
    pl.add_argument("-o", "--output", help="write the plan JSON here")
    pl.add_argument("--json", action="store_true", help="print the plan JSON instead of tables")
    pl.add_argument("-q", "--quiet", action="store_true",
                    help="print nothing but the scenario line (no progress, notes, tables or 'wrote')")
    pl.add_argument("--tiny", action="store_true",
                    help="plan the small same-architecture model (real weights; what `planner run` executes here)")
    pl.add_argument("--record-timing", action="store_true",
                    help="store the solver wall time in the plan (makes plan bytes differ between runs)")
    _common(pl, force=True)
    add_flags(pl.add_argument_group("family flags (the family in brackets)"), _family_flags("plan"))
    pl.set_defaults(fn=cmd_plan)

    ins = sub.add_parser("inspect", help="show a plan")
    ins.add_argument("plan")
    ins.add_argument("--json", action="store_true", help="print the plan JSON as stored")
    ins.add_argument("--plot", help="also write a figure of the plan (.png, .pdf or .svg)")
    _common(ins, force=True)
    ins.set_defaults(fn=cmd_inspect)

    df = sub.add_parser("diff", help="compare two plans; exit 1 on a regression")
    df.add_argument("old")
    df.add_argument("new")
    add_flags(df, {f.name: (f, ()) for f in DIFF_FLAGS}, show_owner=False)
    _common(df)
    df.set_defaults(fn=cmd_diff)

    pr = sub.add_parser("profile", help="profile a model graph (meta device, no weights)")
    pr.add_argument("model")
    pr.add_argument("--tiny", action="store_true", help="the small same-architecture model with real weights")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--all-blocks", action="store_true")
    add_flags(pr, {f.name: (f, ()) for f in PROFILE_FLAGS}, show_owner=False)
    _common(pr)
    pr.set_defaults(fn=cmd_profile)

    hw = sub.add_parser("hardware", help="hardware catalog and micro-benchmarks")
    hws = hw.add_subparsers(dest="hw_cmd", required=True, parser_class=CliParser)
    _common(hws.add_parser("list", help="the catalog"))
    sh = hws.add_parser("show", help="one profile as YAML")
    sh.add_argument("name")
    me = hws.add_parser("measure", help="micro-benchmarks on this machine -> a profile YAML")
    me.add_argument("-o", "--output", required=True, help="profile YAML to write")
    me.add_argument("--name", help="profile name (default: file stem)")
    _common(me, force=True, wide=False)
    hw.set_defaults(fn=cmd_hardware)

    tr = sub.add_parser("trace", help="record (tiny model) or synthesise a routing trace")
    tr.add_argument("model")
    tr.add_argument("-o", "--output", required=True)
    tr.add_argument("--tiny", action="store_true", help="record from the tiny same-architecture model")
    add_flags(tr, {f.name: (f, ()) for f in TRACE_FLAGS}, show_owner=False)
    _common(tr, force=True, wide=False)
    tr.set_defaults(fn=cmd_trace)

    ca = sub.add_parser("calibrate", help="measure the model on this machine once; plan from the file with --calibration")
    ca.add_argument("model")
    ca.add_argument("--scenario", required=True, help="the family the calibration is for: "
                    + ", ".join(f.name for f in _families() if f.can_calibrate))
    ca.add_argument("--tiny", action="store_true", help="the small same-architecture model")
    ca.add_argument("-o", "--output", required=True, help="calibration YAML to write")
    ca.add_argument("--rescale", metavar="FILE", help="re-time only the whole forward now and write FILE's figures "
                    "rescaled to this host's current speed (seconds, not minutes; split-inference)")
    ca.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time the model in wall time (default) or in this thread's CPU time: a core of its own, host "
                         "contention not counted as a slower device (split-inference)")
    _common(ca, force=True, wide=False)
    ca.set_defaults(fn=cmd_calibrate)

    em = sub.add_parser("emit", help="codegen: rewritten model + runtime config, as an artifact directory")
    em.add_argument("plan")
    em.add_argument("-o", "--output", required=True, help="artifact directory")
    _common(em, force=True, wide=False)
    add_flags(em.add_argument_group("family flags"), _family_flags("emit"))
    em.set_defaults(fn=cmd_emit)

    ex = sub.add_parser("export", help="the plan as another tool's configuration (e.g. llama.cpp flags)")
    ex.add_argument("plan")
    ex.add_argument("--to", required=True, help="target: " + ", ".join(sorted({t for f in _families() for t in f.export_targets})))
    ex.add_argument("-o", "--output", help="also write it to this file")
    _common(ex, force=True, wide=False)
    ex.set_defaults(fn=cmd_export)

    rn = sub.add_parser("run", help="execute an artifact and print the receipt")
    rn.add_argument("artifact")
    rn.add_argument("--tiny", action="store_true", help="(the artifact must hold a tiny model; checked)")
    rn.add_argument("--json", help="also write the receipt JSON here")
    _common(rn, force=True)
    add_flags(rn.add_argument_group("family flags"), _family_flags("run"))
    rn.set_defaults(fn=cmd_run)
    return p


def _families() -> Iterator[Any]:
    from planner.registry import families

    return iter(families())


# ------------------------------------------------------------------ boundary
def _translate(exc: BaseException) -> tuple[str, int]:
    """One line for an exception that escaped a command, and its exit code."""
    import errno

    if isinstance(exc, PlannerError):
        return exc.one_line(), EXIT_BAD_INPUT
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        fix = {errno.ENOSPC: "free disk space", errno.EACCES: "check the permissions",
               errno.EROFS: "write to a writable file system", errno.ENAMETOOLONG: "use a shorter path"}.get(
            exc.errno or 0, "check the path and try again")
        text = OutputPathError(f"cannot access{where}: {exc.strerror or exc}", fix).one_line()
        return text, EXIT_BAD_INPUT
    if isinstance(exc, MemoryError):
        return "error: out of memory. Use a smaller model or input, or --tiny.", EXIT_BAD_INPUT
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return (f"error: internal error ({exc.__class__.__name__}: {first}). This is a bug: rerun with --debug and "
            "report the traceback."), EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `planner` console script."""
    debug = "--debug" in (sys.argv[1:] if argv is None else list(argv))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # transformers' own "Loading weights" bars would mix into stderr beside our live line (or into a CI log)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    previous = _on_sigterm()
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        # libraries' warnings (peft, torch, ray) go to the log: shown with --verbose, not mixed into our output
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.WARNING if args.verbose or debug else logging.ERROR)
        return int(args.fn(args))
    except Terminated:
        sys.stderr.write("error: terminated (SIGTERM); nothing was written.\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was written.\n")
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except BaseException as exc:  # the boundary: every error becomes one line (traceback with --debug)
        if debug:
            raise
        text, code = _translate(exc)
        sys.stderr.write((text if text.startswith("error:") else f"error: {text}") + "\n")
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _on_sigterm() -> Any:
    """Make SIGTERM unwind like Ctrl-C (cleanups run); returns the previous handler (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
