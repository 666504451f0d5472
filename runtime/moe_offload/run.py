"""Load an emitted moe-offload artifact, run it through the offloading engine, and write a receipt.

    loaded = load(Path("build"), config="plan")         # or config="mixtral_offloading", policy="lru"
    receipt = generate(loaded, prompt_ids, max_new_tokens=32)

Everything is checked before any weight is loaded: the manifest's sha256 of every file, that the
artifact's model matches its plan, and that the cache fits the device's free memory. The link is a
CUDA side stream when CUDA is present, else the emulated link (labelled in the receipt).
"""
from __future__ import annotations

import math
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from core.artifacts import read_manifest
from core.errors import ArtifactError
from kernels.moe_blocks import moe_blocks, split_all, swap_experts
from runtime.moe_offload.engine import LayerSettings, OffloadEngine
from runtime.moe_offload.link import CudaLink, EmulatedLink
from runtime.receipt import Receipt

POLICIES = ("lcp", "lru", "lfu")


@dataclass
class Loaded:
    """A model wired to its offloading engine, with the settings it runs."""

    model: Any
    engine: OffloadEngine
    config_name: str
    settings: list[LayerSettings]
    runtime: dict[str, Any]
    predicted: dict[str, Any]
    simulated: dict[str, Any]
    link_label: str
    emitted_blocks: int = 0      # MoE blocks running the fx code codegen emitted (the rest: swapped experts module)


def read_artifact(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, runtime.yaml) after verifying every file's checksum."""
    manifest = read_manifest(path)
    rt = yaml.safe_load((path / "runtime.yaml").read_text(encoding="utf-8"))
    if rt.get("model", {}).get("fingerprint") != manifest.get("model_fingerprint") or \
            rt.get("model", {}).get("name") != manifest.get("model"):
        raise ArtifactError("runtime.yaml describes another model than the artifact's manifest", "re-run `planner emit`")
    return manifest, rt


FX_GLOBALS = {"torch": torch, "inf": math.inf, "nan": math.nan, "device": torch.device,
              "fx_pytree": torch.fx._pytree, "pytree": torch.utils._pytree, "getattr": getattr}


def load_block_forward(path: Path) -> Callable[..., Any] | None:
    """The `forward` of a rewritten MoE block from its emitted torch.fx code (None where the block was not
    traceable and the runtime swaps its experts module instead)."""
    src = path.read_text(encoding="utf-8")
    if "def forward(" not in src:
        return None
    namespace: dict[str, Any] = dict(FX_GLOBALS)
    exec(compile(src, str(path), "exec"), namespace)  # the artifact's own checksummed code, written by planner emit
    return namespace["forward"]


def bind_emitted_graphs(model: Any, path: Path, layers: list[dict[str, Any]]) -> int:
    """Run each MoE block through the fx code codegen emitted for it; returns how many blocks use emitted code."""
    blocks = moe_blocks(model)
    bound = 0
    for blk, lay in zip(blocks, layers):
        fwd = load_block_forward(path / lay["graph"]) if lay.get("graph") else None
        if fwd is not None:
            mlp = blk.decoder_layer.mlp
            mlp.forward = types.MethodType(fwd, mlp)
            bound += 1
    return bound


def _settings(rt: dict[str, Any], config: str) -> tuple[list[LayerSettings], str, dict, dict]:
    layers = rt["layers"]
    if config == "plan":
        s = [LayerSettings(l["moe_index"], l["layer"], int(l["f_top"]), int(l["capacity"]), bool(l["prefetch"]),
                           tuple(l["initial_resident"]), l.get("misses_on") == "host_cpu", l.get("misses_on") == "split")
             for l in layers]
        return s, rt["eviction"]["policy"], dict(rt["predicted"]), dict(rt["simulated"])
    base = rt.get("baselines", {}).get(config)
    if base is None:
        raise ArtifactError(f"the plan has no runnable baseline '{config}'",
                            f"use one of: plan, {', '.join(sorted(rt.get('baselines', {})))}")
    s = [LayerSettings(l["moe_index"], l["layer"], int(b["f_top"]), int(b["capacity"]), bool(b["prefetch"]),
                       tuple(b.get("initial_resident", ())), bool(b.get("cpu_misses", False)),
                       bool(b.get("split_misses", False)))
         for l, b in zip(layers, base["layers"])]
    return (s, base["eviction"], {"tpot_ms": base["predicted_tpot_ms"], "hit_rate": base["predicted_hit_rate"]},
            {"tpot_ms": base["simulated_tpot_ms"], "hit_rate": base["simulated_hit_rate"]})


