"""geo-train lowering: regions.yaml + model -> GeoTrainProblem; the plan's decisions and metrics as JSON.

regions.yaml:
    regions:
      - {name: us-east, hardware: a100_80gb}            # catalog name or hardware YAML path
      - {name: eu-west, hardware: a100_80gb, step_time: 310ms, step_jitter: 20ms}
                                                         # step_time: measured, overrides the roofline;
                                                         # step_jitter: std of one step (default 0)
    wan: {rate: 1gbps, rtt: 80ms}                        # every pair, or per link:
    links: [{between: [us-east, eu-west], rate: 1gbps, rtt: 80ms}]
Rates and times need units (a bare number is refused). The ring all-reduce is bounded by the slowest link
and the largest RTT among the links used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from core.errors import PlannerError, reason_of
from core.units import parse_rate_bits, parse_seconds


@dataclass(frozen=True)
class Region:
    """One region: its name, hardware profile name and compute step time (s) with where it came from."""

    name: str
    hardware: str
    step_time_s: float
    step_time_source: str
    step_jitter_s: float = 0.0


@dataclass(frozen=True)
class Regions:
    """What regions.yaml says, parsed."""

    source: str
    fingerprint: str
    regions: tuple[Region, ...]
    rate_bps: float
    rtt_s: float
    hardware: tuple[Any, ...]


@dataclass(frozen=True)
class ModelLayout:
    """Bytes of the model's parts at the sync dtype, and what one inner step costs in FLOPs."""

    layer_bytes: tuple[int, ...]
    embed_bytes: int
    head_bytes: int
    num_params: int
    dtype_bytes: int
    config: Mapping[str, Any]


def _fail(path: str, what: str, fix: str) -> PlannerError:
    return PlannerError(f"--regions {path}: {what}", fix)


def read_regions(path: str, layout: ModelLayout, tokens_per_step: int, resolve_hardware: Any) -> Regions:
    """Parse and check regions.yaml; step times from `step_time` or the hardware roofline (6 * params * tokens)."""
    p = Path(path)
    if not p.is_file():
        raise PlannerError(f"--regions {path}: the file does not exist", "pass a regions.yaml (see docs/geo-train.md)")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML ({reason_of(exc)})", "fix the file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list) or not data["regions"]:
        raise _fail(path, "no 'regions' list", "list regions as '- {name: X, hardware: Y}'")
    regions, hws, names = [], [], []
    for i, r in enumerate(data["regions"]):
        if not isinstance(r, dict) or "name" not in r or "hardware" not in r:
            raise _fail(path, f"region {i + 1} needs 'name' and 'hardware'", "write '- {name: X, hardware: a100_80gb}'")
        name = str(r["name"])
        if name in names:
            raise _fail(path, f"region '{name}' appears twice", "give every region its own name")
        names.append(name)
        hw = resolve_hardware(str(r["hardware"]), flag=f"--regions {path} ({name})")
        hws.append(hw)
        if "step_time" in r:
            t = parse_seconds(str(r["step_time"]), f"--regions {path} ({name}) step_time")
            if t <= 0:
                raise _fail(path, f"region '{name}' has step_time {r['step_time']}", "give a positive time like 250ms")
            src = "measured (regions.yaml step_time)"
        else:
            flops = 6.0 * layout.num_params * tokens_per_step
            t = hw.roofline_s(flops, 4.0 * layout.num_params * layout.dtype_bytes, "fp32" if layout.dtype_bytes == 4 else "bf16")
            src = f"roofline of {hw.name} (6 * params * tokens)"
        jit = 0.0
        if "step_jitter" in r:
            jit = parse_seconds(str(r["step_jitter"]), f"--regions {path} ({name}) step_jitter")
            if jit < 0:
                raise _fail(path, f"region '{name}' has step_jitter {r['step_jitter']}", "give a time like 20ms, or 0")
        regions.append(Region(name, hw.name, float(t), src, float(jit)))
    links = _links(path, data, names)
    rate = min(l[0] for l in links)
    rtt = max(l[1] for l in links)
    fp = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return Regions(str(p), fp, tuple(regions), rate, rtt, tuple(hws))


