"""fed-compress lowering and lift: population + model + options -> `FedCompressProblem`; solution -> plan dicts.

Inputs, in the problem's order (clients sorted by the population's natural id order):

* data: scikit-learn digits split over the N clients by a seeded Dirichlet(alpha) over labels
  (`runtime/fed/data.py`, the same split the runtime trains on) gives each client's label counts;
* model: the state_dict tensor sizes P_j (bytes on the wire), FLOPs and activation bytes per sample
  (`profilers/graph.py`);
* devices: from each client's hardware profile, one local iteration at batch β costs
  `μ_i(β) = a_i + b_i·β` with, by default, the roofline `a_i = 4·param_bytes / BW_mem` (read weights,
  write gradients, update) and `b_i = max(3·F / FLOP/s, 3·A / BW_mem)` (forward + backward ≈ 3×
  forward); with a calibration (`calibrate_training`) a_i and b_i are this CPU's measured fit scaled
  by `compute_scale_i = CPU FLOP/s / device FLOP/s` (the same scale the runtime's emulation uses);
  training memory is `3·param_bytes` (weights, gradients, update temporaries) plus `2·A` per sample
  (activations kept for backward and their gradients); links are the population's up/downlink;
  `round_overhead_s` is a fixed per-round latency (an assumption, shown in the plan);
* participation: `sample_participation(N, rounds, participation, seed)`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from core.errors import PlannerError
from solvers.fed_compress.caesar import CaesarConfig
from solvers.fed_compress.problem import FedCompressProblem, FedCompressSolution, sample_participation

ROUND = 6   # decimals kept for ratios and seconds in plans (byte-identical plans for identical inputs)


@dataclass(frozen=True)
class FedCompressOptions:
    """What the user chose (CLI flags): schedule, data split, training, Caesar's ratio ranges, batch grid.

    Ratios here are FRACTIONS KEPT, as users read them: the download keeps at least
    `min_download_ratio` (Caesar's θ_d_max = 1 − it) and the upload keeps between
    `min_upload_ratio` and `max_upload_ratio` (θ_u_max = 1 − min, θ_u_min = 1 − max).
    """

    rounds: int = 20
    participation: float = 0.2
    alpha: float = 0.3
    seed: int = 0
    local_iters: int = 20
    lr: float = 0.1
    batch_min: int = 8
    batch_max: int = 64
    round_overhead_s: float = 0.02
    min_download_ratio: float = 0.5
    min_upload_ratio: float = 0.5
    max_upload_ratio: float = 0.9
    ratio_step: float = 0.05
    batch_method: str = "convex"
    down_budget_bytes: float | None = None
    calibration: Mapping[str, float] | None = field(default=None, compare=False)

    def check(self) -> None:
        """One-line errors naming the flag for values that make no sense."""
        for flag, v in (("--min-download-ratio", self.min_download_ratio), ("--min-upload-ratio", self.min_upload_ratio),
                        ("--max-upload-ratio", self.max_upload_ratio)):
            if not 0.0 < v <= 1.0:
                raise PlannerError(f"{flag} is {v:g}, outside (0, 1]",
                                   f"give {flag} as the fraction of values kept, e.g. 0.5 (1 = uncompressed)")
        if self.min_upload_ratio > self.max_upload_ratio:
            raise PlannerError(f"--min-upload-ratio {self.min_upload_ratio:g} is above --max-upload-ratio "
                               f"{self.max_upload_ratio:g}", "give a range with min <= max")
        if not 0.0 < self.participation <= 1.0:
            raise PlannerError(f"--participation is {self.participation:g}, outside (0, 1]",
                               "give the fraction of clients selected per round, e.g. 0.2")
        if self.rounds < 1 or self.local_iters < 1:
            raise PlannerError("--rounds and --local-iters must be at least 1", "give positive whole numbers")
        if not 1 <= self.batch_min <= self.batch_max:
            raise PlannerError(f"batch range {self.batch_min}..{self.batch_max} is empty",
                               "give --batch-min <= --batch-max, both >= 1")
        if self.alpha <= 0:
            raise PlannerError(f"--alpha is {self.alpha:g}", "give a positive Dirichlet concentration, e.g. 0.3")
        if self.down_budget_bytes is not None and self.down_budget_bytes <= 0:
            raise PlannerError("--down-budget must be positive", "give a size per round, like 5MB")

    def caesar_config(self) -> CaesarConfig:
        """The solver's settings (θ = 1 − kept fraction)."""
        return CaesarConfig(mode="budget" if self.down_budget_bytes is not None else "rule",
                            theta_d_max=round(1.0 - self.min_download_ratio, 10),
                            theta_u_min=round(1.0 - self.max_upload_ratio, 10),
                            theta_u_max=round(1.0 - self.min_upload_ratio, 10),
                            ratio_grid_step=self.ratio_step, batch_method=self.batch_method)


@dataclass(frozen=True)
class ClientInputs:
    """One client's lowered inputs (plan JSON carries these as `decisions.population`)."""

    id: str
    index: int
    hardware: str
    samples: int
    label_counts: tuple[int, ...]
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float
    memory_bytes: int
    flops_per_s: float
    iter_fixed_s: float
    iter_per_sample_s: float
    compute_scale: float | None


@dataclass(frozen=True)
class ModelCosts:
    """What the model costs per training sample and per iteration (from the graph profile)."""

    tensor_names: tuple[str, ...]
    tensor_numels: tuple[int, ...]
    param_bytes: int
    flops_per_sample: float          # forward
    activation_bytes_per_sample: float


def model_costs(spec: Any) -> ModelCosts:
    """Tensor sizes (state_dict order), parameter bytes, forward FLOPs and activation bytes per sample."""
    from profilers.digits_cnn import DigitsCNN
    from profilers.graph import capture, profile_graph
    from profilers.models import BuiltModel, example_inputs

    # An untrained module: only shapes and costs matter (the catalog's digits-cnn would train on first use).
    module = DigitsCNN().eval()
    args, kwargs = example_inputs(spec, None, False, "cpu", 1, None)
    nodes = profile_graph(capture(BuiltModel(spec, module, args, kwargs, False, "cpu")))
    sd = module.state_dict()
    param_bytes = sum(int(t.numel()) * t.element_size() for t in sd.values())
    return ModelCosts(tuple(sd), tuple(int(t.numel()) for t in sd.values()), int(param_bytes),
                      float(sum(n.flops for n in nodes)),
                      float(sum(0 if n.is_view else n.output_bytes for n in nodes)))


def label_counts_for(num_clients: int, alpha: float, seed: int, source: str) -> np.ndarray:
    """(N, 10) label counts of the digits Dirichlet split (the runtime's split)."""
    from runtime.fed.data import dirichlet_partition, load_digits_split

    data = load_digits_split(seed)
    if num_clients > len(data.y_train):
        raise PlannerError(f"{source} has {num_clients} clients but digits has only {len(data.y_train)} training "
                           "samples, so some client would have no data", f"use at most {len(data.y_train)} clients")
    parts = dirichlet_partition(data.y_train, num_clients, alpha, seed)
    counts = np.zeros((num_clients, 10), dtype=np.int64)
    for i, idx in enumerate(parts):
        counts[i] = np.bincount(data.y_train[idx], minlength=10)
    return counts


def lower(spec: Any, population: Any, options: FedCompressOptions,
          costs: ModelCosts | None = None) -> tuple[FedCompressProblem, list[ClientInputs], ModelCosts]:
    """Build the problem (see the module docstring); raises PlannerError on bad input."""
    options.check()
    if getattr(spec, "kind", "") != "digits-cnn":
        raise PlannerError(f"fed-compress trains on scikit-learn digits, which model {spec.name} does not take",
                           "plan digits-cnn with --scenario fed-compress")
    costs = costs or model_costs(spec)
    devices = list(population.devices)
    n = len(devices)
    counts = label_counts_for(n, options.alpha, options.seed, population.source)
    for dev, row in zip(devices, counts):
        if row.sum() < 1:
            raise PlannerError(f"client {dev.id} has no training data", "use fewer clients or a larger --alpha")
    cal = options.calibration
    clients = []
    for i, (dev, row) in enumerate(zip(devices, counts)):
        hw = dev.hardware
        for what, bw in (("uplink", dev.uplink_bits_per_s), ("downlink", dev.downlink_bits_per_s)):
            if not bw or bw <= 0:
                raise PlannerError(f"{population.source}: device {dev.id} has {what} bandwidth {bw}",
                                   f"give it a positive '{what}' or 'link' (e.g. 20mbps)")
        flops = hw.flops_per_s("fp32")
        if cal is not None:
            scale = float(cal["cpu_flops_per_s"]) / flops
            a, b = float(cal["iter_fixed_s"]) * scale, float(cal["iter_per_sample_s"]) * scale
        else:
            scale = None
            bw_mem = hw.bandwidth_bytes_per_s()
            a = 4.0 * costs.param_bytes / bw_mem
            b = max(3.0 * costs.flops_per_sample / flops, 3.0 * costs.activation_bytes_per_sample / bw_mem)
        clients.append(ClientInputs(id=dev.id, index=i, hardware=hw.name, samples=int(row.sum()),
                                    label_counts=tuple(int(v) for v in row),
                                    uplink_bytes_per_s=dev.uplink_bits_per_s / 8.0,
                                    downlink_bytes_per_s=dev.downlink_bits_per_s / 8.0,
                                    memory_bytes=int(dev.memory_bytes), flops_per_s=flops, iter_fixed_s=a,
                                    iter_per_sample_s=b, compute_scale=scale))
    problem = FedCompressProblem(
        client_ids=tuple(c.id for c in clients),
        label_counts=counts,
        tensor_numels=costs.tensor_numels,
        iter_fixed_s=np.array([c.iter_fixed_s for c in clients]),
        iter_per_sample_s=np.array([c.iter_per_sample_s for c in clients]),
        downlink_bytes_per_s=np.array([c.downlink_bytes_per_s for c in clients]),
        uplink_bytes_per_s=np.array([c.uplink_bytes_per_s for c in clients]),
        latency_s=np.full(n, options.round_overhead_s),
        memory_bytes=np.array([c.memory_bytes for c in clients], dtype=float),
        train_fixed_bytes=3.0 * costs.param_bytes,
        train_bytes_per_sample=2.0 * costs.activation_bytes_per_sample,
        selected=sample_participation(n, options.rounds, options.participation, options.seed),
        batch_grid=tuple(range(options.batch_min, options.batch_max + 1)),
        local_iters=options.local_iters,
        down_budget_bytes=options.down_budget_bytes,
    )
    return problem, clients, costs


# ---------------------------------------------------------------- lift
def _r(x: float) -> float:
    return round(float(x), ROUND)


def _sig(x: float) -> float:
    """9 significant digits: per-sample step times are ~1e-5 s, so fixed decimals would lose them."""
    return float(f"{float(x):.9g}")


def codec_of(sol: FedCompressSolution, problem: FedCompressProblem) -> dict[str, Any]:
    """How a configuration encodes (plain data for the plan and the runtime)."""
    return {"download": sol.down_codec, "upload": sol.up_codec, "error_feedback": bool(sol.error_feedback),
            "recovery": bool(sol.recovery), "quant_bits": int(sol.quant_bits),
            "min_compress_numel": int(problem.min_compress_numel)}


def schedule_of(problem: FedCompressProblem, sol: FedCompressSolution) -> list[dict[str, Any]]:
    """Per round: every selected client's kept fractions, batch, staleness and predicted bytes and time."""
    m = sol.metrics
    last = np.zeros(problem.num_clients, dtype=np.int64)
    out = []
    for r, sel in enumerate(problem.selected):
        t = r + 1
        clients = {}
        for i in sel:
            clients[problem.client_ids[i]] = {
                "download_ratio": _r(sol.keep_down[r, i]), "upload_ratio": _r(sol.keep_up[r, i]),
                "batch_size": int(sol.batch[r, i]), "staleness": int(t - last[i]),
                "predicted": {"bytes_down": float(m.bytes_down[r, i]), "bytes_up": float(m.bytes_up[r, i]),
                              "time_s": _r(m.time_s[r, i]), "waiting_s": _r(m.waiting_s[r, i])}}
        last[list(sel)] = t
        out.append({"round": t, "clients": clients, "traffic_bytes": float(m.traffic_bytes[r]),
                    "round_time_s": _r(m.round_time_s[r])})
    return out


def last_participation(schedule: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each client's decisions in the last round it is selected (clients never selected are absent)."""
    out: dict[str, dict[str, Any]] = {}
    for r in schedule:
        for cid, c in r["clients"].items():
            out[cid] = {"round": r["round"], "download_ratio": c["download_ratio"], "upload_ratio": c["upload_ratio"],
                        "batch_size": c["batch_size"], "staleness": c["staleness"]}
    return dict(sorted(out.items()))


def predicted_of(problem: FedCompressProblem, sol: FedCompressSolution) -> dict[str, Any]:
    """Schedule-level predictions (means over the planned rounds)."""
    m = sol.metrics
    mask = problem.selected_mask()
    return {"traffic_bytes_per_round": _r(m.mean_traffic_bytes_per_round), "round_time_s": _r(m.mean_round_time_s),
            "total_traffic_bytes": float(m.total_traffic_bytes), "total_time_s": _r(m.total_time_s),
            "download_bytes": float(m.bytes_down.sum()), "upload_bytes": float(m.bytes_up.sum()),
            "mean_download_ratio": _r(sol.keep_down[mask].mean()), "mean_upload_ratio": _r(sol.keep_up[mask].mean()),
            "samples_per_s": _r(m.samples_per_s.mean()), "mean_waiting_s": _r(m.waiting_s[mask].mean()),
            "full_model_bytes": int(problem.full_model_bytes)}


def decisions_of(problem: FedCompressProblem, sol: FedCompressSolution, clients: Sequence[ClientInputs] | None,
                 options: FedCompressOptions) -> dict[str, Any]:
    """The plan's (or a baseline's, with `clients=None`) decisions as plain JSON-able data."""
    schedule = schedule_of(problem, sol)
    out: dict[str, Any] = {"clients": last_participation(schedule), "rounds": schedule, "codec": codec_of(sol, problem)}
    if clients is not None:
        out["population"] = [{**{k: (_sig(v) if isinstance(v, float) else v) for k, v in asdict(c).items()},
                              "label_counts": list(c.label_counts), "latency_s": _r(options.round_overhead_s)}
                             for c in clients]
        out["data"] = {"dataset": "digits (scikit-learn)", "alpha": options.alpha, "split_seed": options.seed,
                       "num_clients": problem.num_clients}
        out["training"] = {"local_iters": options.local_iters, "lr": options.lr, "optimizer": "SGD"}
        out["tensors"] = list(problem.tensor_numels)
    return out


# ---------------------------------------------------------------- plan validator
def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(a)), abs(float(b)))


