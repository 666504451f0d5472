"""split-inference runtime benchmark: the plan against every baseline through the same runtime, measured.

Cells: digits-cnn (real weights and data), MiniLM (real weights) and ResNet-50 (random weights, labelled) ×
uplink 5 and 20 Mbit/s × RTT 1 and 30 ms. In each cell:

  1. the cell calibrates first, right before its plans: `planner calibrate MODEL --scenario split-inference`
     times every node here (one torch thread), this CPU's roofline constants and the runtime's per-request cost
     (runtime/split_inference/overhead.py). The CLOUD is this CPU with the constants of that same calibration
     (so the cloud's predicted node times are the measured ones, not rescaled by a second hardware measurement
     taken at another load); the EDGE is EMULATED as that profile slowed 4× (this CPU's one thread is slower
     than the catalog's edge devices, and emulation can only slow a process down). At run time the edge pads
     each request to its OWN measured compute plus 3x that compute's CPU time (`--emulate-slowdown 4`: the time
     the host preempted it counts once, not 4 times), so the emulated edge speeds up and
     slows down with the host's load exactly as the cloud does (padding to the plan's T_e instead froze the edge
     at the calibration's load while the cloud moved: a ResNet-50 plan lost its cell to that);
     Right before the cell's plans, `planner calibrate --rescale` re-times the whole forward and re-levels that
     calibration to the host's speed now (its spread widened by the drift seen): what a user can run before
     planning on their own machine; nothing from the measurement reaches the plan (`--rescale off`: as measured);
  2. two plans, `--objective throughput` and `--objective latency`, each with every baseline, are emitted;
  3. the link: two network namespaces joined by a veth pair, `tc tbf` shaping the rate (this kernel has no
     netem); the one-way delay RTT/2 is EMULATED in the runtime's transport (`--emulate-delay`: each side
     holds every received message for the delay, a delay line), labelled as such. Without root, loopback,
     unshaped, labelled;
  4. the configurations (both plans, and every baseline whose cut differs from theirs) are run interleaved,
     A B C … A B C …, `reps` times each, pipelined (3 in flight) for throughput and one at a time for
     latency, in one edge process that loads the artifacts once; medians and (min, max) reported;
  5. per stage and repetition, measured against the plan's prediction: link (transfer + delay), cloud compute,
     and the edge compute (this CPU's own compute × 4, which is what the emulated edge takes). Compute stages
     are also compared with the prediction RECALIBRATED in the same repetition: the host's speed in that
     repetition is measured by the all-edge run (edge core) and the all-cloud run (cloud core), each against
     its prediction, and every other configuration's compute stage is predicted as the calibration's time ×
     that factor. `stage_prediction_error_max` scores that (and the links against the plan);
     `stage_prediction_error_max_vs_calibration` the plain prediction, calibrated minutes earlier;
  6. after the measurement every emitted half is timed on its own, interleaved with the whole model: its share of
     the whole as it ran over the plan's share (`isolation`; the host's speed cancels, the profiler's split is left).

    nice python -m benchmarks.split_inference_runtime [--quick]     # as root, from the repository root
Writes build/bench/split_inference_runtime.json (`summary`: cells, cells_plan_at_least_best_baseline,
worst_throughput_ratio_vs_best_baseline, stage_prediction_error_max) and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NS_EDGE, NS_CLOUD = "psi_bench_edge", "psi_bench_cloud"
IP_EDGE, IP_CLOUD = "10.77.0.1", "10.77.0.2"
# The emulated devices, from CPU time (`--emulate-cpu`): each request's compute held for K x the CPU time it took
# on this CPU's core, so waiting for the shared core (other sessions' processes) is not a slower device. The
# cloud is this core slowed CLOUD_SLOWDOWN x, the edge EDGE_SLOWDOWN x (2x the cloud). A factor above 1 lets the
# pad absorb the host's contention up to wall/CPU = K; past it the stage overruns (counted per run). Chosen on a
# decision run (quick cells, 01:26 UTC, load 7, not scored): with the cloud at 2x, 42 % of MiniLM's cloud requests
# overran (wall/CPU 1.94 in the run, 2.5-3 in its calibration) and the edge at 8x never did (wall/CPU 2.73).
CLOUD_SLOWDOWN = 4.0
EDGE_SLOWDOWN = 8.0
OVERRUN_LIMIT = 0.10          # a cell whose edge or cloud overran on more requests than this: emulation not held
DOWNLINK_MBPS = 100
STAGE_FLOOR_MS = 2.0          # stages shorter than this are reported, not scored (timer and scheduler noise)
MODELS = ("digits-cnn", "minilm", "resnet50")
LINKS_MBPS = (5.0, 20.0)
RTTS_MS = (1.0, 30.0)
# requests per run: (pipelined throughput run, one-at-a-time latency run); quick mode uses the second pair
REQUESTS = {"digits-cnn": ((300, 60), (120, 24)), "minilm": ((24, 8), (12, 4)), "resnet50": ((16, 6), (9, 3))}
QUICK_CELLS = (("digits-cnn", 5.0, 1.0), ("digits-cnn", 20.0, 30.0), ("minilm", 20.0, 1.0), ("resnet50", 20.0, 30.0))


def sh(cmd: list[str], check: bool = True, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture its output."""
    return subprocess.run(cmd, check=check, capture_output=True, text=True, env=env, timeout=timeout)


def env1() -> dict[str, str]:
    """One torch thread per process, the repository on the path, the benchmark's own cache."""
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"})
    e.setdefault("PLANNER_CACHE_DIR", str(ROOT / "build" / "bench" / "cache"))
    return e


