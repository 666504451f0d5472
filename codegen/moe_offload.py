"""moe-offload codegen: rewrite every MoE block of a transformers model into split-expert form, and
write the artifact files `planner run` executes.

Applies a plan's decisions (f_top per layer), never makes them; the caller (the family's emit entry
point) builds the model. Each block's `experts` module becomes
a `SplitExperts` (runtime/moe_offload/split_experts.py) whose top/bottom segments come from a
`SegmentSource`; where the block is symbolically traceable it is replaced by a torch.fx GraphModule
in which the expert-cache steps (dispatch, top, bottom, release) are explicit `call_module` nodes.

Example:
    >>> model2, source, code = rewrite_model(copy.deepcopy(model), f_tops=[64, 32, 0, 128])  # doctest: +SKIP
    >>> torch.allclose(model(ids).logits, model2(ids).logits, atol=1e-5)
    True
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from torch import fx, nn

from planner.schema import Plan
from planner.serde import dumps

from kernels.moe_blocks import moe_blocks, swap_experts
from kernels.split_experts import SegmentSource, DispatchStep, SegmentStep, ReleaseStep

log = logging.getLogger(__name__)


class _BlockTracer(fx.Tracer):
    """Traces a MoE block through SplitExperts, keeping its cache steps as leaf calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (DispatchStep, SegmentStep, ReleaseStep)):
            return True
        return super().is_leaf_module(m, qualname)


def trace_block(mlp: nn.Module) -> fx.GraphModule | None:
    """fx GraphModule of a rewritten MoE block, or None where the block is not symbolically traceable."""
    try:
        graph = _BlockTracer().trace(mlp)
    except Exception as exc:  # fx raises TraceError, TypeError, ... on Python control flow over proxies
        log.info("MoE block %s not traceable (%s); kept as a module", type(mlp).__name__, str(exc).splitlines()[0][:120])
        return None
    return fx.GraphModule(mlp, graph, class_name=f"Split{type(mlp).__name__}")


def rewrite_model(model: nn.Module, f_tops: list[int], source: SegmentSource | None = None,
                  trace: bool = True) -> tuple[nn.Module, SegmentSource, dict[int, str]]:
    """Swap every MoE block's experts for SplitExperts at the given f_top (in place) and trace the blocks.

    Returns (model, the segment source, {moe index: fx code of the block, or '' if not traceable}).
    With `source=None` every segment stays resident (the exact reference path).
    """
    blocks, source = swap_experts(model, f_tops, source)
    code: dict[int, str] = {}
    for blk in blocks:
        gm = trace_block(blk.decoder_layer.mlp) if trace else None
        if gm is not None:
            blk.decoder_layer.mlp = gm
        code[blk.moe_index] = gm.code if gm is not None else ""
    return model, source, code


# ------------------------------------------------------------------ artifact files
# Artifact layout (moe-offload), written into the staging directory the spine provides:
#   plan.json                 the plan, as planned
#   runtime.yaml              what the runtime applies: per-layer f_top, cache capacity, prefetch, initial
#                             residents; eviction policy and its parameters; predictor tap; link; device
#                             memory; every baseline's per-layer settings (for `planner run --baseline`)
#   weights_layout.yaml       which expert segments start on the device and which stay in host memory
#   model/config.json         the architecture (transformers config)
#   model/weights.safetensors the weights (tiny models only; full-size plans carry no weights)
#   graph/<layer>.py          the rewritten MoE block's forward as torch.fx code; the runtime executes it
RUNTIME_FORMAT = 2


def _layer_settings(decisions: dict[str, Any]) -> list[dict[str, Any]]:
    # a split layer caches whole experts and splits each miss at copy_f_top: the runtime's f_top is that split
    return [{"layer": l["layer"], "moe_index": l["moe_index"], "split_ratio": l["split_ratio"],
             "f_top": l["copy_f_top"] if l.get("misses_on") == "split" else l["f_top"],
             "capacity": l["cached_experts"], "prefetch": l["prefetch"], "misses_on": l.get("misses_on", "link"),
             "initial_resident": l["initial_resident"], "predicted": l["predicted"], "simulated": l["simulated"],
             "graph": "graph/" + graph_file_name(l["layer"])}
            for l in decisions["layers"]]