def validate_schedule(name: str, rounds: Sequence[Mapping[str, Any]], codec: Mapping[str, Any],
                      population: Mapping[str, Mapping[str, Any]], constraints: Mapping[str, Any],
                      tensors: Sequence[int], feasible: bool) -> list[str]:
    """Every constraint of one configuration's schedule, from plan data alone (see `validate_plan_decisions`)."""
    from solvers.fed_compress.cost import download_bytes, quant_bytes, upload_bytes

    out: list[str] = []
    fixed, per_sample = float(constraints["train_fixed_bytes"]), float(constraints["train_bytes_per_sample"])
    bmin, bmax = int(constraints["batch_min"]), int(constraints["batch_max"])
    budget = constraints.get("down_budget_bytes")
    mnc = int(codec.get("min_compress_numel", 1024))
    last: dict[str, int] = {}
    for r in rounds:
        t = int(r["round"])
        times, down_total, traffic = [], 0.0, 0.0
        for cid, c in r["clients"].items():
            where = f"{name}: round {t}, client {cid}"
            if cid not in population:
                out.append(f"{where}: not in the population")
                continue
            kd, ku, b = float(c["download_ratio"]), float(c["upload_ratio"]), int(c["batch_size"])
            for what, v in (("download_ratio", kd), ("upload_ratio", ku)):
                if not 0.0 < v <= 1.0:
                    out.append(f"{where}: {what} {v} outside (0, 1]")
            if not bmin <= b <= bmax:
                out.append(f"{where}: batch {b} outside {bmin}..{bmax}")
            if feasible and fixed + per_sample * b > float(population[cid]["memory_bytes"]) * (1 + 1e-9):
                out.append(f"{where}: batch {b} needs {fixed + per_sample * b:.0f} B of training memory, "
                           f"the device has {population[cid]['memory_bytes']}")
            if int(c["staleness"]) != t - last.get(cid, 0):
                out.append(f"{where}: staleness {c['staleness']} but the schedule says {t - last.get(cid, 0)}")
            last[cid] = t
            p = c["predicted"]
            want_down = download_bytes(tensors, kd, mnc) if 0 < kd <= 1 else -1
            want_up = (quant_bytes(tensors, int(codec["quant_bits"]), mnc) if codec["upload"] == "quant"
                       else upload_bytes(tensors, ku, mnc) if 0 < ku <= 1 else -1)
            if p["bytes_down"] != want_down or p["bytes_up"] != want_up:
                out.append(f"{where}: predicted bytes {p['bytes_down']:.0f}/{p['bytes_up']:.0f} differ from the "
                           f"codec's {want_down}/{want_up}")
            dev = population[cid]
            comm = (p["bytes_down"] / float(dev["downlink_bytes_per_s"]) + p["bytes_up"] / float(dev["uplink_bytes_per_s"])
                    + float(dev["latency_s"]))
            if float(p["time_s"]) < comm * (1 - 1e-5):
                out.append(f"{where}: predicted time {p['time_s']} s is below its transfer time {comm:.6g} s")
            times.append(float(p["time_s"]))
            down_total += p["bytes_down"]
            traffic += p["bytes_down"] + p["bytes_up"]
        if times and not _close(max(times), r["round_time_s"], 1e-5):
            out.append(f"{name}: round {t}: round time {r['round_time_s']} is not the slowest client's {max(times)}")
        for cid, c in r["clients"].items():
            if times and not _close(float(c["predicted"]["waiting_s"]) + float(c["predicted"]["time_s"]),
                                    float(r["round_time_s"]), 1e-5):
                out.append(f"{name}: round {t}, client {cid}: waiting time disagrees with the round time")
        if not _close(traffic, r["traffic_bytes"], 1e-12):
            out.append(f"{name}: round {t}: traffic {r['traffic_bytes']} is not the sum of its clients' {traffic}")
        if feasible and budget is not None and down_total > float(budget) * (1 + 1e-9):
            out.append(f"{name}: round {t}: download {down_total:.0f} B exceeds the budget {budget:.0f} B")
    return out


