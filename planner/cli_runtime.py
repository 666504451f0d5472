"""`planner emit` and `planner run`: codegen and execution from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.errors import PlannerError


def cmd_emit(args: argparse.Namespace) -> int:
    from codegen.emit import emit_moe_offload
    from planner.serde import load

    plan = load(args.plan)
    out = emit_moe_offload(plan, args.output, seed=args.seed)
    sys.stderr.write(f"wrote {out}/ (runtime.yaml, weights_layout.yaml, graph/, model/, plan.json, manifest.json)\n")
    if not plan.model.tiny:
        sys.stderr.write("note: a full-size plan carries no weights; `planner run` needs a plan made with --tiny\n")
    return 0


def _prompt_ids(text: str, vocab: int) -> list[int]:
    """Tiny models have no tokenizer: UTF-8 bytes folded into the vocabulary (as `planner trace` does)."""
    ids = [b % vocab for b in text.encode("utf-8")]
    if not ids:
        raise PlannerError("--prompt is empty", "pass some text, e.g. --prompt 'hello world'")
    return ids


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.errors import ArtifactError
    from runtime.moe_offload.run import generate, load

    if args.max_new_tokens < 1:
        raise PlannerError("--max-new-tokens must be at least 1", "pass e.g. --max-new-tokens 32")
    try:
        loaded = load(Path(args.artifact), config=args.baseline or "plan", policy=args.policy,
                      device="cpu" if args.cpu else None)
    except ArtifactError as exc:
        raise PlannerError(exc.problem, exc.fix) from exc
    if not loaded.runtime["model"].get("tiny") and args.tiny:
        raise PlannerError("this artifact is not for a tiny model", "emit a plan made with `planner plan --tiny`")
    receipt = generate(loaded, _prompt_ids(args.prompt, int(loaded.model.config.vocab_size)), args.max_new_tokens,
                       temperature=args.temperature, seed=args.seed)
    if args.json:
        from core.atomic_io import write_text_atomic

        write_text_atomic(args.json, receipt.to_json())
    out = Console(highlight=False, width=200 if not sys.stdout.isatty() else None)
    t = receipt.totals
    out.print(f"[bold]receipt[/bold]: {receipt.family}, config {receipt.config}, {t['tokens']} decode tokens on {t['device']}")
    out.print(f"link: {receipt.link}")
    tab = Table(title="per layer: applied and measured vs planned", title_justify="left")
    cols = ("layer", "f_top", "slots", "prefetch", "hits", "misses", "hit meas", "hit pred", "hit sim", "recall",
            "mispred/tok", "KiB h2d/tok", "stall ms/tok")
    for c in cols:
        tab.add_column(c, justify="left" if c == "layer" else "right")
    for r in receipt.rows:
        tab.add_row(r["layer"], str(r["f_top_applied"]), str(r["capacity_applied"]), "yes" if r["prefetch"] else "no",
                    str(r["hits"]), str(r["misses"]), f"{r['hit_rate_measured']:.1%}",
                    f"{r['hit_rate_predicted']:.1%}" if "hit_rate_predicted" in r else "-",
                    f"{r['hit_rate_simulated']:.1%}" if "hit_rate_simulated" in r else "-",
                    f"{r['recall_measured']:.2f}", f"{r['mispredicted_per_token']:.2f}",
                    f"{r['bytes_h2d_per_token'] / 1024:.1f}", f"{r['stall_ms_per_token']:.2f}")
    out.print(tab)

    def fmt(x: Any, pct: bool = False) -> str:
        return "-" if x is None else (f"{x:.1%}" if pct else f"{x:.2f}")

    out.print(f"TPOT ms: measured {fmt(t['tpot_ms_measured'])} | predicted {fmt(t['tpot_ms_predicted'])} | "
              f"simulated {fmt(t['tpot_ms_simulated'])}")
    out.print(f"hit rate: measured {fmt(t['hit_rate_measured'], True)} | predicted {fmt(t['hit_rate_predicted'], True)} | "
              f"simulated {fmt(t['hit_rate_simulated'], True)}; link bytes/token {t['bytes_h2d_per_token'] / 1024:.1f} KiB")
    for f in receipt.flags:
        out.print(f"[yellow]flag[/yellow]: {f} (differs by more than 20 %)")
    out.print(f"output token ids: {receipt.tokens[:24]}{' ...' if len(receipt.tokens) > 24 else ''}")
    return 0


def add_commands(sub: Any) -> None:
    """Register `emit` and `run` on the main parser."""
    em = sub.add_parser("emit", help="codegen: rewritten graph + runtime config + weights")
    em.add_argument("plan")
    em.add_argument("-o", "--output", required=True, help="artifact directory")
    em.add_argument("--seed", type=int, default=0, help="seed of the tiny model's weights")
    em.set_defaults(fn=cmd_emit)
    rn = sub.add_parser("run", help="execute an artifact and print the receipt")
    rn.add_argument("artifact")
    rn.add_argument("--tiny", action="store_true", help="(the artifact must hold a tiny model; checked)")
    rn.add_argument("--prompt", default="The quick brown fox jumps over the lazy dog.")
    rn.add_argument("--max-new-tokens", type=int, default=32)
    rn.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: seeded sampling")
    rn.add_argument("--seed", type=int, default=0)
    rn.add_argument("--policy", choices=("lcp", "lru", "lfu"), help="override the eviction policy")
    rn.add_argument("--baseline", help="run a baseline's settings from the plan (e.g. mixtral_offloading)")
    rn.add_argument("--cpu", action="store_true", help="emulated link on the CPU even if CUDA is present")
    rn.add_argument("--json", help="also write the receipt JSON here")
    rn.set_defaults(fn=cmd_run)
