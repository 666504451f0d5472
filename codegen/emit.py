"""Artifact directory writer for `planner emit`: everything `planner run` needs, written atomically.

Layout of an artifact directory (moe-offload):
    plan.json                 the plan, as planned
    runtime.yaml              what the runtime applies: per-layer f_top, cache capacity, prefetch, initial
                              residents; eviction policy and its parameters; predictor tap; link; device
                              memory; every baseline's per-layer settings (for `planner run --baseline`)
    weights_layout.yaml       which expert segments start on the device and which stay in host memory
    model/config.json         the architecture (transformers config)
    model/weights.safetensors the weights (tiny models only; full-size plans carry no weights)
    graph/<layer>.py          the rewritten MoE block as torch.fx code (expert-cache calls are explicit nodes)
    manifest.json             sha256 of every file, model name and fingerprint, plan objective
The directory is built under a temporary name and renamed into place, so a reader never sees half of it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputMismatchError, PlannerError
from planner.schema import Plan
from planner.serde import dumps
from runtime.checksums import sha256_file

ARTIFACT_FORMAT = 1


def _layer_settings(decisions: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"layer": l["layer"], "moe_index": l["moe_index"], "split_ratio": l["split_ratio"], "f_top": l["f_top"],
             "capacity": l["cached_experts"], "prefetch": l["prefetch"], "misses_on": l.get("misses_on", "link"),
             "initial_resident": l["initial_resident"], "predicted": l["predicted"], "simulated": l["simulated"]}
            for l in decisions["layers"]]


def _baseline_settings(plan: Plan) -> dict[str, Any]:
    f = int(plan.decisions["intermediate_size"])
    out = {}
    for name, b in plan.baselines.items():
        d = b.decisions
        cpu = d.get("misses_on_host_cpu") or [False] * len(d["split_ratio"])
        out[name] = {"eviction": d.get("eviction", "lcp") if d.get("eviction") in ("lcp", "lru", "lfu") else "lcp",
                     "layers": [{"f_top": int(round(th * f)) if c else (f if cm else 0), "capacity": c, "prefetch": p,
                                 "cpu_misses": cm, "initial_resident": list(range(c)) if cm else []}
                                for th, c, p, cm in zip(d["split_ratio"], d["cached_experts"], d["prefetch"], cpu)],
                     "predicted_tpot_ms": b.predicted.get("tpot_ms"), "simulated_tpot_ms": b.simulated.get("tpot_ms"),
                     "predicted_hit_rate": b.predicted.get("hit_rate"), "simulated_hit_rate": b.simulated.get("hit_rate"),
                     "description": b.description, "params": dict(b.params)}
    return out


def runtime_config(plan: Plan, has_weights: bool) -> dict[str, Any]:
    """The runtime.yaml mapping for a moe-offload plan."""
    d = plan.decisions
    mem = d["memory"]
    return {
        "format": ARTIFACT_FORMAT,
        "family": plan.family,
        "model": {"name": plan.model.name, "fingerprint": plan.model.fingerprint, "tiny": plan.model.tiny,
                  "config": "model/config.json", "weights": "model/weights.safetensors" if has_weights else None},
        "device": {"name": plan.hardware.name, "memory_bytes": mem["device_memory_bytes"],
                   "non_expert_bytes": mem["non_expert_bytes"], "expert_cache_budget_bytes": mem["expert_cache_budget_bytes"]},
        "link": {"bandwidth_bytes_per_s": d["link"]["bandwidth_bytes_per_s"], "fifo": True},
        "eviction": dict(d["eviction"]),
        "predictor": {"tap": d["predictor_tap"], "k_prefetch": d["k_prefetch"]},
        "experts": {"num_experts": d["num_experts"], "top_k": d["top_k"], "intermediate_size": d["intermediate_size"],
                    "expert_bytes": d["expert_bytes"]},
        "layers": _layer_settings(d),
        "predicted": {k: v for k, v in plan.predicted.items() if k != "source"},
        "simulated": {k: v for k, v in plan.simulated.items()},
        "baselines": _baseline_settings(plan),
    }


def weights_layout(plan: Plan) -> dict[str, Any]:
    """Which segments start on the device (initial resident tops) and which stay on the host."""
    n = int(plan.decisions["num_experts"])
    out = []
    for l in plan.decisions["layers"]:
        res = list(l["initial_resident"])
        out.append({"layer": l["layer"], "f_top": l["f_top"], "device_tops": res,
                    "host_only": [e for e in range(n) if e not in res],
                    "host": "every expert's top and bottom segment (pinned memory on CUDA)"})
    return {"segment_layout": "(3, rows, d): gate rows, up rows, down columns transposed", "layers": out}


def emit_moe_offload(plan: Plan, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the artifact directory for a moe-offload plan (see the module docstring)."""
    import torch

    from codegen.moe_offload import rewrite_model
    from planner.registry import resolve_model
    from profilers.models import build_model
    from runtime.moe_offload.blocks import moe_blocks

    if plan.family != "moe-offload":
        raise PlannerError(f"`planner emit` for family {plan.family} is not implemented", "emit a moe-offload plan")
    spec = resolve_model(plan.model.name)
    if spec.fingerprint(plan.model.tiny) != plan.model.fingerprint:
        raise InputMismatchError(f"the catalog's {plan.model.name} no longer matches the plan's model fingerprint",
                                 "re-plan with this version of `planner plan`")
    torch.manual_seed(seed)
    built = build_model(spec, tiny=plan.model.tiny, seed=seed)
    model = built.module
    blocks = moe_blocks(model)
    layers = plan.decisions["layers"]
    if len(blocks) != len(layers) or int(blocks[0].experts.gate_up_proj.shape[0]) != int(plan.decisions["num_experts"]):
        raise InputMismatchError(f"the plan has {len(layers)} MoE layers x {plan.decisions['num_experts']} experts but "
                                 f"{plan.model.name}{' (tiny)' if plan.model.tiny else ''} has {len(blocks)}",
                                 "emit the plan for the model it was made for")
    has_weights = plan.model.tiny
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "model").mkdir()
        (tmp / "graph").mkdir()
        (tmp / "model" / "config.json").write_text(model.config.to_json_string(use_diff=False), encoding="utf-8")
        if has_weights:
            from safetensors.torch import save_model

            save_model(model, str(tmp / "model" / "weights.safetensors"))
        _, _, code = rewrite_model(model, [int(l["f_top"]) for l in layers])
        for moe_index, src in code.items():
            name = layers[moe_index]["layer"].replace(".", "_") + ".py"
            header = (f"# {layers[moe_index]['layer']}: MoE block rewritten for f_top = {layers[moe_index]['f_top']} "
                      f"of {plan.decisions['intermediate_size']} (torch.fx code, generated by planner emit)\n")
            body = src if src else "# this block is not symbolically traceable; the runtime swaps its experts module\n"
            (tmp / "graph" / name).write_text(header + body, encoding="utf-8")
        (tmp / "plan.json").write_text(dumps(plan), encoding="utf-8")
        (tmp / "runtime.yaml").write_text(yaml.safe_dump(runtime_config(plan, has_weights), sort_keys=False), encoding="utf-8")
        (tmp / "weights_layout.yaml").write_text(yaml.safe_dump(weights_layout(plan), sort_keys=False), encoding="utf-8")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"format": ARTIFACT_FORMAT, "model": plan.model.name, "model_fingerprint": plan.model.fingerprint,
                    "tiny": plan.model.tiny, "objective": {plan.objective.metric: plan.objective.value},
                    "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