def load(path: Path, config: str = "plan", policy: str | None = None, device: str | None = None,
         weights: Path | None = None) -> Loaded:
    """Verify and load an artifact, wire the engine; nothing is loaded if a check fails. `weights`: a Hugging Face
    model directory to run a full-size plan on (checked against the plan before any weight is read)."""
    import transformers
    from safetensors.torch import load_model

    from runtime.moe_offload.predictor import attach_predictor

    manifest, rt = read_artifact(path)
    if rt.get("family") != "moe-offload":
        raise ArtifactError(f"artifact is for family {rt.get('family')}", "run it with that family's runtime")
    if not rt["model"].get("weights") and weights is None:
        raise ArtifactError(f"the artifact for {rt['model']['name']} has no weights (full-size models are planned on the "
                            "meta device here)", "pass --weights DIR (the model's Hugging Face directory), or plan the "
                            "tiny model with `planner plan MODEL --tiny ...` and emit that")
    if policy is not None and policy not in POLICIES:
        raise ArtifactError(f"unknown eviction policy '{policy}'", f"use one of: {', '.join(POLICIES)}")
    settings, plan_policy, predicted, simulated = _settings(rt, config)
    policy = policy or plan_policy
    cuda = torch.cuda.is_available() if device is None else device == "cuda"
    dev = torch.device("cuda" if cuda else "cpu")
    # memory check before loading anything
    cfg = transformers.AutoConfig.from_pretrained(str(path / "model"))
    dtype = torch.float32   # tiny artifacts carry fp32 weights
    ckpt = None
    if weights is not None:
        from runtime.moe_offload.checkpoint import open_checkpoint, plan_dtype

        dtype = plan_dtype(path / "plan.json")
        ckpt = open_checkpoint(Path(weights), path / "model", dtype)   # every check; no weight read yet
    d, f = int(cfg.hidden_size), int(rt["experts"]["intermediate_size"])
    bytes_per_row = 3 * d * dtype.itemsize
    cache_bytes = sum(s.capacity * s.f_top * bytes_per_row for s in settings)
    k = int(rt["experts"]["top_k"])
    kpf = int(rt["predictor"]["k_prefetch"])
    # the staging ring holds every copy in flight: decode needs k + k_pf per layer (two layers overlap);
    # a prefill step can touch every expert of a layer at once (no chunked prefill yet), so N + k_pf
    staging = max(2 * (k + kpf) + 2, int(rt["experts"]["num_experts"]) + kpf)
    need = int(rt["device"]["non_expert_bytes"]) + cache_bytes + staging * f * bytes_per_row
    free = torch.cuda.mem_get_info()[0] if cuda else int(rt["device"]["memory_bytes"])
    if need > free:
        raise ArtifactError(f"the plan needs {need / 2**20:.1f} MiB on the device (weights, expert cache, staging) but only "
                            f"{free / 2**20:.1f} MiB is free", "re-plan with a smaller --expert-budget or free device memory")
    if ckpt is not None:
        # non-expert weights straight to the device; experts re-laid out into (pinned) host segments
        model, tops, bottoms = ckpt.materialise([s.f_top for s in settings], dev, pin=cuda)
    else:
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        try:
            missing, unexpected = load_model(model, str(path / "model" / "weights.safetensors"), strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ArtifactError(f"weights in {path / 'model'} do not fit this architecture ({str(exc).splitlines()[0][:100]})",
                                "re-run `planner emit`") from exc
        model.eval()
    blocks = moe_blocks(model)
    if len(blocks) != len(settings):
        raise ArtifactError(f"the artifact's model has {len(blocks)} MoE layers but its plan has {len(settings)}",
                            "re-run `planner emit` for this plan")
    if ckpt is None:
        tops, bottoms = split_all(model, [s.f_top for s in settings])
    if cuda:
        if ckpt is None:
            tops = [{e: t.pin_memory() for e, t in l.items()} for l in tops]
            bottoms = [{e: t.pin_memory() for e, t in l.items()} for l in bottoms]
        link: Any = CudaLink()
    else:
        # tiny models on the CPU: one intra-op thread, so OpenMP workers do not spin against the link thread
        torch.set_num_threads(1)
        link = EmulatedLink(float(rt["link"]["bandwidth_bytes_per_s"]))
    engine = OffloadEngine(settings, tops, bottoms, link, dev, int(rt["experts"]["num_experts"]), f, d, dtype,
                           policy=policy, rho=float(rt["eviction"]["rho"]), omega=float(rt["eviction"]["omega"]),
                           staging_slots=staging)
    swap_experts(model, [s.f_top for s in settings], engine)
    if cuda:
        model.to(dev)   # after the swap: the fused experts are gone, only non-expert weights move
    emitted = bind_emitted_graphs(model, path, rt["layers"])
    attach_predictor(model, engine, kpf)
    name = config if policy == plan_policy else f"{config} (policy {policy})"
    return Loaded(model, engine, name, settings, rt, predicted, simulated, link.label, emitted)


def _next_token(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    last = logits[:, -1, :]
    if temperature <= 0:
        return last.argmax(-1, keepdim=True)
    return torch.multinomial(torch.softmax(last.float() / temperature, dim=-1).cpu(), 1, generator=gen).to(logits.device)


def generate(loaded: Loaded, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Receipt:
    """Decode through the engine (greedy, or seeded sampling); decode steps are timed, prefill is not.
    `progress(done, total)` is called after every decode step."""
    model, engine = loaded.model, loaded.engine
    gen = torch.Generator().manual_seed(seed)
    dev = engine.device
    times = []
    out_tokens: list[int] = []
    with torch.no_grad():
        engine.decode = False
        t_prefill = time.perf_counter()
        out = model(input_ids=torch.tensor([prompt_ids], device=dev), use_cache=True)
        cache = out.cache
        nxt = _next_token(out.logits, temperature, gen)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ttft_s = time.perf_counter() - t_prefill     # the prompt's prefill gives the first token
        engine.decode = True
        for _ in range(max_new_tokens):
            out_tokens.append(int(nxt))
            t0 = time.perf_counter()
            out = model(input_ids=nxt, cache=cache, use_cache=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if progress is not None:
                progress(len(times), max_new_tokens)
            cache = out.cache
            nxt = _next_token(out.logits, temperature, gen)
    engine.link.close()
    steps = max(len(times), 1)
    rows = []
    applied = engine.applied_capacity()
    plan_rows = {l["moe_index"]: l for l in loaded.runtime["layers"]}
    for s, c, cap in zip(loaded.settings, engine.counters, applied):
        pr = plan_rows[s.moe_index]
        row = {"layer": s.name, "f_top_applied": s.f_top, "capacity_applied": cap, "prefetch": s.prefetch,
               "activations": c.activations, "hits": c.hits, "misses": c.misses,
               "hit_rate_measured": c.hits / max(c.activations, 1),
               "recall_measured": c.predicted_used / max(c.activations, 1) if s.prefetch else 0.0,
               "mispredicted_per_token": c.mispredicted / steps, "bytes_h2d_per_token": c.bytes_h2d / steps,
               "stall_ms_per_token": c.stall_s * 1e3 / steps, "evictions": c.evictions}
        if loaded.config_name == "plan":
            row.update({"hit_rate_predicted": pr["predicted"]["hit_rate"], "hit_rate_simulated": pr["simulated"]["hit_rate"],
                        "bytes_h2d_predicted": pr["predicted"]["bytes_per_token"],
                        "stall_ms_predicted": pr["predicted"]["stall_ms"]})
        rows.append(row)
    acts = sum(c.activations for c in engine.counters)
    totals = {"tokens": len(times), "tpot_ms_measured": 1e3 * sum(times) / steps,
              "tpot_ms_predicted": loaded.predicted.get("tpot_ms"), "tpot_ms_simulated": loaded.simulated.get("tpot_ms"),
              "hit_rate_measured": sum(c.hits for c in engine.counters) / max(acts, 1),
              "hit_rate_predicted": loaded.predicted.get("hit_rate"), "hit_rate_simulated": loaded.simulated.get("hit_rate"),
              "bytes_h2d_per_token": sum(c.bytes_h2d for c in engine.counters) / steps,
              "link_bytes_total": int(engine.link.bytes_moved), "policy": engine.policy,
              "ttft_ms_measured": ttft_s * 1e3, "prompt_tokens": len(prompt_ids),
              # a baseline runs the plan's request: its prompt length is the plan's
              "prompt_tokens_planned": loaded.predicted.get("prompt_tokens",
                                                            loaded.runtime.get("predicted", {}).get("prompt_tokens")),
              "ttft_ms_predicted": loaded.predicted.get("ttft_ms"), "ttft_ms_simulated": loaded.simulated.get("ttft_ms"),
              "device": str(dev), "blocks_running_emitted_code": loaded.emitted_blocks}
    receipt = Receipt("moe-offload", loaded.config_name, loaded.link_label, rows, totals, tokens=out_tokens)
    receipt.flag_differences((("hit_rate_measured", "hit_rate_predicted"),))
    tp, tm = totals["tpot_ms_predicted"], totals["tpot_ms_measured"]
    if tp and abs(tm - tp) / tp > 0.2:
        receipt.flags.append(f"total: tpot_ms measured {tm:.3g} vs predicted {tp:.3g}")
    return receipt
