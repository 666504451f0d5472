"""split-inference emit and run entry points: the glue between a plan, its artifact and the runtime.

Emit (`emit`: files into the staging directory the spine owns; the spine adds manifest.json):
  1. build the plan's model with real weights (digits-cnn trained, MiniLM pretrained, others seeded) and
     capture it with torch.export, as the planner's profiler does;
  2. name mapping (this module's job, not codegen's): the plan names nodes of the profiler's folded graph
     (`fold_views`); a configuration's edge set in the exported graph is the closure (every ancestor) of
     its cut tensors, so a view of a cut tensor runs in the cloud and the cut tensor itself crosses;
     graph nodes with no users (asserts) go to the edge when all their inputs are there;
  3. every configuration becomes a partition, deduplicated: the plan, each baseline (Neurosurgeon, DADS,
     ...) and each plan-table row; `codegen.split_inference.split_graph` cuts the graph for each, and the
     crossing tensors are checked against the plan's cut;
  4. predicted figures per partition: the plan's, baselines' and plan-table rows' own numbers (rows of plans
     made before rows carried their stage times are re-derived with the same cost model,
     `solvers.split_inference.cost.evaluate`, at the row's bandwidth);
  5. the semantic cache (classifiers): centres and threshold fitted on calibration data through the
     emitted edge half (digits: the training split with its labels; others: seeded inputs labelled by
     the unsplit model);
  6. the request stream: the held-out digits (labels and unsplit logits), else seeded inputs with the
     unsplit model's outputs as reference.
Run (`run`): the runtime's roles (cloud / edge / both as two local processes) and the receipt tables.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.errors import ArtifactError, InputMismatchError, PlannerError
from planner.families.base import Progress, RunReport
from planner.flags import FlagValues

log = logging.getLogger(__name__)

MAX_EMIT_PARAM_BYTES = 4 << 30
SEEDED_REQUESTS = 32
CACHE_CALIBRATION_SEEDED = 64


@dataclass(frozen=True)
class EmitOptions:
    """What `planner emit` may be told for a split-inference plan."""

    seed: int = 0
    requests: int = SEEDED_REQUESTS
    cache_calibration: int = CACHE_CALIBRATION_SEEDED   # seeded calibration inputs (models without real data)
    listen: str = "127.0.0.1:50551"
    switch_samples: int = 20
    fit_cache: bool = True       # fit the semantic cache of classifiers (a forward per calibration input per partition)


@dataclass
class _Config:
    """One configuration of the plan (plan, baseline or table row) before deduplication."""

    name: str
    cut: tuple[str, ...]
    bits: dict[str, int]
    predicted: dict[str, Any] | None
    uplink_bits_per_s: float | None = None


def _configs(plan: Any) -> list[_Config]:
    d = plan.decisions
    out = [_Config("plan", tuple(r["name"] for r in d["cut_tensors"]), {r["name"]: int(r["bits"]) for r in d["cut_tensors"]},
                   dict(plan.predicted))]
    for name in sorted(plan.baselines):
        b = plan.baselines[name]
        rows = b.decisions.get("cut_tensors", [])
        out.append(_Config(name, tuple(r["name"] for r in rows), {r["name"]: int(r["bits"]) for r in rows}, dict(b.predicted)))
    for row in d.get("plan_table", []):
        out.append(_Config("table", tuple(row["cut_tensors"]), dict(zip(row["cut_tensors"], map(int, row["bits"]))),
                           dict(row["predicted"]) if "predicted" in row else None, float(row["uplink_bits_per_s"])))
    return out


def _key(c: _Config) -> tuple[Any, ...]:
    return tuple(sorted(c.cut)), tuple(sorted(c.bits.items()))


# ------------------------------------------------------------------ name mapping
def edge_set(gm: torch.fx.GraphModule, cut: Sequence[str]) -> Callable[[torch.fx.Node], bool]:
    """The edge callback for a configuration: every ancestor of a cut tensor, and the cut tensors."""
    nodes = {n.name: n for n in gm.graph.nodes}
    missing = [c for c in cut if c not in nodes]
    if missing:
        raise InputMismatchError(f"the plan cuts at {missing[0]}, which the model's exported graph does not have",
                                 "re-plan with this version of `planner plan` (the model or its export changed)")
    if not cut:
        return lambda n: True
    edge: set[str] = set()
    todo = [nodes[c] for c in cut]
    while todo:
        n = todo.pop()
        if n.name in edge:
            continue
        edge.add(n.name)
        todo.extend(n.all_input_nodes)
    for n in gm.graph.nodes:   # side-effect-only nodes (asserts) follow their inputs
        if n.op == "call_function" and not n.users and n.name not in edge and n.all_input_nodes and \
                all(a.name in edge or a.op in ("placeholder", "get_attr") for a in n.all_input_nodes):
            edge.add(n.name)
    return lambda n: n.name in edge


def _rep_map(cap: Any) -> dict[str, str]:
    """Every exported node name -> the folded-graph node the plan names it by."""
    from planner.families.split_inference.lowering import fold_views
    from profilers.graph import profile_graph

    _, rep = fold_views(profile_graph(cap))
    return rep


# ------------------------------------------------------------------ predictions for table rows
def _rederive(plan: Any, spec: Any, configs: Sequence[_Config], progress: Progress) -> dict[int, dict[str, Any]]:
    """Predicted figures of plan-table rows (index in `configs` -> metrics dict), from the planner's own cost
    model at the row's bandwidth (roofline stage times; the plan's table stores only period and latency)."""
    import dataclasses

    from planner.families.split_inference.lowering import SplitOptions, lower_graph, metrics_dict
    from planner.registry import resolve_hardware
    from profilers.graph import profile_model
    from solvers.split_inference.cost import evaluate, graph_index

    rows = [i for i, c in enumerate(configs) if c.uplink_bits_per_s is not None and c.predicted is None]
    if not rows:
        return {}
    progress("re-deriving plan-table stage times")
    try:
        edge = resolve_hardware(plan.hardware.name)
        cloud = resolve_hardware(plan.decisions["cloud_device"])
    except PlannerError as exc:
        log.warning("plan-table predictions not re-derived: %s", exc.one_line())
        return {}
    link = plan.decisions["link"]
    opts = SplitOptions(cloud=cloud.name, link_bits_per_s=float(link["uplink_bits_per_s"]), rtt_s=float(link["rtt_ms"]) / 1e3,
                        epsilon=float(plan.decisions["epsilon"]))
    profile = profile_model(spec, tiny=plan.model.tiny)
    problem, _ = lower_graph(profile, spec, edge, cloud, opts)
    adj = graph_index(problem)
    idx = {n: i for i, n in enumerate(problem.node_names)}
    out = {}
    for i in rows:
        c = configs[i]
        mask = np.zeros(problem.num_nodes, dtype=bool)
        if not c.cut:
            mask[:] = True
        else:
            todo = [idx[n] for n in c.cut]
            while todo:
                v = todo.pop()
                if not mask[v]:
                    mask[v] = True
                    todo.extend(adj.pred[v])
        mask |= problem.is_input
        p = dataclasses.replace(problem, bandwidth_bytes_per_s=c.uplink_bits_per_s / 8)
        m = evaluate(p, mask, {idx[k]: v for k, v in c.bits.items()})
        d = metrics_dict(m, plan.decisions["accuracy"]["kind"])
        d["source"] = "re-derived at emit with the plan's cost model (roofline stage times) at this row's bandwidth"
        out[i] = d
    return out


# ------------------------------------------------------------------ emit
def _build(plan: Any, seed: int) -> tuple[Any, Any]:
    from planner.registry import plan_model
    from profilers.models import build_model

    if plan.family != "split-inference":
        raise PlannerError(f"this is a {plan.family} plan, not split-inference", "emit it with its own family")
    spec = plan_model(plan)
    meta = build_model(spec, tiny=plan.model.tiny, device="meta") if spec.kind == "transformers" and not plan.model.tiny else None
    if meta is not None:
        n_bytes = sum(p.numel() * 4 for p in meta.module.parameters())
        if n_bytes > MAX_EMIT_PARAM_BYTES:
            raise ArtifactError(f"{spec.name} needs {n_bytes / 2**30:.1f} GiB of fp32 weights to emit on this machine",
                                "plan with --tiny (same architecture, small dimensions) to get a runnable artifact")
    torch.manual_seed(seed)
    return spec, build_model(spec, tiny=plan.model.tiny, device="cpu", seed=seed)


def _classification(spec: Any) -> bool:
    return spec.task == "image-classification" or spec.kind == "digits-cnn"


def _summaries(outs: Sequence[torch.Tensor], classification: bool) -> torch.Tensor:
    from runtime.split_inference.pipeline import summarise_output

    return torch.stack([summarise_output(o, classification)[1] for o in outs])


def _request_data(spec: Any, built: Any, gm: Any, input_specs: list[dict[str, Any]], opts: EmitOptions,
                  classification: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """runtime.yaml's `requests` entry and the tensors of data/requests.safetensors."""
    from runtime.split_inference.run import seeded_inputs

    with torch.inference_mode():
        if spec.kind == "digits-cnn":
            from profilers.digits_cnn import SEED, load_digits_data

            data = load_digits_data(SEED)
            x = data.x_test
            ref = torch.cat([gm(x[i:i + 1]) for i in range(len(x))])
            entry = {"kind": "file", "file": "data/requests.safetensors", "count": int(len(x)),
                     "description": f"held-out scikit-learn digits split ({len(x)} images, seed {SEED}) with labels"}
            return entry, {"input_0": x, "labels": data.y_test, "reference": ref}
        reqs = seeded_inputs(input_specs, opts.seed, opts.requests)
        outs = [_first(gm(*args)) for args in reqs]
    entry = {"kind": "seeded", "seed": opts.seed, "count": opts.requests, "file": "data/requests.safetensors",
             "description": f"{opts.requests} seeded inputs (uniform images / token ids); reference: the unsplit model"}
    return entry, {"reference": _summaries(outs, classification)}


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    return next(o for o in out if isinstance(o, torch.Tensor))


