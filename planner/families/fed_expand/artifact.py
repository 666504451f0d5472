"""fed-expand emit and run entry points.

Artifact layout:
    plan.json       the plan
    runtime.yaml    model (name, tiny config and seed; real weights come from the test bed's cache), the expansion
                    (added_after, added_layers, the identity check's max |Δ|), training settings and data split,
                    one Flower config map per configuration (the plan, fixed_expansion, static_allocation,
                    lora_fedavg, full_ft) with each client's predictions, node configs and budgets
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.errors import ArtifactError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues
from planner.schema import Plan

ARTIFACT_FORMAT = 1
METHODS = {"plan": "blocks", "fixed_expansion": "blocks", "static_allocation": "blocks", "lora_fedavg": "lora",
           "full_ft": "full"}


def runtime_config(plan: Plan, lr: float, seed: int, model_info: dict[str, Any], gap: float) -> dict[str, Any]:
    """The runtime.yaml mapping."""
    from codegen.fed_expand import client_layers

    d = plan.decisions
    devices = plan.inputs["population"]["devices"]
    ids = sorted(devices)
    overhead = float(plan.inputs.get("round_overhead_s", 0.0))
    configs: dict[str, Any] = {}
    sources = {"plan": (d["clients"], plan.predicted["clients"])}
    for name, b in plan.baselines.items():
        sources[name] = (b.decisions.get("clients", {cid: {"layers": []} for cid in ids}), b.predicted["clients"])
    for name, (dec, pred) in sorted(sources.items()):
        layers = client_layers(dec)
        configs[name] = {"method": METHODS[name], "clients": {
            cid: {"layers": layers.get(cid, []), "predicted_round_s": float(pred[cid]["round_time_s"]),
                  "predicted_memory_bytes": int(pred[cid]["memory_bytes"])} for cid in ids}}
    return {
        "format": ARTIFACT_FORMAT, "family": "fed-expand",
        "model": {"name": plan.model.name, "fingerprint": plan.model.fingerprint, "tiny": plan.model.tiny, "seed": seed,
                  **model_info},
        "expansion": {"num_base_blocks": d["num_base_blocks"], "added_after": list(d["added_after"]),
                      "added_layers": list(d["added_layers"]), "identity_max_abs_diff": gap},
        "training": {"rounds": int(plan.inputs["rounds"]), "lr": {"blocks": lr, "lora": lr, "full": lr / 10},
                     "batch_size": int(plan.inputs["batch_size"]), "seq_len": int(plan.inputs["seq_len"]),
                     "local_steps": int(plan.inputs["local_steps"]), "clients": len(ids),
                     "data": dict(plan.inputs["data"])},
        "deadline_s": plan.constraints.get("deadline_s"),
        "nodes": {cid: {"data-partition": i, "compute-slowdown": float(devices[cid]["compute_slowdown"]),
                        "uplink-bytes-per-s": float(devices[cid]["uplink_bits_per_s"]) / 8,
                        "downlink-bytes-per-s": float(devices[cid]["downlink_bits_per_s"]) / 8, "latency-s": overhead}
                  for i, cid in enumerate(ids)},
        "nodes_budget": {cid: {"memory_budget_bytes": int(plan.predicted["clients"][cid]["memory_budget_bytes"])}
                         for cid in ids},
        "emulation": {"note": "device time = this CPU's CPU seconds x compute-slowdown (FLOP/s ratio); EMULATED"},
        "configs": configs,
    }


def emit(plan: Plan, values: FlagValues, staging: Path, progress: Progress) -> str:
    """Build and expand the model, check the expansion is the identity, write runtime.yaml and plan.json."""
    import torch

    from codegen.fed_expand import IDENTITY_TOLERANCE, expand_for_plan, identity_gap
    from planner.families.fed_expand.phases import check_decoder
    from planner.registry import plan_model
    from planner.serde import dumps
    from profilers.models import build_model, transformers_config

    spec = plan_model(plan)
    seed = int(values["seed"])
    progress("building the model and its expansion")
    torch.manual_seed(seed)
    base = build_model(spec, tiny=plan.model.tiny, device="cpu").module.float().eval()
    check_decoder(base, spec.name)
    big = expand_for_plan(base, plan.decisions)
    vocab = int(base.config.vocab_size)
    gap = identity_gap(base, big, vocab)
    if gap > IDENTITY_TOLERANCE:
        raise ArtifactError(f"the expanded model differs from the base by {gap:.3g} (max |Δ| of the logits)",
                            "report this: the inserted blocks must start as the identity")
    info: dict[str, Any] = {"vocab_size": vocab, "pad_token_id": int(base.config.pad_token_id or 2)}
    if plan.model.tiny:
        info["tiny_config"] = transformers_config(spec, True).to_diff_dict()
        info["tiny_config"].pop("transformers_version", None)
        info["tiny_config"].pop("model_type", None)
    cfg = runtime_config(plan, float(values["lr"]), seed, info, gap)
    (staging / "runtime.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, width=120), encoding="utf-8")
    (staging / "plan.json").write_text(dumps(plan), encoding="utf-8")
    return (f"runtime.yaml: {plan.decisions['added_blocks']} added blocks at layers {plan.decisions['added_layers']} "
            f"(identity check max |Δ| = {gap:.1g}), config maps for {', '.join(sorted(cfg['configs']))}")


def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """Run the plan (or --baseline) on Flower and show the receipt."""
    from runtime.fed_expand.run import run_expand

    mode = "deploy" if values["deploy"] else "simulation"
    config = values["baseline"] or "plan"
    if config not in METHODS:
        raise ArtifactError(f"unknown configuration '{config}'", f"use one of: {', '.join(sorted(METHODS))}")
    progress(f"federated block expansion ({config}, Flower {mode})")

    def on_round(rec: dict[str, Any]) -> None:
        progress(f"round {rec['round']}: exact match {rec['exact_match']:.3f}, answer tokens {rec['token_accuracy']:.3f}")

    receipt = run_expand(artifact, config=config, mode=mode, rounds=values["rounds"], lr=values["lr_override"],
                         on_round=on_round)
    return RunReport(json.dumps(receipt, indent=2, sort_keys=True, default=float) + "\n", receipt_views(receipt))


def receipt_views(receipt: dict[str, Any]) -> list[Any]:
    """Budget check, per client predicted vs measured, the accuracy curve and the probe."""
    from rich.text import Text

    from planner.tables import table

    bc = receipt["budget_check"]
    out: list[Any] = [Text.from_markup(f"[bold]receipt[/bold]: fed-expand, {receipt['config']}, {receipt['mode']}"),
                      Text(receipt["emulation"], style="dim"),
                      Text(f"budget check: {bc['client_rounds']} client-rounds, "
                           + ("all within memory and deadline" if bc["all_within"] else f"{len(bc['violations'])} violations: "
                              + "; ".join(bc["violations"][:5])), style=None if bc["all_within"] else "red")]
    t = table("per client: layers trained, memory MiB predicted/measured/budget, round s predicted/emulated")
    for c in ("client", "layers", "mem P", "mem M", "budget", "T P", "T E", "ok"):
        t.add_column(c, justify="left" if c in ("client", "layers") else "right", no_wrap=True)
    for cid, e in receipt["devices"].items():
        def mib(x: Any) -> str:
            return "-" if x is None else f"{x / 2**20:.1f}"
        t.add_row(cid, ",".join(map(str, e["planned_layers"])) or "all", mib(e["predicted_memory_bytes"]),
                  mib(e["measured_memory_bytes"]), mib(e["memory_budget_bytes"]), f"{e['predicted_round_s']:.3g}",
                  f"{e['emulated_round_s']:.3g}", "yes" if e["all_within_budgets"] else "NO")
    out.append(t)
    curve = receipt["rounds"]
    out.append(Text("held-out exact match by round: " + ", ".join(f"r{r['round']} {r['exact_match']:.3f}" for r in curve)))
    i, f = receipt["initial"], receipt["final"]
    if i.get("probe_accuracy") is not None and f.get("probe_accuracy") is not None:
        out.append(Text(f"probe (held-out text next-token accuracy): {i['probe_accuracy']:.4f} before, "
                        f"{f['probe_accuracy']:.4f} after; loss {i['probe_loss_nats']:.3f} -> {f['probe_loss_nats']:.3f} nats"))
    out.append(Text(f"bytes moved {receipt['bytes_moved'] / 2**20:.1f} MiB; emulated clock {receipt['emulated_clock_s']:.4g} s; "
                    f"wall {receipt['wall_s']:.1f} s"))
    return out
