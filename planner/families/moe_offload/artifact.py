"""moe-offload emit and run entry points: build the model, hand it to codegen, run the artifact, show the receipt."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ArtifactError, InputMismatchError, PlannerError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan
from planner.tables import table


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Build the plan's model (tiny: real weights from the seed; full size: meta, no weights) and write the artifact."""
    import torch

    from codegen.moe_offload import write_artifact
    from planner.registry import plan_model
    from profilers.models import build_model

    spec = plan_model(plan, _plan_spec(plan))
    progress("building the model")
    seed = int(values["seed"])
    torch.manual_seed(seed)
    built = build_model(spec, tiny=plan.model.tiny, seed=seed)
    progress("rewriting MoE blocks")
    try:
        write_artifact(built.module, plan, staging)
    except ValueError as exc:
        raise InputMismatchError(f"{exc} ({plan.model.name}{' (tiny)' if plan.model.tiny else ''})",
                                 "emit the plan for the model it was made for") from exc
    note = "" if plan.model.tiny else "; a full-size plan carries no weights: `planner run` it with --weights DIR (the model's directory)"
    return "runtime.yaml, weights_layout.yaml, graph/, model/, plan.json" + note


def _plan_spec(plan: Plan) -> Any:
    """The plan's model spec: its catalog name, or (a model planned from a directory or config file, whose name is
    the directory's) the config path the plan records as its source."""
    from planner.registry import resolve_model

    try:
        spec = resolve_model(plan.model.name)
        if spec.fingerprint(plan.model.tiny) == plan.model.fingerprint:
            return spec
    except PlannerError:
        spec = None
    src = Path(plan.model.source) if plan.model.source else None
    if src is not None and src.is_file() and src.suffix == ".json":
        return resolve_model(str(src))
    if spec is None:
        raise PlannerError(f"the plan's model {plan.model.name} is neither in the catalog nor at {plan.model.source}",
                           "emit on the machine where the model's config file is, or re-plan")
    return spec


def _prompt_ids(text: str, vocab: int) -> list[int]:
    """Tiny models have no tokenizer: UTF-8 bytes folded into the vocabulary (as `planner trace` does)."""
    ids = [b % vocab for b in text.encode("utf-8")]
    if not ids:
        raise PlannerError("--prompt is empty", "pass some text, e.g. --prompt 'hello world'")
    return ids


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Load the artifact into the offloading engine, decode, and return the receipt with its tables."""
    from runtime.moe_offload.run import generate, load

    weights = values.get("weights")
    progress("checking the checkpoint" if weights else "loading the artifact")
    loaded = load(artifact, config=values["baseline"] or "plan", policy=values["policy"],
                  device="cpu" if values["cpu"] else None, weights=Path(weights) if weights else None)
    if not loaded.runtime["model"].get("tiny") and not weights:
        raise ArtifactError("this artifact is for a full-size model and carries no weights",
                            "pass --weights DIR (the model's Hugging Face directory), or emit a plan made with --tiny")
    total = int(values["max_new_tokens"])
    receipt = generate(loaded, _prompt_ids(values["prompt"], int(loaded.model.config.vocab_size)), total,
                       temperature=float(values["temperature"]), seed=int(values["seed"]),
                       progress=lambda done, n: progress(f"decoding {done}/{n}"))
    others = remember_measured(artifact, receipt, values)
    views = receipt_views(receipt, values.get("wide", False))
    views.extend(ranking_lines(receipt, others, loaded.runtime))
    return RunReport(receipt.to_json(), views)


def remember_measured(artifact: Path, receipt: Any, values: FlagValues) -> dict[str, Any]:
    """Record this run's measured TPOT for its configuration (on-disk cache, keyed by the artifact's runtime.yaml)
    and return the other configurations' figures measured the same way (same sampling, tokens and device)."""
    import hashlib
    import json

    from core.atomic_io import write_bytes_atomic
    from core.cache import cache_dir

    try:
        digest = hashlib.sha256((artifact / "runtime.yaml").read_bytes()).hexdigest()[:20]
    except OSError:
        return {}
    path = cache_dir() / "moe_receipts" / f"{digest}.json"
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        known = {}
    t = receipt.totals
    how = {"temperature": float(values["temperature"]), "seed": int(values["seed"]), "tokens": int(t["tokens"]),
           "device": str(t["device"]), "prompt": str(values["prompt"])}
    known[receipt.config] = {"tpot_ms_measured": float(t["tpot_ms_measured"]), **how}
    write_bytes_atomic(path, json.dumps(known, sort_keys=True).encode())
    return {k: v for k, v in known.items() if k != receipt.config and all(v.get(f) == how[f] for f in how)}