def _baseline_settings(plan: Plan) -> dict[str, Any]:
    f = int(plan.decisions["intermediate_size"])
    out = {}
    for name, b in plan.baselines.items():
        d = b.decisions
        if d.get("runtime", "").startswith("simulator only"):
            continue
        cpu = d.get("misses_on_host_cpu") or [False] * len(d["split_ratio"])
        split = d.get("split_fraction") or [None] * len(d["split_ratio"])
        # "static" (a fixed hot set: llama.cpp's whole layers) never evicts: its GPU layers hold every expert and its
        # host layers run in the engine's CPU-miss mode, so the engine's eviction policy never acts on them
        out[name] = {"eviction": d.get("eviction", "lcp") if d.get("eviction") in ("lcp", "lru", "lfu") else "lcp",
                     "layers": [{"f_top": int(round(sp * f)) if sp is not None else int(round(th * f)) if c else (f if cm else 0),
                                 "capacity": c, "prefetch": p, "cpu_misses": cm, "split_misses": sp is not None,
                                 "initial_resident": list(range(c)) if cm or sp is not None else []}
                                for th, c, p, cm, sp in zip(d["split_ratio"], d["cached_experts"], d["prefetch"], cpu, split)],
                     "predicted_tpot_ms": b.predicted.get("tpot_ms"), "simulated_tpot_ms": b.simulated.get("tpot_ms"),
                     "predicted_hit_rate": b.predicted.get("hit_rate"), "simulated_hit_rate": b.simulated.get("hit_rate"),
                     "description": b.description, "params": dict(b.params)}
    return out


def runtime_config(plan: Plan, has_weights: bool) -> dict[str, Any]:
    """The runtime.yaml mapping for a moe-offload plan."""
    d = plan.decisions
    mem = d["memory"]
    return {
        "format": RUNTIME_FORMAT,
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



def graph_file_name(layer: str) -> str:
    """graph/<layer>.py name of one MoE layer (dots become underscores)."""
    return layer.replace(".", "_") + ".py"


def write_artifact(model: nn.Module, plan: Plan, staging: Path) -> None:
    """Rewrite `model` (already built with the plan's weights) for the plan's f_tops and write every artifact file."""
    layers = plan.decisions["layers"]
    blocks = moe_blocks(model)
    if len(blocks) != len(layers) or int(blocks[0].experts.gate_up_proj.shape[0]) != int(plan.decisions["num_experts"]):
        raise ValueError(f"the plan has {len(layers)} MoE layers x {plan.decisions['num_experts']} experts but the model "
                         f"has {len(blocks)}")
    has_weights = plan.model.tiny
    (staging / "model").mkdir()
    (staging / "graph").mkdir()
    (staging / "model" / "config.json").write_text(model.config.to_json_string(use_diff=False), encoding="utf-8")
    if has_weights:
        from safetensors.torch import save_model

        save_model(model, str(staging / "model" / "weights.safetensors"))
    _, _, code = rewrite_model(model, [int(l["f_top"]) for l in layers])
    for moe_index, src in code.items():
        header = (f"# {layers[moe_index]['layer']}: MoE block rewritten for f_top = {layers[moe_index]['f_top']} "
                  f"of {plan.decisions['intermediate_size']} (torch.fx code, generated by planner emit)\n")
        body = src if src else "# this block is not symbolically traceable; the runtime swaps its experts module\n"
        (staging / "graph" / graph_file_name(layers[moe_index]["layer"])).write_text(header + body, encoding="utf-8")
    (staging / "plan.json").write_text(dumps(plan), encoding="utf-8")
    (staging / "runtime.yaml").write_text(yaml.safe_dump(runtime_config(plan, has_weights), sort_keys=False), encoding="utf-8")
    (staging / "weights_layout.yaml").write_text(yaml.safe_dump(weights_layout(plan), sort_keys=False), encoding="utf-8")