def _links(path: str, data: Mapping[str, Any], names: list[str]) -> list[tuple[float, float]]:
    def one(d: Any, where: str) -> tuple[float, float]:
        if not isinstance(d, dict) or "rate" not in d or "rtt" not in d:
            raise _fail(path, f"{where} needs 'rate' and 'rtt'", "write e.g. {rate: 1gbps, rtt: 80ms}")
        rate = parse_rate_bits(str(d["rate"]), f"--regions {path} {where} rate")
        rtt = parse_seconds(str(d["rtt"]), f"--regions {path} {where} rtt")
        if rate <= 0:
            raise _fail(path, f"{where} has rate {d['rate']}", "give a positive rate like 1gbps")
        if rtt < 0:
            raise _fail(path, f"{where} has a negative rtt", "give a time like 80ms")
        return rate, rtt

    if len(names) == 1:
        return [(float("inf"), 0.0)]
    if "links" in data:
        got = {}
        for i, d in enumerate(data["links"] or []):
            pair = d.get("between") if isinstance(d, dict) else None
            if not isinstance(pair, list) or len(pair) != 2 or any(x not in names for x in pair):
                raise _fail(path, f"link {i + 1} needs 'between: [A, B]' naming two regions", f"regions: {', '.join(names)}")
            got[frozenset(pair)] = one(d, f"link {pair[0]}-{pair[1]}")
        ring = [frozenset((names[i], names[(i + 1) % len(names)])) for i in range(len(names))]
        missing = [sorted(r) for r in ring if r not in got]
        if missing:
            raise _fail(path, f"no link between {missing[0][0]} and {missing[0][1]}",
                        "add it under 'links' (the all-reduce ring visits the regions in file order)")
        return [got[r] for r in ring]
    if "wan" not in data:
        raise _fail(path, "no 'wan' (or 'links')", "add 'wan: {rate: 1gbps, rtt: 80ms}'")
    return [one(data["wan"], "wan")]


def model_layout(spec: Any, tiny: bool) -> ModelLayout:
    """Per-layer bytes of a decoder built on the meta device (sync at the model's dtype)."""
    from profilers.models import build_model

    if spec.task != "causal-lm":
        raise PlannerError(f"geo-train trains decoder language models; {spec.name} is a {spec.task} model",
                           "plan a causal-lm model such as lm-small or smollm2-135m")
    built = build_model(spec, tiny=tiny, device="meta")
    m = built.module
    inner = getattr(m, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise PlannerError(f"{spec.name} has no model.layers list of decoder blocks",
                           "plan a Llama-style decoder (lm-small, smollm2-135m)")
    nb = spec.dtype_bytes

    def size(mod: Any) -> int:
        return sum(p.numel() for p in mod.parameters()) * nb

    layer_bytes = tuple(size(l) for l in layers)
    embed = size(inner.embed_tokens)
    total = sum(p.numel() for p in m.parameters()) * nb     # tied weights counted once
    head = total - embed - sum(layer_bytes)
    cfg = {k: v for k, v in built.config.to_dict().items()
           if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "rope_theta", "tie_word_embeddings")}
    return ModelLayout(layer_bytes, int(embed), int(head), int(total // nb), nb, cfg)


def problem_of(regions: Regions, layout: ModelLayout, opts: Any) -> Any:
    """The solver's problem."""
    from solvers.geo_train.problem import GeoTrainProblem

    return GeoTrainProblem(
        region_names=tuple(r.name for r in regions.regions),
        step_time_s=np.array([r.step_time_s for r in regions.regions]),
        link_rate_bps=regions.rate_bps, rtt_s=regions.rtt_s, layer_bytes=layout.layer_bytes,
        embed_bytes=layout.embed_bytes, head_bytes=layout.head_bytes, inner_steps=opts.inner_steps,
        max_fragments=opts.max_fragments, max_exposed_fraction=opts.max_exposed,
        fixed_fragments=opts.fragments, fixed_sends=opts.sends, slot_overhead_s=opts.slot_overhead_s,
        step_jitter_s=max(r.step_jitter_s for r in regions.regions))


def r6(x: float) -> float:
    """Fixed rounding for plan JSON (byte-identical plans)."""
    return float(f"{x:.6g}")


def schedule_json(s: Any) -> dict[str, Any]:
    """A schedule (plan or baseline) as plan JSON: decisions with units in the keys."""
    m = s.metrics
    return {
        "fragments": [{"fragment": i, "layers": list(g), "bytes": int(b), "sync_s": r6(T), "hidden": bool(hid)}
                      for i, (g, b, T, hid) in enumerate(zip(s.groups, s.fragment_bytes, m.fragment_sync_s, m.hidden))],
        "inner_steps_H": int(s.inner_steps), "sends_per_window_N": int(s.sends_per_window),
        "slot_steps_h": int(s.slot_steps), "delay_steps_tau": int(s.delay_steps), "choice": s.choice,
        "merge": s.merge, **{k: v for k, v in s.params.items()},
    }


def metrics_json(s: Any) -> dict[str, Any]:
    """The predicted metrics of a schedule."""
    m = s.metrics
    H = s.inner_steps
    return {"step_time_s": r6(m.step_time_s), "compute_step_s": r6(m.compute_step_s),
            "exposed_comm_s_per_step": r6(m.exposed_comm_s_per_step),
            "hidden_comm_s_per_step": r6(m.hidden_comm_s_per_step),
            "payload_bytes_per_step": r6(m.payload_bytes_per_window / H),
            "wire_bytes_per_step": r6(m.wire_bytes_per_window / H),
            "link_utilisation": r6(m.link_utilisation),
            "unhidden_fragments": [i for i, h in enumerate(m.hidden) if not h]}