# ------------------------------------------------------------------ the link
@dataclass
class Link:
    """Two namespaces joined by a veth pair, rate-shaped with tbf; or loopback when that is not possible here."""

    mode: str = "loopback"
    label: str = ""
    base_rtt_ms: float = 0.05
    notes: list[str] = field(default_factory=list)

    def setup(self, uplink_mbps: float) -> None:
        """(Re)create the namespaces and shape the uplink (edge egress) and downlink (cloud egress)."""
        self.teardown()
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            self.mode = "loopback"
            self.label = "LOOPBACK, UNSHAPED (not root or no ip/tc here): not a shaped link"
            return
        try:
            for ns in (NS_EDGE, NS_CLOUD):
                sh(["ip", "netns", "add", ns])
            sh(["ip", "link", "add", "psi_ve", "type", "veth", "peer", "name", "psi_vc"])
            sh(["ip", "link", "set", "psi_ve", "netns", NS_EDGE])
            sh(["ip", "link", "set", "psi_vc", "netns", NS_CLOUD])
            for ns, dev, ip in ((NS_EDGE, "psi_ve", IP_EDGE), (NS_CLOUD, "psi_vc", IP_CLOUD)):
                sh(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
                sh(["ip", "-n", ns, "link", "set", dev, "up"])
                sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            for ns, dev, rate in ((NS_EDGE, "psi_ve", uplink_mbps), (NS_CLOUD, "psi_vc", DOWNLINK_MBPS)):
                burst = max(1600, int(rate * 1e6 / 8 / 250))          # 4 ms of traffic: smooth at this rate
                sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate}mbit", "burst",
                    str(burst), "latency", "2000ms"])
        except subprocess.CalledProcessError as exc:
            self.teardown()
            self.mode = "loopback"
            self.label = f"LOOPBACK, UNSHAPED (network namespaces failed: {exc.stderr.strip()[:80]})"
            return
        ping = sh(["ip", "netns", "exec", NS_EDGE, "ping", "-c", "5", "-i", "0.2", "-q", IP_CLOUD], check=False)
        for line in ping.stdout.splitlines():
            if "min/avg" in line:
                self.base_rtt_ms = float(line.split("=")[1].split("/")[1])
        self.mode = "tbf"
        self.label = (f"netns veth, tc tbf {uplink_mbps:g} Mbit/s up, {DOWNLINK_MBPS} Mbit/s down (veth ping RTT "
                      f"{self.base_rtt_ms:.3f} ms)")

    def wrap(self, side: str) -> list[str]:
        """Prefix running a process on `side`, pinned to its own core (edge 0, cloud 1)."""
        pin = ["taskset", "-c", "0" if side == "edge" else "1"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
        if self.mode == "loopback":
            return pin
        return ["ip", "netns", "exec", NS_EDGE if side == "edge" else NS_CLOUD, *pin]

    def cloud_listen(self) -> str:
        return "127.0.0.1:0" if self.mode == "loopback" else f"{IP_CLOUD}:0"

    def teardown(self) -> None:
        """Delete the namespaces (their veth ends go with them)."""
        if os.geteuid() != 0 or not shutil.which("ip"):
            return
        for ns in (NS_EDGE, NS_CLOUD):
            sh(["ip", "netns", "del", ns], check=False)


# ------------------------------------------------------------------ calibration, plans, artifacts
def hardware(out: Path, cpu: dict[str, Any]) -> tuple[Path, Path, dict[str, Any]]:
    """The cloud is this CPU with the calibration's own constants (`cpu`, measured with the node times) slowed
    CLOUD_SLOWDOWN times; the edge is that profile slowed EDGE_SLOWDOWN times (both EMULATED from CPU time)."""
    out.mkdir(parents=True, exist_ok=True)
    d = {k: v for k, v in cpu.items() if v is not None}
    cloud = dict(d, name=f"bench_cloud_cpu_div{CLOUD_SLOWDOWN:g}",
                 description=f"EMULATED cloud: this CPU's one-thread profile slowed {CLOUD_SLOWDOWN:g}x (CPU time)",
                 peak_flops_per_s={"fp32": d["peak_flops_per_s"]["fp32"] / CLOUD_SLOWDOWN},
                 memory_bandwidth_bytes_per_s=d["memory_bandwidth_bytes_per_s"] / CLOUD_SLOWDOWN)
    edge = dict(d, name=f"bench_edge_cpu_div{EDGE_SLOWDOWN:g}", kind="edge_cpu",
                description=f"EMULATED edge: this CPU's one-thread profile slowed {EDGE_SLOWDOWN:g}x",
                peak_flops_per_s={"fp32": d["peak_flops_per_s"]["fp32"] / EDGE_SLOWDOWN},
                memory_bandwidth_bytes_per_s=d["memory_bandwidth_bytes_per_s"] / EDGE_SLOWDOWN,
                downlink_bits_per_s=DOWNLINK_MBPS * 1e6)
    paths = []
    for prof in (edge, cloud):
        p = out / f"{prof['name']}.yaml"
        p.write_text("# written by benchmarks/split_inference_runtime.py\n" + yaml.safe_dump(prof, sort_keys=False))
        paths.append(p)
    return paths[0], paths[1], {"matmul_fp32_flops": d["peak_flops_per_s"]["fp32"],
                                "memory_bytes_per_s": d["memory_bandwidth_bytes_per_s"]}


def calibrate(model: str, out: Path) -> dict[str, Any]:
    """`planner calibrate MODEL --scenario split-inference` in this run (node times, this CPU's constants and the
    per-request cost), on the cloud's core."""
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
    sh([*pin, PY, "-m", "planner.cli", "calibrate", model, "--scenario", "split-inference", "--clock", "cpu",
        "-o", str(out), "--force"], env=env1(), timeout=3600)
    return yaml.safe_load(out.read_text())["measured"]


def rescale(model: str, cal: Path, out: Path) -> dict[str, Any]:
    """`planner calibrate MODEL --rescale CAL` right before a cell's plans, on the cloud's core: CAL's host-time
    figures re-levelled to the host's speed now (one whole forward re-timed, seconds), the spread widened by the
    drift since CAL. What a user can run on their own machine before planning; nothing from the measurement."""
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
    sh([*pin, PY, "-m", "planner.cli", "calibrate", model, "--scenario", "split-inference", "--rescale", str(cal),
        "-o", str(out), "--force"], env=env1(), timeout=1800)
    return yaml.safe_load(out.read_text())["measured"]


def _cli(argv: list[str]) -> None:
    """The planner's command line in this process (one torch thread; no interpreter and torch start-up per
    call, which cost ~10 s a call on the loaded machine)."""
    import torch

    from planner.cli import main as planner_main

    torch.set_num_threads(1)
    os.environ.setdefault("PLANNER_CACHE_DIR", env1()["PLANNER_CACHE_DIR"])
    code = planner_main(argv)
    if code != 0:
        raise RuntimeError(f"planner {' '.join(argv[:2])} failed with exit code {code}")


def make_plan(model: str, mbps: float, rtt_ms: float, objective: str, edge: Path, cloud: Path, out: Path,
              cal: Path) -> dict[str, Any]:
    """`planner plan --objective OBJ --calibration FILE` for this model and link."""
    _cli(["plan", model, "--hardware", str(edge), "--cloud", str(cloud), "--link", f"{mbps:g}mbps", "--rtt",
          f"{rtt_ms:g}ms", "--objective", objective, "--calibration", str(cal), "-o", str(out), "-q", "--force"])
    return json.loads(out.read_text())


def emit(plan_path: Path, out: Path, requests: int) -> dict[str, Any]:
    """`planner emit` (one thread), without fitting the semantic cache: every run here is `--cache off`, and the
    fit costs a forward per calibration input per partition (minutes for ResNet-50 on the loaded host)."""
    _cli(["emit", str(plan_path), "-o", str(out), "--force", "--requests", str(requests), "--semantic-cache", "skip"])
    return yaml.safe_load((out / "runtime.yaml").read_text())


def signature(rows: list[dict[str, Any]]) -> tuple:
    """What a configuration sends: ((tensor, bits), ...); () for all on the edge."""
    return tuple(sorted((r["name"], int(r["bits"])) for r in rows))


def configurations(thr: dict[str, Any], lat: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """[(label, artifact, config)] to run, deduplicated by what they send, and {label: label it equals}."""
    cand = [("plan_throughput", "thr", "plan", signature(thr["decisions"]["cut_tensors"])),
            ("plan_latency", "lat", "plan", signature(lat["decisions"]["cut_tensors"]))]
    cand += [(name, "thr", name, signature(b["decisions"]["cut_tensors"])) for name, b in sorted(thr["baselines"].items())]
    seen: dict[tuple, str] = {}
    runs, same = [], {}
    for label, art, config, sig in cand:
        if sig in seen:
            same[label] = seen[sig]
            continue
        seen[sig] = label
        runs.append((label, art, config))
    return runs, same


# ------------------------------------------------------------------ the edge worker (one process per cell)
def worker(spec_path: Path) -> int:
    """Run a cell's schedule in this (edge) process: artifacts loaded once, one EdgeRunner per run."""
    import torch

    from runtime.split_inference.artifact import load_artifact
    from runtime.split_inference.pipeline import EdgeOptions
    from runtime.split_inference.run import run_edge

    torch.set_num_threads(1)
    spec = json.loads(spec_path.read_text())
    arts = {k: load_artifact(Path(v["path"]), role="edge") for k, v in spec["artifacts"].items()}
    level = {"before_ms": whole_model_ms(arts["thr"])}
    out = []
    for label, art, config, mode, count, in_flight, rep in spec["schedule"]:
        # the edge: a device EDGE_SLOWDOWN x slower than this core, each request held for EDGE_SLOWDOWN x its CPU time
        opts = EdgeOptions(config=config, max_in_flight=in_flight, emulate=True, emulate_cpu=EDGE_SLOWDOWN,
                           cache=False, adapt=False, timeout_s=120.0, link_label=spec["label"],
                           one_way_delay_s=spec["delay_s"])
        rec = run_edge(Path(spec["artifacts"][art]["path"]), spec["artifacts"][art]["addr"], opts, count, arts[art])
        out.append({"label": label, "mode": mode, "rep": rep, "receipt": json.loads(rec.to_json()),
                    "load_average_1min": round(os.getloadavg()[0], 2)})
    level["after_ms"] = whole_model_ms(arts["thr"])
    out.append({"label": "_host_level", "level": level, "load_average_1min": round(os.getloadavg()[0], 2)})
    out.append({"label": "_isolation", "halves": isolation(spec), "load_average_1min": round(os.getloadavg()[0], 2)})
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


def isolation(spec: dict[str, Any], rounds: int = 3) -> list[dict[str, Any]]:
    """Each emitted half timed on its own, unpadded, in this process (edge core), interleaved with the whole model
    (the all-edge half) in every round: a half's share of the whole forward as it runs, against its share in the
    plan (the profiler's per-node split), whatever the host's speed in that round. {partition, side, measured ms
    per round, whole ms per round, predicted ms, predicted whole ms}."""
    import torch

    from runtime.split_inference import wire
    from runtime.split_inference.artifact import load_artifact
    from runtime.split_inference.run import request_stream

    out = []
    seen: set[str] = set()                  # a cut both artifacts emitted is timed once (the latency plan's
    for key, v in spec["artifacts"].items():  # baselines repeat the throughput plan's)
        art = load_artifact(Path(v["path"]), role="both")
        whole = next((p for p in art.partitions if p.all_edge and p.edge is not None), None)
        if whole is None:
            continue
        x = request_stream(art, 1).inputs[0]
        whole_pred = float(whole.predicted.get("edge_compute_ms", 0.0)) / EDGE_SLOWDOWN
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        with torch.inference_mode():
            for p in art.partitions:            # warm-up: every half once
                if p.edge is not None:
                    vals = p.edge(*x)
                    if p.cloud is not None:
                        p.cloud(*wire.decode(wire.encode_request(0, p.index, 0.0, vals)).tensors)
            for _ in range(rounds):
                t0 = time.thread_time()
                whole.edge(*x)
                w = (time.thread_time() - t0) * 1e3
                for p in art.partitions:
                    sig = json.dumps([p.info.get("cut_tensors"), p.info.get("bits")])
                    if p.all_edge or p.edge is None or (sig in seen and (p.pid, "edge") not in rows):
                        continue
                    t0 = time.thread_time()
                    vals = p.edge(*x)
                    te = (time.thread_time() - t0) * 1e3
                    tensors = wire.decode(wire.encode_request(0, p.index, 0.0, vals)).tensors
                    t0 = time.thread_time()
                    p.cloud(*tensors)
                    tc = (time.thread_time() - t0) * 1e3
                    for side, t, pred in (("edge", te, float(p.predicted.get("edge_compute_ms", 0.0)) / EDGE_SLOWDOWN),
                                          ("cloud", tc, float(p.predicted.get("cloud_compute_ms", 0.0)) / CLOUD_SLOWDOWN)):
                        r = rows.setdefault((p.pid, side), {"artifact": key, "partition": p.pid, "side": side,
                                                            "predicted_ms": pred, "predicted_whole_ms": whole_pred,
                                                            "measured_ms": [], "whole_ms": []})
                        r["measured_ms"].append(t)
                        r["whole_ms"].append(w)
        out += list(rows.values())
        seen |= {json.dumps([p.info.get("cut_tensors"), p.info.get("bits")]) for p in art.partitions}
    return out


def whole_model_ms(art: Any, calls: int = 7) -> list[float] | None:
    """The whole model's forward (the all-edge half, unpadded), `calls` times on this core right before and after
    the cell's measurement, ms: the host's speed while the cell ran, to set against the calibration's direct call
    (`forward_times_s`) minutes earlier."""
    import torch

    from runtime.split_inference.run import request_stream

    part = next((p for p in art.partitions if p.all_edge and p.edge is not None), None)
    if part is None:
        return None
    x = request_stream(art, 1).inputs[0]
    times = []
    with torch.inference_mode():
        part.edge(*x)
        for _ in range(calls):
            t0 = time.thread_time()
            part.edge(*x)
            times.append((time.thread_time() - t0) * 1e3)
    return times


def run_cell(d: Path, link: Link, delay_s: float, plans: dict[str, dict], runs: list[tuple[str, str, str]],
             n_thr: int, n_lat: int, reps: int) -> list[dict[str, Any]]:
    """Start one cloud per artifact, run the interleaved schedule in one edge process, stop the clouds."""
    from runtime.split_inference.run import spawn_cloud, stop_process

    schedule = []
    for r in range(reps):                       # A B C … for throughput, then A B C … for latency, `reps` times
        schedule += [[label, art, config, "throughput", n_thr, 3, r] for label, art, config in runs]
        schedule += [[label, art, config, "latency", n_lat, 1, r] for label, art, config in runs]
    procs, arts = [], {}
    try:
        for key in ("thr", "lat"):
            proc, addr = spawn_cloud(d / key / "build", listen=link.cloud_listen(), wrap=link.wrap("cloud"), threads=1,
                                     one_way_delay_s=delay_s, emulate_cpu=CLOUD_SLOWDOWN)
            procs.append(proc)
            arts[key] = {"path": str(d / key / "build"), "addr": addr}
        spec = {"artifacts": arts, "schedule": schedule, "delay_s": delay_s, "out": str(d / "runs.json"),
                "label": link.label + (f"; one-way delay {delay_s * 1e3:.3g} ms EMULATED in the transport"
                                       if delay_s > 0 else "")}
        (d / "schedule.json").write_text(json.dumps(spec))
        res = sh([*link.wrap("edge"), PY, "-m", "benchmarks.split_inference_runtime", "--worker", str(d / "schedule.json")],
                 check=False, env=env1(), timeout=3600)
        if res.returncode != 0:
            raise RuntimeError(f"edge worker failed: {res.stderr.strip()[-600:]}")
    finally:
        stats = []
        for key, proc in zip(("thr", "lat"), procs):
            stop_process(proc)
            stats.append({"artifact": key, **cloud_stats(proc)})
    return json.loads((d / "runs.json").read_text()) + [{"label": "_cloud_stats", "clouds": stats}]


def cloud_stats(proc: Any) -> dict[str, Any]:
    """The CloudStats line a stopped cloud printed (requests, CPU and wall seconds of its compute, overruns of the
    emulated time); {} when it printed none."""
    from runtime.split_inference.run import STATS_LINE

    try:
        text = proc.stdout.read() if proc.stdout else ""
    except (OSError, ValueError):
        return {}
    for line in text.splitlines():
        if line.startswith(STATS_LINE):
            return json.loads(line[len(STATS_LINE):])
    return {}


# ------------------------------------------------------------------ analysis
def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _predicted(plans: dict[str, dict], label: str, art: str, config: str) -> dict[str, Any]:
    p = plans[art]
    return dict(p["predicted"] if config == "plan" else p["baselines"][config]["predicted"])


def analyse(model: str, mbps: float, rtt_ms: float, plans: dict[str, dict], runs: list[tuple[str, str, str]],
            same: dict[str, str], got: list[dict[str, Any]], link: Link, delay_s: float,
            calibration_forward_ms: list[float] | None = None) -> dict[str, Any]:
    """Medians and spreads per configuration, the plans against the best baseline, stage errors, and the host's
    speed during the measurement against the calibration's."""
    level = next((g["level"] for g in got if g["label"] == "_host_level"), None)
    halves = next((g["halves"] for g in got if g["label"] == "_isolation"), [])
    clouds = next((g["clouds"] for g in got if g["label"] == "_cloud_stats"), [])
    got = [g for g in got if not g["label"].startswith("_")]
    host_level = None
    if level and level.get("before_ms") and calibration_forward_ms:
        cal = statistics.median(calibration_forward_ms)
        host_level = {"calibration_forward_ms": cal, "measured_forward_ms_before": statistics.median(level["before_ms"]),
                      "measured_forward_ms_after": statistics.median(level["after_ms"]),
                      "ratio_before": statistics.median(level["before_ms"]) / cal,
                      "ratio_after": statistics.median(level["after_ms"]) / cal,
                      "what": "the whole model's forward in CPU time (all-edge half, unpadded, edge core) right before "
                              "and after the measurement, over the calibration's direct call (cloud core, minutes earlier)"}
    where = {label: (art, config) for label, art, config in runs}
    by: dict[str, dict[str, list[dict]]] = {}
    for g in got:
        by.setdefault(g["label"], {}).setdefault(g["mode"], []).append(g)
    configs: dict[str, Any] = {}
    for label, (art, config) in where.items():
        pred = _predicted(plans, label, art, config)
        thr = [g["receipt"]["totals"]["throughput_rps"] for g in by[label]["throughput"]]
        p50 = [g["receipt"]["totals"]["latency_ms_p50"] for g in by[label]["latency"]]
        row0 = [g["receipt"]["rows"][0] for g in by[label]["throughput"] if g["receipt"]["rows"]]
        configs[label] = {"artifact": art, "config": config, "cut": row0[0]["cut"] if row0 else "",
                          "throughput_rps": _stats(thr), "latency_ms_p50": _stats(p50),
                          "throughput_rps_predicted": pred.get("throughput_rps"),
                          "latency_ms_predicted": pred.get("latency_ms"),
                          "same_as": sorted(k for k, v in same.items() if v == label)}
    stage_errors = stage_checks(plans, where, same, by)
    # a configuration that runs a baseline's cut: a baseline itself, or a plan some baseline equals
    baselines = [lab for lab, k in configs.items()
                 if not lab.startswith("plan_") or any(not x.startswith("plan_") for x in k["same_as"])]
    # a plan that sends what a baseline sends is that baseline: compare against the others, and say so
    verdicts = {}
    for plan_label, metric, better in (("plan_throughput", "throughput_rps", max), ("plan_latency", "latency_ms_p50", min)):
        label = plan_label if plan_label in configs else same.get(plan_label, plan_label)
        mine = configs[label][metric]
        rivals = [b for b in baselines if b != label]
        if not rivals:
            verdicts[plan_label] = {"ok": True, "note": "every baseline sends what the plan sends"}
            continue
        best = better(rivals, key=lambda b: configs[b][metric]["median"])
        theirs = configs[best][metric]
        tol = max(mine["max"] - mine["min"], theirs["max"] - theirs["min"]) / 2
        if metric == "throughput_rps":
            ok = mine["median"] >= theirs["median"] - tol
            ratio = mine["median"] / theirs["median"]
        else:
            ok = mine["median"] <= theirs["median"] + tol
            ratio = theirs["median"] / mine["median"]
        verdicts[plan_label] = {"ok": ok, "best_baseline": best, "ratio": ratio, "plan": mine, "baseline": theirs,
                                "tolerance": tol, "plan_runs_as": label,
                                "same_cut_as_plan": sorted(k for k, v in same.items() if v == label and not k.startswith("plan_"))}
    return {"model": model, "mbps": mbps, "rtt_ms": rtt_ms, "link": link.label,
            "delay": (f"one-way {delay_s * 1e3:.3g} ms EMULATED in the transport" if delay_s > 0 else "none"),
            "load_average_1min": [g["load_average_1min"] for g in got], "configs": configs, "same_partition": same,
            "verdicts": verdicts, "stage_errors": stage_errors, "host_level": host_level,
            "isolation": isolation_errors(halves, plans), "emulation": emulation_figures(clouds, got),
            "plan_cut": {k: [f"{r['name']}@{r['bits']}" for r in plans[k]["decisions"]["cut_tensors"]] for k in plans},
            "timing": plans["thr"]["decisions"].get("timing", "")}


def emulation_figures(clouds: list[dict[str, Any]], got: list[dict[str, Any]]) -> dict[str, Any]:
    """How well the CPU-time emulation held: the share of requests whose compute's wall time alone passed K x its CPU
    time (an overrun: there the host's contention showed through), edge per run and cloud per process, and the
    compute's wall/CPU ratio (the host's contention)."""
    edge = [(r["edge_overrun_share"], r["requests"], r["edge_compute_ms"], r["edge_cpu_ms"])
            for g in got for r in g["receipt"]["rows"] if "edge_overrun_share" in r]
    n_edge = sum(n for _, n, _, _ in edge)
    cl_req = sum(c.get("requests", 0) for c in clouds)
    cl_cpu = sum(c.get("cpu_s", 0.0) for c in clouds)
    edge_share = sum(s * n for s, n, _, _ in edge) / n_edge if n_edge else None
    cloud_share = sum(c.get("overruns", 0) for c in clouds) / cl_req if cl_req else None
    return {"held": all(x is None or x <= OVERRUN_LIMIT for x in (edge_share, cloud_share)),
            "edge_overrun_share": edge_share,
            "edge_wall_over_cpu": (sum(w * n for _, n, w, _ in edge) / sum(c * n for _, n, _, c in edge)
                                   if edge and sum(c * n for _, n, _, c in edge) > 0 else None),
            "cloud_overrun_share": cloud_share,
            "cloud_wall_over_cpu": sum(c.get("compute_s", 0.0) for c in clouds) / cl_cpu if cl_cpu > 0 else None,
            "clouds": clouds}


def isolation_errors(halves: list[dict[str, Any]], plans: dict[str, dict]) -> list[dict[str, Any]]:
    """Per half timed on its own: its share of the whole forward timed in the same round, over the share the plan
    gives it (predicted half / predicted whole, both on this CPU), minus 1; median over rounds. Host speed cancels;
    what is left is the profiler's split of the model into node times (and the half's own extra work: the edge's
    quantise, the cloud's dequantise, which the prediction includes). Halves under 2 ms are not scored."""
    out = []
    for h in halves:
        if not h["predicted_ms"] or not h["predicted_whole_ms"]:
            continue
        errs = [(m / w) / (h["predicted_ms"] / h["predicted_whole_ms"]) - 1 for m, w in zip(h["measured_ms"], h["whole_ms"])]
        level = statistics.median(w for w in h["whole_ms"]) / h["predicted_whole_ms"]
        out.append({**{k: h[k] for k in ("artifact", "partition", "side", "predicted_ms")},
                    "measured_ms_median": statistics.median(h["measured_ms"]), "host_level": level,
                    "share_error": statistics.median(errs), "scored": h["predicted_ms"] * level >= STAGE_FLOOR_MS})
    return out


def _stage_values(pred: dict[str, Any], row: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """{stage: (measured ms, predicted ms)} of one run's partition row: the edge as the emulated edge took it
    (this CPU's compute padded to EDGE_SLOWDOWN x, late wake-ups included), and where something was sent the
    link and the cloud compute."""
    out = {"edge": (row["edge_ms"], pred.get("edge_compute_ms", pred.get("edge_ms")))}
    if row.get("link_ms") is not None:
        out["link"] = (row["link_ms"], pred.get("link_ms"))
        out["cloud"] = (row["cloud_ms"], pred.get("cloud_compute_ms", pred.get("cloud_ms")))
    return out


def stage_checks(plans: dict[str, dict], where: dict[str, tuple[str, str]], same: dict[str, str],
                 by: dict[str, dict[str, list[dict]]]) -> list[dict[str, Any]]:
    """Each configuration's stages (throughput runs, median over repetitions) against the plan's prediction, and
    the compute stages against the prediction recalibrated in the same repetition: the host's speed factor of
    that repetition is the all-edge run's edge (edge core) and the all-cloud run's cloud (cloud core) over
    their predictions. Those two reference runs define the factors, so they are scored only against the plan."""
    ref = {"edge": same.get("all_edge", "all_edge"), "cloud": same.get("all_cloud", "all_cloud")}
    factor: dict[str, dict[int, float]] = {"edge": {}, "cloud": {}}
    for stage, label in ref.items():
        if label not in where:
            continue
        pred = _predicted(plans, label, *where[label])
        for g in by[label]["throughput"]:
            if g["receipt"]["rows"]:
                meas, p = _stage_values(pred, g["receipt"]["rows"][0]).get(stage, (None, None))
                if meas is not None and p:
                    factor[stage][g["rep"]] = meas / p
    errors = []
    for label, (art, config) in where.items():
        pred = _predicted(plans, label, art, config)
        per: dict[str, list[tuple[int, float, float]]] = {}
        for g in by[label]["throughput"]:
            if g["receipt"]["rows"]:
                for stage, (meas, p) in _stage_values(pred, g["receipt"]["rows"][0]).items():
                    if p:
                        per.setdefault(stage, []).append((g["rep"], meas, p))
        for stage, xs in per.items():
            meas = statistics.median(m for _, m, _ in xs)
            p = xs[0][2]
            e = {"config": label, "stage": stage, "measured_ms": meas, "predicted_ms": p,
                 "measured_ms_min": min(m for _, m, _ in xs), "measured_ms_max": max(m for _, m, _ in xs),
                 "error_vs_calibration": (meas - p) / p, "scored": p >= STAGE_FLOOR_MS}
            if stage == "link":
                e["error"] = e["error_vs_calibration"]
            elif ref[stage] == label:
                e["error"], e["reference"] = None, f"defines the {stage} core's speed factor per repetition"
            else:
                rec = [m / (p * factor[stage][r]) - 1 for r, m, _ in xs if factor[stage].get(r)]
                e["error"] = statistics.median(rec) if rec else None
                e["speed_factors"] = [round(factor[stage][r], 3) for r, _, _ in xs if factor[stage].get(r)]
            errors.append(e)
    return errors


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's headline figures."""
    scored = [e for c in cells for e in c["stage_errors"] if e["scored"]]
    recal = [abs(e["error"]) for e in scored if e.get("error") is not None]
    plain = [abs(e["error_vs_calibration"]) for e in scored]
    emu = [c.get("emulation", {}) for c in cells]
    thr_ratios = [c["verdicts"]["plan_throughput"].get("ratio") for c in cells
                  if c["verdicts"]["plan_throughput"].get("ratio") is not None]
    return {"cells": len(cells),
            "cells_plan_at_least_best_baseline": sum(all(v["ok"] for v in c["verdicts"].values()) for c in cells),
            "cells_throughput_plan_at_least_best_baseline": sum(c["verdicts"]["plan_throughput"]["ok"] for c in cells),
            "cells_latency_plan_at_least_best_baseline": sum(c["verdicts"]["plan_latency"]["ok"] for c in cells),
            "worst_throughput_ratio_vs_best_baseline": min(thr_ratios) if thr_ratios else None,
            # against the plan's own prediction (CPU-time calibration, rescaled before the plans): nothing from the
            # measurement; the per-repetition recalibration is kept beside it
            "stage_prediction_error_max": max(plain, default=None),
            "stage_prediction_error_max_vs_calibration": max(plain, default=None),
            "stage_prediction_error_max_recalibrated": max(recal, default=None),
            "stages_within_15_percent": sum(x <= 0.15 for x in plain),
            "stages_within_15_percent_recalibrated": sum(x <= 0.15 for x in recal),
            "cells_emulation_held": sum(bool(e.get("held", True)) for e in emu),
            "edge_overrun_share_max": max((e["edge_overrun_share"] for e in emu if e.get("edge_overrun_share") is not None),
                                          default=None),
            "cloud_overrun_share_max": max((e["cloud_overrun_share"] for e in emu
                                            if e.get("cloud_overrun_share") is not None), default=None),
            "stages_scored": len(scored),
            "stages_below_floor": sum(1 for c in cells for e in c["stage_errors"] if not e["scored"]),
            "isolated_half_share_error_max": max((abs(e["share_error"]) for c in cells for e in c.get("isolation", [])
                                                  if e["scored"]), default=None)}


def print_cells(cells: list[dict[str, Any]]) -> None:
    """One table per cell: each configuration's medians (min-max), then the verdicts and the stage errors."""
    for c in cells:
        print(f"\n{c['model']} @ {c['mbps']:g} Mbit/s, RTT {c['rtt_ms']:g} ms ({c['delay']}); load {c['load_average_1min'][:1]}..")
        print(f"  {'config':<18}{'cut':<30}{'req/s med (min-max)':>24}{'pred':>8}{'p50 ms med (min-max)':>26}{'pred':>8}")
        for label, k in c["configs"].items():
            t, l = k["throughput_rps"], k["latency_ms_p50"]
            same = f"  = {', '.join(k['same_as'])}" if k["same_as"] else ""
            print(f"  {label:<18}{k['cut'][:29]:<30}{t['median']:>9.4g} ({t['min']:.4g}-{t['max']:.4g})"
                  f"{k['throughput_rps_predicted'] or 0:>8.4g}{l['median']:>11.4g} ({l['min']:.4g}-{l['max']:.4g})"
                  f"{k['latency_ms_predicted'] or 0:>8.4g}{same}")
        for name, v in c["verdicts"].items():
            if "best_baseline" in v:
                print(f"  {name}: {'OK' if v['ok'] else 'LOSES'} vs {v['best_baseline']} (ratio {v['ratio']:.3f}, "
                      f"tolerance {v['tolerance']:.3g})" + (f"; same cut as {', '.join(v['same_cut_as_plan'])}"
                                                             if v["same_cut_as_plan"] else ""))
            else:
                print(f"  {name}: {v['note']}")
        em = c.get("emulation") or {}
        if em.get("edge_overrun_share") is not None or em.get("cloud_overrun_share") is not None:
            f = lambda x: "n/a" if x is None else f"{x:.3g}"  # noqa: E731
            print(f"  emulation: edge overruns {f(em.get('edge_overrun_share'))} of requests (wall/CPU "
                  f"{f(em.get('edge_wall_over_cpu'))}), cloud overruns {f(em.get('cloud_overrun_share'))} (wall/CPU "
                  f"{f(em.get('cloud_wall_over_cpu'))})" + ("" if em.get("held", True) else
                                                            f": EMULATION NOT HELD (over {OVERRUN_LIMIT:.0%})"))
        if c.get("host_level"):
            h = c["host_level"]
            print(f"  host speed: whole forward {h['measured_forward_ms_before']:.4g} ms before and "
                  f"{h['measured_forward_ms_after']:.4g} ms after the measurement vs {h['calibration_forward_ms']:.4g} "
                  f"ms calibrated (x{h['ratio_before']:.2f}, x{h['ratio_after']:.2f})")
        for e in c.get("isolation", []):
            print(f"  isolated {e['artifact']}/{e['partition']} {e['side']:<5} {e['measured_ms_median']:.4g} ms (host x"
                  f"{e['host_level']:.2f} of the plan's {e['predicted_ms']:.4g} ms): share of the whole {e['share_error']:+.0%} "
                  f"vs the plan's{'' if e['scored'] else ' (below 2 ms: not scored)'}")
        for e in c["stage_errors"]:
            recal = (e.get("reference") or "n/a") if e.get("error") is None else (
                f"{e['error']:+.0%}" + (" recalibrated per repetition" if e["stage"] != "link" else ""))
            print(f"  stage {e['stage']:<6} {e['config']:<18} meas {e['measured_ms']:.4g} ms ({e['measured_ms_min']:.4g}-"
                  f"{e['measured_ms_max']:.4g}), pred {e['predicted_ms']:.4g} ms, {e['error_vs_calibration']:+.0%} vs "
                  f"calibration, {recal}{'' if e['scored'] else ' (below 2 ms: not scored)'}")


def reanalyse(work: Path) -> list[dict[str, Any]]:
    """The cells of an earlier run, analysed again from their plans and raw receipts (no new measurement)."""
    cells = []
    for d in sorted(p for p in work.iterdir() if (p / "runs.json").is_file()):
        model, mbps, rtt = d.name.rsplit("_", 2)
        plans = {k: json.loads((d / k / "plan.json").read_text()) for k in ("thr", "lat")}
        spec = json.loads((d / "schedule.json").read_text())
        link = Link(mode="tbf", label=spec["label"].split("; one-way")[0])
        runs, same = configurations(plans["thr"], plans["lat"])
        cal = next(iter([d / "calibration_now.yaml"] if (d / "calibration_now.yaml").is_file() else
                        [d / "calibration.yaml"] if (d / "calibration.yaml").is_file()
                        else sorted(work.glob(f"{model}_*/calibration.yaml"))), None)
        fwd = yaml.safe_load(cal.read_text())["measured"].get("forward_times_s", []) if cal else []
        cells.append(analyse(model, float(mbps[:-4]), float(rtt[:-2]), plans, runs, same,
                             json.loads((d / "runs.json").read_text()), link, spec["delay_s"], [t * 1e3 for t in fwd]))
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two digits-cnn cells, one MiniLM and one ResNet-50 cell, fewer requests")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--calibrate", choices=("cell", "model"),
                    help="calibrate before every cell, or once per model (default: once per model with --quick)")
    ap.add_argument("--rescale", choices=("on", "off"), default="on",
                    help="re-level the calibration to the host's speed right before each cell's plans (`planner "
                         "calibrate --rescale`, which also widens the robust choice's spread by the drift seen); off: "
                         "plan from the calibration as measured (the previous benchmark)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--max-cells", type=int, help="stop after this many cells (a smoke test)")
    ap.add_argument("--cells", nargs="*", metavar="MODEL:MBPS:RTT_MS",
                    help="run these cells instead (e.g. resnet50:100:1 for the README's measured split)")
    ap.add_argument("--reanalyse", action="store_true", help="analyse the cells of the last run again, measure nothing")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    if a.reanalyse:
        cells = reanalyse(a.out / "split_inference_runtime")
        print_cells(cells)
        old = json.loads((a.out / "split_inference_runtime.json").read_text()) if (a.out / "split_inference_runtime.json").is_file() else {}
        report = {**old, "summary": summarise(cells), "cells": cells, "reanalysed": True}
        (a.out / "split_inference_runtime.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
        print(json.dumps(report["summary"], indent=2))
        return 0
    t_start = time.perf_counter()
    cells_todo = [c for c in QUICK_CELLS if c[0] in a.models] if a.quick else [(m, b, r) for m in a.models for b in LINKS_MBPS for r in RTTS_MS]
    if a.cells:
        cells_todo = [(m, float(b), float(r)) for m, b, r in (c.split(":") for c in a.cells)]
    cells_todo = cells_todo[:a.max_cells] if a.max_cells else cells_todo
    work = a.out / "split_inference_runtime"
    work.mkdir(parents=True, exist_ok=True)
    overheads: dict[str, Any] = {}
    cpus: dict[str, Any] = {}
    link = Link()
    cells: list[dict[str, Any]] = []
    current_mbps = None
    # quick mode calibrates each model once, in this run, before its first cell (its cells run back to back);
    # the full mode calibrates every cell right before its plans
    per_cell = a.calibrate == "cell" or (a.calibrate is None and not a.quick)
    shared: dict[str, tuple[Path, dict[str, Any]]] = {}
    rescales: dict[str, Any] = {}
    try:
        for model, mbps, rtt in cells_todo:
            n_thr, n_lat = REQUESTS[model][1 if a.quick else 0]
            if mbps != current_mbps:
                link.setup(mbps)
                current_mbps = mbps
            delay_s = max(0.0, rtt / 2 - link.base_rtt_ms / 2) / 1e3
            d = work / f"{model}_{mbps:g}mbps_{rtt:g}ms"
            cell = d.name
            t_cell = time.perf_counter()
            d.mkdir(parents=True, exist_ok=True)
            if per_cell or model not in shared:
                print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] calibrate (node times, CPU, per-request cost)", flush=True)
                cal = d / "calibration.yaml"
                shared[model] = (cal, calibrate(model, cal))
            else:
                print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] calibration of this run's first {model} cell "
                      f"({shared[model][0].parent.name})", flush=True)
            cal, measured = shared[model]
            if a.rescale == "on":
                print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] calibrate --rescale (the host's speed now)", flush=True)
                cal = d / "calibration_now.yaml"
                measured = rescale(model, shared[model][0], cal)
                rescales[cell] = measured["rescaled"] | {"speed_spread": measured["speed_spread"]}
            overheads[cell], cpus[cell] = measured.get("request_overhead"), measured["cpu"]
            edge_hw, cloud_hw, _ = hardware(d / "hw", measured["cpu"])
            plans = {}
            for key, obj in (("thr", "throughput"), ("lat", "latency")):
                (d / key).mkdir(parents=True, exist_ok=True)
                print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] plan --objective {obj}", flush=True)
                plans[key] = make_plan(model, mbps, rtt, obj, edge_hw, cloud_hw, d / key / "plan.json", cal)
                emit(d / key / "plan.json", d / key / "build", max(n_thr, n_lat))
            runs, same = configurations(plans["thr"], plans["lat"])
            t_run = time.perf_counter()
            print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] run {len(runs)} configurations x {a.reps} reps", flush=True)
            got = run_cell(d, link, delay_s, plans, runs, n_thr, n_lat, a.reps)
            cells.append(analyse(model, mbps, rtt, plans, runs, same, got, link, delay_s,
                                 [t * 1e3 for t in measured.get("forward_times_s", [])]))
            cells[-1]["wall_s"] = {"calibrate_plan_emit": round(t_run - t_cell, 1),
                                   "measure": round(time.perf_counter() - t_run, 1)}
            print(f"[{model} {mbps:g} Mbit/s RTT {rtt:g} ms] wall {cells[-1]['wall_s']}", flush=True)
            print_cells(cells[-1:])
            write_report(a, cells, per_cell, cpus, overheads, rescales, t_start, done=False)
    finally:
        link.teardown()
    report = write_report(a, cells, per_cell, cpus, overheads, rescales, t_start, done=True)
    print(json.dumps(report["summary"], indent=2))
    return 0