def _cache(spec: Any, built: Any, gm: Any, parts: list[Any], opts: EmitOptions,
           input_specs: list[dict[str, Any]], progress: Progress) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Semantic-cache settings and centre files for every partition that sends a floating cut tensor."""
    from kernels.uniform_quant import QuantizedTensor, dequantize
    from runtime.split_inference.run import seeded_inputs
    from runtime.split_inference.semantic_cache import calibrate_threshold, cut_feature, fit_centres, margins

    progress("fitting the semantic cache")
    with torch.inference_mode():
        if spec.kind == "digits-cnn":
            from profilers.digits_cnn import SEED, load_digits_data

            data = load_digits_data(SEED)
            xs = [(data.x_train[i:i + 1],) for i in range(len(data.x_train))]
            truth = data.y_train
            source = f"scikit-learn digits training split ({len(xs)} images, labels)"
        else:
            xs = seeded_inputs(input_specs, opts.seed + 1, opts.cache_calibration)
            truth = None
            source = f"{len(xs)} seeded inputs labelled by the unsplit model (random weights: no real classes)"
        model_pred = torch.tensor([int(_first(gm(*a)).reshape(-1).argmax()) for a in xs])
        num_classes = int(_first(gm(*xs[0])).reshape(-1).numel())
    labels = truth if truth is not None else model_pred
    cfg: dict[str, Any] = {"enabled": False, "early_return": True, "num_classes": num_classes, "keep_ratio": 0.7,
                           "target_precision": 0.95, "calibration": source, "features": {}, "partitions": {}}
    files = {}
    for part in parts:
        h = part.halves
        floats = [i for i, w in enumerate(h.wire) if getattr(torch, w.dtype).is_floating_point]
        if h.cloud is None or not floats:
            continue
        j = max(floats, key=lambda i: math.prod(h.wire[i].shape))
        feats = []
        with torch.inference_mode():
            for a in xs:
                v = h.edge(*a)[j]
                feats.append(cut_feature(dequantize(v) if isinstance(v, QuantizedTensor) else v.float()))
        f = torch.cat(feats)
        centres, clabels = fit_centres(f, labels, 0.7)
        top, m = margins(f, centres)
        agree = clabels[top] == model_pred
        tau = calibrate_threshold(m, agree, 0.95)
        hit = m >= tau
        rel = f"cache/{part.pid}.safetensors"
        files[rel] = {"centres": centres, "labels": clabels}
        cfg["features"][part.pid] = h.wire[j].name
        cfg["partitions"][part.pid] = {
            "file": rel, "tau": float(tau) if math.isfinite(tau) else float("inf"),
            "calibration_hit_rate": round(float(hit.float().mean()), 6),
            "calibration_precision": round(float(agree[hit].float().mean()), 6) if bool(hit.any()) else None}
    return cfg, files


def build_artifact(plan: Any, opts: EmitOptions, progress: Progress = lambda s: None) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The partitions, runtime.yaml mapping and extra tensor files of a plan's artifact."""
    from codegen.split_inference import EmittedPartition, split_graph
    from profilers.graph import capture

    spec, built = _build(plan, opts.seed)
    progress("capturing the graph with torch.export")
    cap = capture(built)
    gm = cap.program.module()
    rep = _rep_map(cap)
    classification = _classification(spec)
    configs = _configs(plan)
    rederived = _rederive(plan, spec, configs, progress)
    keys: dict[tuple[Any, ...], str] = {}
    parts: list[EmittedPartition] = []
    conf_out: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    for i, c in enumerate(configs):
        k = _key(c)
        if k not in keys:
            pid = f"p{len(keys)}"
            keys[k] = pid
            progress(f"splitting partition {pid} ({', '.join(c.cut) or 'all on the edge'})")
            bits = {name: c.bits[r] for name, r in rep.items() if r in c.bits}
            # a fresh graph per partition (the split rewrites it), sharing the weights
            g = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
            halves = split_graph(g, edge_set(g, c.cut), bits, output_on_edge=not c.cut,
                                 recompute=lambda n: rep.get(n.name) != n.name)
            crossing = {w.name for w in halves.wire}
            if crossing != set(c.cut):
                raise RuntimeError(f"codegen's cut {sorted(crossing)} differs from the plan's {sorted(c.cut)} (a bug)")
            pred = c.predicted if c.predicted is not None else rederived.get(i, {})
            parts.append(EmittedPartition(pid, halves, {"cut_tensors": list(c.cut), "bits": dict(sorted(c.bits.items())),
                                                        "predicted": _plain(pred)}))
        pid = keys[k]
        if c.uplink_bits_per_s is None:
            conf_out[c.name] = {"partition": pid, "predicted": _plain(c.predicted or {})}
        else:
            table.append({"uplink_bits_per_s": c.uplink_bits_per_s, "partition": pid,
                          "predicted": _plain(c.predicted if c.predicted is not None else rederived.get(i, {}))})
    # a partition first met as a table row gets the plan-level figures of its first row
    input_specs = [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in parts[0].halves.inputs]
    vocab = getattr(getattr(built.module, "config", None), "vocab_size", None)
    ranges = {s["name"]: {"high": int(vocab)} for s in input_specs if vocab and not getattr(torch, s["dtype"]).is_floating_point}
    for s in input_specs:
        s.update(ranges.get(s["name"], {}))
    progress("recording the request stream")
    req_entry, req_tensors = _request_data(spec, built, gm, input_specs, opts, classification)
    extra = {"data/requests.safetensors": req_tensors}
    cache_cfg: dict[str, Any] = {"enabled": False}
    if classification and opts.fit_cache:
        cache_cfg, files = _cache(spec, built, gm, parts, opts, input_specs, progress)
        extra.update(files)
    smallest = min((p.halves for p in parts if p.halves.cloud is not None),
                   key=lambda h: sum(math.prod(w.shape) for w in h.wire), default=None)
    from codegen.split_inference import wire_entry

    probe = sum(wire_entry(w)["payload_bytes"] for w in smallest.wire) if smallest is not None else 0
    d = plan.decisions
    runtime = {
        "model": {"name": plan.model.name, "fingerprint": plan.model.fingerprint, "tiny": plan.model.tiny,
                  "task": spec.task, "classification": classification},
        "edge_device": d["edge_device"], "cloud_device": d["cloud_device"],
        "link": {"uplink_bits_per_s": d["link"]["uplink_bits_per_s"], "rtt_ms": d["link"]["rtt_ms"],
                 "downlink_bits_per_s": d["link"]["downlink_bits_per_s"]},
        "configs": conf_out,
        "plan_table": sorted(table, key=lambda r: r["uplink_bits_per_s"]),
        "adaptation": {"enabled": len({r["partition"] for r in table}) > 1, "ewma_alpha": 0.3,
                       "switch_samples": opts.switch_samples, "probe_interval_s": 1.0, "probe_bytes": int(min(probe, 1 << 18))},
        "cache": cache_cfg,
        "requests": req_entry,
        "input_ranges": ranges,
        "endpoints": {"listen": opts.listen, "connect": opts.listen},
        "transport": {"protocol": "gRPC bidirectional stream, generic handler /planner.split.Cloud/Stream",
                      "wire_version": 1, "max_in_flight": 3, "timeout_s": 30},
        "emulation": {"edge_device": d["edge_device"],
                      "note": "the edge pads each request to the partition's predicted edge_ms (labelled emulation)"},
    }
    return parts, runtime, extra


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Plain YAML-safe values (floats rounded like the plan)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = float(f"{v:.9g}") if math.isfinite(v) else None
        elif isinstance(v, (int, str, bool)) or v is None:
            out[k] = v
    return out


