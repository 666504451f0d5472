"""`planner inspect` tables of a --target llama.cpp plan: VRAM with its sources, and the per-block placement."""
from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from planner.schema import Plan
from planner.tables import table
from planner.units import fmt_bytes

SHORT = {"ffn_gate_exps": "gate", "ffn_up_exps": "up", "ffn_down_exps": "down", "ffn_gate_shexp": "sh.gate",
         "ffn_up_shexp": "sh.up", "ffn_down_shexp": "sh.down"}


def memory_table(plan: Plan, wide: bool = False) -> Table:
    """Where the device memory goes, as llama.cpp spends it."""
    d = plan.decisions
    m = d["memory"]
    t = table(f"device memory (llama.cpp, {d['quant']} GGUF, n_ctx {m['n_ctx']}, -ub {d['ubatch']})")
    t.add_column("item")
    t.add_column("size", justify="right")
    if wide:
        t.add_column("source")
    src = m.get("sources", {})
    rows = [("device memory", m["device_memory_bytes"], ""), ("margin", m["margin_bytes"], src.get("margin", "")),
            ("CUDA context", m.get("cuda_context_bytes", 0), src.get("cuda_context", "")),
            ("driver reservation", m.get("driver_reserved_bytes", 0), src.get("driver_reserved", "")),
            (f"compute buffer ({m['compute_buffer_source']})", m["compute_buffer_bytes"], src.get("compute_buffer", "")),
            ("budget: weights + KV cache", m["weights_and_kv_budget_bytes"], ""),
            ("used by the plan", plan.predicted["vram_bytes"], src.get("weights", "")),
            ("KV cache, all blocks", m["kv_cache_bytes_all_blocks"], src.get("kv_cache", "")),
            ("model file", m["model_file_bytes"], ""),
            ("input embedding (host)", m["input_embedding_bytes"], src.get("input_embedding", ""))]
    for name, size, s in rows:
        t.add_row(*([name, fmt_bytes(size)] + ([s] if wide else [])))
    return t


def blocks_table(plan: Plan, wide: bool = False) -> Table:
    """Per block: where it runs, which tensor groups stay in host memory, its VRAM and predicted time."""
    d = plan.decisions
    t = table(f"per block: -ngl {d['n_gpu_layers']}, output head on the "
              f"{'GPU' if d['output_on_gpu'] else 'host'}")
    for col, just in (("block", "left"), ("side", "left"), ("in host memory", "left"), ("VRAM", "right"),
                      ("ms/token", "right")):
        t.add_column(col, justify=just)
    for lay in d["layers"]:
        host = "everything" if lay["host_block"] else (", ".join(SHORT.get(g, g) for g in lay["host_groups"]) or "-")
        t.add_row(lay["block"], "host" if lay["host_block"] else "GPU", host, fmt_bytes(lay["vram_bytes"]),
                  f"{lay['predicted']['time_ms']:.3f}")
    return t


def llamacpp_tables(plan: Plan, wide: bool = False) -> list[Any]:
    """The tables, plus how to apply the plan."""
    out: list[Any] = [memory_table(plan, wide), blocks_table(plan, wide)]
    if wide:
        types = plan.decisions.get("tensor_types", {})
        out.append(Text("tensor types: " + "; ".join(f"{k}: " + ", ".join(f"{n} {ty}" for ty, n in v.items())
                                                     for k, v in types.items())))
    out.append(Text("apply with: planner export PLAN --to llama.cpp", style="dim"))
    return out