def validate_plan_decisions(decisions: Mapping[str, Any], predicted: Mapping[str, Any], constraints: Mapping[str, Any],
                            baselines: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Every constraint a fed-compress plan states, checked from the plan alone (empty when valid): ratios in
    (0, 1], batches in range and within each device's memory, staleness as the schedule implies, predicted
    bytes equal to the codecs' byte formulas, round and waiting times consistent, the downlink budget, and
    the schedule-level predictions equal to the rounds'."""
    population = {c["id"]: c for c in decisions["population"]}
    tensors = [int(p) for p in decisions["tensors"]]
    out = validate_schedule("plan", decisions["rounds"], decisions["codec"], population, constraints, tensors, True)
    rounds = decisions["rounds"]
    if rounds and not _close(float(predicted["traffic_bytes_per_round"]),
                             sum(r["traffic_bytes"] for r in rounds) / len(rounds), 1e-5):
        out.append("plan: predicted traffic per round is not the mean of the rounds'")
    for cid, c in decisions["clients"].items():
        r = next((x for x in rounds if x["round"] == c["round"]), None)
        entry = r["clients"].get(cid) if r else None
        if entry is None or (entry["download_ratio"], entry["upload_ratio"], entry["batch_size"]) != \
                (c["download_ratio"], c["upload_ratio"], c["batch_size"]):
            out.append(f"plan: clients.{cid} is not its last scheduled participation")
    for name, b in (baselines or {}).items():
        d = b["decisions"]
        out += validate_schedule(name, d["rounds"], d["codec"], population, constraints, tensors,
                                 bool(b["predicted"].get("feasible", True)))
    out += validate_recommendation(decisions, predicted, baselines or {})
    return out


def validate_recommendation(decisions: Mapping[str, Any], predicted: Mapping[str, Any],
                            baselines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The recommended configuration exists, is feasible and has the least predicted traffic to target among
    the feasible configurations that have one (plans from before the recommendation have none: nothing to check)."""
    best = decisions.get("recommended")
    if best is None:
        return []
    rows = {"plan": {**predicted, "feasible": True}, **{n: b["predicted"] for n, b in baselines.items()}}
    if best not in rows:
        return [f"recommended configuration {best!r} is neither the plan nor a baseline"]
    ttt = {n: p.get("traffic_to_target_bytes") for n, p in rows.items() if p.get("feasible", True)}
    ttt = {n: float(v) for n, v in ttt.items() if v is not None}
    if best not in ttt:
        return [f"recommended configuration {best} has no predicted traffic to target or is infeasible"]
    beaten = sorted(n for n, v in ttt.items() if v < ttt[best] * (1 - 1e-9))
    return [f"recommended {best} but {', '.join(beaten)} predict less traffic to target"] if beaten else []