def emit_files(plan: Any, staging: Path, opts: EmitOptions = EmitOptions(), progress: Progress = lambda s: None) -> str:
    """Write the artifact files (all but manifest.json) into `staging`; returns a one-line summary."""
    from codegen.split_inference import write_files
    from planner.serde import dumps

    parts, runtime, extra = build_artifact(plan, opts, progress)
    rt = write_files(staging, parts, runtime, dumps(plan), extra, plan.model.name)
    return _summary(rt)


def emit(plan: Any, values: FlagValues, staging: Path, progress: Progress) -> str:
    """The family's `planner emit` entry point (flags: --seed, --requests, --semantic-cache)."""
    return emit_files(plan, staging, EmitOptions(seed=int(values["seed"]), requests=int(values["requests"]),
                                                 fit_cache=values["semantic_cache"] != "skip"), progress)


def _summary(rt: dict[str, Any]) -> str:
    parts = rt["partitions"]
    return (f"{len(parts)} partition(s) ({'; '.join(p['id'] + ': ' + (', '.join(p['cut_tensors']) or 'all on the edge') for p in parts)}), "
            "runtime.yaml, model/weights.safetensors, plan.json")


# ------------------------------------------------------------------ run
def run(artifact: Path, values: FlagValues, progress: Progress) -> RunReport:
    """The family's `planner run` entry point: --role cloud serves until interrupted (its report says so);
    --role edge drives the request stream against --connect; no role starts both as two local processes."""
    from runtime.split_inference.pipeline import EdgeOptions
    from runtime.split_inference.run import run_edge, run_local, serve_cloud

    # one torch thread per process: see runtime/split_inference/run.py
    torch.set_num_threads(1)
    role = values["role"]
    if role == "cloud":
        progress(f"serving the cloud halves on {values['listen']} (Ctrl-C to stop)")
        serve_cloud(Path(artifact), values["listen"], ready_out=_NullOut(), emulate=bool(values["emulate_cloud"]),
                    one_way_delay_s=float(values["emulate_delay"] or 0.0))
        return RunReport("{}\n", ["cloud stopped"])
    label = values["link_label"] or ("gRPC over loopback (unshaped)" if role is None else f"gRPC to {values['connect']}")
    eo = EdgeOptions(config=values["baseline"] or "plan", max_in_flight=int(values["max_in_flight"]),
                     emulate=not values["no_emulate"], cache=None if values["cache"] is None else values["cache"] == "on",
                     adapt=None if values["adapt"] is None else values["adapt"] == "on", timeout_s=float(values["timeout"]),
                     link_label=label, one_way_delay_s=float(values["emulate_delay"] or 0.0))
    count = values["requests"]
    if role == "edge":
        if not values["connect"]:
            raise PlannerError("--role edge needs --connect HOST:PORT", "pass the cloud's address")
        progress(f"running the edge against {values['connect']}")
        receipt = run_edge(Path(artifact), values["connect"], eo, count)
    else:
        progress("starting the cloud process and running the edge")
        receipt = run_local(Path(artifact), eo, count)
    return RunReport(receipt.to_json(), receipt_views(receipt))