def write_report(a: argparse.Namespace, cells: list[dict[str, Any]], per_cell: bool, cpus: dict, overheads: dict,
                 rescales: dict, t_start: float, done: bool) -> dict[str, Any]:
    """build/bench/split_inference_runtime.json, after every cell (`complete` false until the last one)."""
    report = {"summary": summarise(cells), "complete": done, "quick": a.quick, "reps": a.reps,
              "calibration": "every cell" if per_cell else "once per model, before its first cell", "cpu": cpus, "cores": os.cpu_count(),
              "edge_slowdown": EDGE_SLOWDOWN, "cloud_slowdown": CLOUD_SLOWDOWN, "request_overhead": overheads,
              "cells": cells,
              "rescale": a.rescale, "rescaled": rescales,
              "wall_s": round(time.perf_counter() - t_start, 1),
              "note": (f"edge and cloud EMULATED from CPU time: each request's compute held for {EDGE_SLOWDOWN:g}x (edge) "
                       f"and {CLOUD_SLOWDOWN:g}x (cloud) its CPU time on this CPU's core (dedicated devices that many "
                       "times slower; overruns counted); calibration in CPU time (`planner calibrate --clock cpu`); "
                       "one-way delay EMULATED in the transport (no netem here); "
                       "rate shaped by tc tbf; models with random weights report agreement, not accuracy; "
                       "the machine is shared with other sessions (load averages recorded per run)")}
    (a.out / "split_inference_runtime.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(main())