def ranking_lines(receipt: Any, others: dict[str, Any], runtime: dict[str, Any]) -> list[Any]:
    """The plan's measured TPOT against each baseline's measured TPOT (when one was run the same way), and whether
    the measured ranking agrees with the predicted one."""
    from rich.text import Text

    mine = float(receipt.totals["tpot_ms_measured"])
    pred = {"plan": (runtime.get("predicted") or {}).get("tpot_ms"),
            **{n: b.get("predicted_tpot_ms") for n, b in (runtime.get("baselines") or {}).items()}}
    out = []
    for name, rec in sorted(others.items()):
        theirs = float(rec["tpot_ms_measured"])
        line = (f"measured here: {receipt.config} {mine:.2f} ms/token vs {name} {theirs:.2f} ms/token "
                f"(temperature {rec['temperature']:g}, {rec['tokens']} tokens, {rec['device']})")
        p_me, p_them = pred.get(receipt.config), pred.get(name)
        if p_me and p_them and (p_me < p_them) != (mine < theirs):
            line += (f"; the ranking is the reverse of the prediction ({receipt.config} {p_me:.2f} vs {name} "
                     f"{p_them:.2f} ms predicted)")
        out.append(Text(line, style="yellow" if "reverse" in line else ""))
    return out


def receipt_views(receipt: Any, wide: bool = False) -> list[Any]:
    """The receipt as tables: per layer (applied and measured vs planned) and totals (measured | predicted | simulated)."""
    from rich.text import Text

    from planner.families.moe_offload.views import short_layer

    t = receipt.totals
    out: list[Any] = [Text.from_markup(f"[bold]receipt[/bold]: {receipt.family}, config {receipt.config}, "
                                       f"{t['tokens']} decode tokens on {t['device']}"),
                      Text(f"link: {receipt.link}"),
                      Text(f"MoE blocks running the emitted fx code: {t.get('blocks_running_emitted_code', 0)} "
                           f"of {len(receipt.rows)}")]
    tab = table("per layer: applied and measured vs planned")
    cols = ["layer", "f_top", "slots", "pf", "hit", "hit pred"]
    if wide:
        cols += ["hit sim", "hits", "misses", "recall", "mispred/tok"]
    cols += ["KiB/tok", "stall ms"]
    for c in cols:
        tab.add_column(c, justify="left" if c == "layer" else "right")
    for r in receipt.rows:
        row = [short_layer(r["layer"]), str(r["f_top_applied"]), str(r["capacity_applied"]),
               "yes" if r["prefetch"] else "no", f"{r['hit_rate_measured']:.1%}",
               f"{r['hit_rate_predicted']:.1%}" if "hit_rate_predicted" in r else "-"]
        if wide:
            row += [f"{r['hit_rate_simulated']:.1%}" if "hit_rate_simulated" in r else "-", str(r["hits"]),
                    str(r["misses"]), f"{r['recall_measured']:.2f}", f"{r['mispredicted_per_token']:.2f}"]
        row += [f"{r['bytes_h2d_per_token'] / 1024:.1f}", f"{r['stall_ms_per_token']:.2f}"]
        tab.add_row(*row)
    out.append(tab)

    def fmt(x: Any, pct: bool = False) -> str:
        return "-" if x is None else (f"{x:.1%}" if pct else f"{x:.2f}")

    out.append(Text(f"TPOT ms: measured {fmt(t['tpot_ms_measured'])} | predicted {fmt(t['tpot_ms_predicted'])} | "
                    f"simulated {fmt(t['tpot_ms_simulated'])}"))
    if t.get("ttft_ms_measured") is not None:
        out.append(Text(f"TTFT ms ({t.get('prompt_tokens')} prompt tokens; planned for {t.get('prompt_tokens_planned')}): "
                        f"measured {fmt(t['ttft_ms_measured'])} | predicted {fmt(t.get('ttft_ms_predicted'))} | "
                        f"simulated {fmt(t.get('ttft_ms_simulated'))}"))
    out.append(Text(f"hit rate: measured {fmt(t['hit_rate_measured'], True)} | predicted "
                    f"{fmt(t['hit_rate_predicted'], True)} | simulated {fmt(t['hit_rate_simulated'], True)}; "
                    f"link {t['bytes_h2d_per_token'] / 1024:.1f} KiB/token"))
    for f in receipt.flags:
        out.append(Text.from_markup(f"[yellow]flag[/yellow]: {f} (differs by more than 20 %)"))
    out.append(Text(f"output token ids: {receipt.tokens[:24]}{' ...' if len(receipt.tokens) > 24 else ''}"))
    return out