class _NullOut:
    """Where the cloud's ready line goes under `planner run` (the progress line says where it listens)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def receipt_views(receipt: Any) -> list[Any]:
    """The receipt as rich tables: per partition stage times (measured vs predicted), then the totals."""
    from planner.tables import table

    def f(x: Any, nd: int = 3) -> str:
        if x is None:
            return "-"
        if isinstance(x, float):
            return f"{x:.{nd}g}"
        return str(x)

    # one row per stage (not per partition) so the receipt reads at 80 columns
    t = table(f"split-inference receipt: config {receipt.config}; link: {receipt.link}")
    for c in ("partition", "requests", "stage", "measured", "predicted"):
        t.add_column(c, justify="left" if c in ("partition", "stage") else "right")
    stages = (("edge ms", "edge_ms", 3), ("link ms", "link_ms", 3), ("cloud ms", "cloud_ms", 3),
              ("return ms", "return_ms", 3), ("bytes/request", "bytes_per_request", 6))
    for r in receipt.rows:
        t.add_row(r["name"], f(r["requests"]), "cut", str(r["cut"]), "", end_section=False)
        for label, key, nd in stages:
            t.add_row("", "", label, f(r.get(key), nd), f(r.get(f"{key}_predicted"), nd),
                      end_section=label == "bytes/request")
    tot = receipt.totals
    s = table("totals: measured vs predicted")
    s.add_column("figure")
    s.add_column("measured", justify="right")
    s.add_column("predicted", justify="right")
    s.add_row("throughput req/s", f(tot["throughput_rps"], 4), f(tot.get("throughput_rps_predicted"), 4))
    s.add_row("latency ms p50 / p90 / p99", f"{f(tot['latency_ms_p50'])} / {f(tot['latency_ms_p90'])} / {f(tot['latency_ms_p99'])}",
              f(tot.get("latency_ms_predicted")))
    s.add_row("bytes per request (frame / plan payload)", f(tot["bytes_per_request"], 6), f(tot.get("bytes_per_request_predicted"), 6))
    if "accuracy" in tot:
        s.add_row("accuracy (fp32 unsplit)", f"{f(tot['accuracy'], 4)} ({f(tot.get('accuracy_fp32_unsplit'), 4)})",
                  f"drop {f(tot.get('accuracy_drop_predicted'), 3)}")
    if "cache_hit_rate" in tot:
        s.add_row("semantic cache hit rate (accuracy of hits)", f"{f(tot['cache_hit_rate'], 3)} ({f(tot.get('cache_accuracy'), 3)})", "-")
    s.add_row("switches / reconnects / resent / duplicates dropped",
              f"{len(tot['switches'])} / {tot.get('reconnects', 0)} / {tot.get('resent', 0)} / {tot.get('duplicates_dropped', 0)}", "-")
    views: list[Any] = [t, s, f"emulation: {tot['emulation']}"]
    views += [f"switch after request {sw['after_request']}: {sw['from_partition']} -> {sw['to_partition']} at "
              f"{sw['measured_bits_per_s'] / 1e6:.3g} Mbit/s (row {sw['row_bits_per_s'] / 1e6:.3g} Mbit/s)" for sw in tot["switches"]]
    views += [f"flag: {fl} (differs by more than 20 %)" for fl in receipt.flags]
    return views
