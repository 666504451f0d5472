"""split-inference runtime benchmark: COACH vs Neurosurgeon through the same runtime on a shaped link, measured.

For digits-cnn (real weights and data), MiniLM (real weights) and ResNet-50 (random weights, labelled) on a
5 and a 20 Mbit/s uplink:

  1. hardware: this CPU is measured with one torch thread (`planner hardware measure`) and is the CLOUD
     (the runtime's cloud process runs here); the EDGE is EMULATED as this CPU's profile slowed 4x (no
     catalog edge can be emulated here: this CPU's single thread (≈35 GFLOP/s) is slower than e.g. the
     Raspberry Pi 5 profile (92 GFLOP/s effective), and emulation can only slow a process down);
  2. plan: `planner calibrate MODEL --scenario split-inference` once (per-node times measured on this CPU
     with one thread), then `planner plan MODEL --hardware edge.yaml --cloud cloud.yaml --link R --rtt RTT
     --calibration FILE` (the node times scaled to each profile);
  3. emit the plan (every baseline's partition included) and run the plan's and Neurosurgeon's
     configuration through the runtime: the cloud in one network namespace, the edge in another, joined
     by a veth pair shaped by the benchmark (tc netem rate + delay when the kernel has netem, else tc tbf
     rate only, labelled; loopback with a label when namespaces are not available); the edge pads its
     stage to the plan's T_e (labelled emulation);
  4. throughput (pipelined, 3 requests in flight) and latency percentiles (one request at a time), next
     to the plan's predicted 1/P and latency; bytes per request; accuracy (digits) or agreement with the
     unsplit model; the semantic cache's hit rate, accuracy and throughput on real digits.

    nice python -m benchmarks.split_inference_runtime      # as root, from the repository root (~20 min)
Writes build/bench/split_inference_runtime.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.split_inference.run import spawn_cloud, stop_process

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NS_EDGE, NS_CLOUD = "psi_bench_edge", "psi_bench_cloud"
IP_EDGE, IP_CLOUD = "10.77.0.1", "10.77.0.2"
EDGE_SLOWDOWN = 4.0
DOWNLINK_MBPS = 100
MODELS = {"digits-cnn": (300, 100), "minilm": (24, 10), "resnet50": (20, 8)}   # requests: throughput run, latency run
LINKS_MBPS = (5, 20)


def sh(cmd: list[str], check: bool = True, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture its output."""
    return subprocess.run(cmd, check=check, capture_output=True, text=True, env=env, timeout=timeout)


# ------------------------------------------------------------------ the link
@dataclass
class Link:
    """Two namespaces joined by a veth pair, shaped; or loopback when that is not possible here."""

    mode: str = "loopback"
    label: str = ""
    rtt_ms: float = 1.0
    notes: list[str] = field(default_factory=list)

    def setup(self, uplink_mbps: float, delay_ms: float) -> None:
        """(Re)create the namespaces and shape the uplink (edge egress) and downlink (cloud egress)."""
        self.teardown()
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            self.mode, self.rtt_ms = "loopback", 1.0
            self.label = "LOOPBACK, UNSHAPED (not root or no ip/tc here): link figures are not a 5/20 Mbit/s link"
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
        except subprocess.CalledProcessError as exc:
            self.teardown()
            self.mode, self.rtt_ms = "loopback", 1.0
            self.label = f"LOOPBACK, UNSHAPED (network namespaces failed: {exc.stderr.strip()[:80]})"
            return
        up = ["tc", "-n", NS_EDGE, "qdisc", "add", "dev", "psi_ve", "root"]
        down = ["tc", "-n", NS_CLOUD, "qdisc", "add", "dev", "psi_vc", "root"]
        netem = sh(up + ["netem", "rate", f"{uplink_mbps}mbit", "delay", f"{delay_ms}ms", "limit", "100000"], check=False)
        if netem.returncode == 0:
            sh(down + ["netem", "rate", f"{DOWNLINK_MBPS}mbit", "delay", f"{delay_ms}ms", "limit", "100000"])
            self.mode, self.rtt_ms = "netem", 2 * delay_ms
            self.label = (f"netns veth, tc netem: uplink {uplink_mbps} Mbit/s, downlink {DOWNLINK_MBPS} Mbit/s, "
                          f"{delay_ms} ms each way")
            return
        # netem is not in this kernel: shape the rate with a token bucket; no added delay
        for cmd, rate in ((up, uplink_mbps), (down, DOWNLINK_MBPS)):
            burst = max(1600, int(rate * 1e6 / 8 / 250))          # 4 ms of traffic: smooth at this rate
            sh(cmd + ["tbf", "rate", f"{rate}mbit", "burst", str(burst), "latency", "2000ms"])
        ping = sh(["ip", "netns", "exec", NS_EDGE, "ping", "-c", "5", "-i", "0.2", "-q", IP_CLOUD], check=False)
        rtt = 1.0
        for line in ping.stdout.splitlines():
            if "min/avg" in line:
                rtt = float(line.split("=")[1].split("/")[1])
        self.mode, self.rtt_ms = "tbf", max(1.0, round(rtt, 2))
        self.label = (f"netns veth, tc tbf (netem is not available in this kernel: '{netem.stderr.strip()[:60]}'): "
                      f"uplink {uplink_mbps} Mbit/s, downlink {DOWNLINK_MBPS} Mbit/s, no added delay "
                      f"(veth ping RTT {rtt:.3f} ms; plans use --rtt {self.rtt_ms:g}ms)")

    def wrap(self, side: str) -> list[str]:
        """Command prefix that runs a process on `side` ("edge" or "cloud"), pinned to its own core so the
        edge's real compute does not take CPU time from the cloud (both live on this one machine)."""
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


# ------------------------------------------------------------------ hardware, plans, artifacts
def env1() -> dict[str, str]:
    """One torch thread per process, the repository on the path, the benchmark's own cache."""
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"})
    e.setdefault("PLANNER_CACHE_DIR", str(ROOT / "build" / "bench" / "cache"))
    return e


def hardware(out: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Measure this CPU (one thread) as the cloud; the edge is that profile slowed EDGE_SLOWDOWN times."""
    out.mkdir(parents=True, exist_ok=True)
    measured = out / "this_cpu_1thread.yaml"
    sh([PY, "-m", "planner.cli", "hardware", "measure", "-o", str(measured), "--name", "this_cpu_1thread"], env=env1())
    d = yaml.safe_load(measured.read_text())
    cloud = dict(d, name="bench_cloud_this_cpu", description="this CPU, one torch thread (measured): the benchmark's cloud")
    edge = dict(d, name="bench_edge_cpu_div4", kind="edge_cpu",
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


def calibrate(model: str, out: Path) -> Path:
    """`planner calibrate MODEL --scenario split-inference` (one thread): per-node times on this CPU."""
    if not out.exists():
        sh([PY, "-m", "planner.cli", "calibrate", model, "--scenario", "split-inference", "-o", str(out)], env=env1(),
           timeout=3600)
    return out


def make_plan(model: str, mbps: float, rtt_ms: float, edge: Path, cloud: Path, out: Path, cal: Path) -> dict[str, Any]:
    """`planner plan --calibration` for this model and link."""
    cmd = [PY, "-m", "planner.cli", "plan", model, "--hardware", str(edge), "--cloud", str(cloud), "--link",
           f"{mbps:g}mbps", "--rtt", f"{rtt_ms:g}ms", "--calibration", str(cal), "-o", str(out), "-q", "--force"]
    t0 = time.perf_counter()
    sh(cmd, env=env1(), timeout=3600)
    plan = json.loads(out.read_text())
    plan["_plan_s"] = time.perf_counter() - t0
    return plan


def emit(plan_path: Path, out: Path, requests: int) -> dict[str, Any]:
    """`planner emit` (one thread)."""
    sh([PY, "-m", "planner.cli", "emit", str(plan_path), "-o", str(out), "--force", "--requests", str(requests)],
       env=env1(), timeout=3600)
    return yaml.safe_load((out / "runtime.yaml").read_text())


# ------------------------------------------------------------------ runs
def start_cloud(art: Path, link: Link) -> tuple[subprocess.Popen, str]:
    """The cloud role as a child process in the cloud namespace; returns it and its address."""
    return spawn_cloud(art, listen=link.cloud_listen(), wrap=link.wrap("cloud"), threads=1)


def run_edge(art: Path, addr: str, link: Link, out: Path, config: str, requests: int, in_flight: int,
             cache: bool = False) -> dict[str, Any]:
    """One edge run (child process in the edge namespace); returns the receipt."""
    cmd = [*link.wrap("edge"), PY, "-m", "runtime.split_inference.run", str(art), "--role", "edge", "--connect", addr,
           "--config", config, "--requests", str(requests), "--max-in-flight", str(in_flight), "--threads", "1",
           "--link-label", link.label, "--json", str(out), "--timeout", "120", "--cache", "on" if cache else "off",
           "--adapt", "off"]
    res = sh(cmd, check=False, env=env1(), timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"edge run failed: {res.stderr.strip()[-400:]}")
    return json.loads(out.read_text())


def summary(rec: dict[str, Any]) -> dict[str, Any]:
    t = rec["totals"]
    row = rec["rows"][0] if rec["rows"] else {}
    keys = ("throughput_rps", "throughput_rps_predicted", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
            "latency_ms_predicted", "bytes_per_request", "bytes_per_request_predicted", "accuracy", "accuracy_fp32_unsplit",
            "agreement_with_fp32", "mean_cosine_to_fp32", "cache_hit_rate", "cache_accuracy", "answered_by",
            "accuracy_drop_predicted", "handshake_rtt_ms")
    out = {k: t.get(k) for k in keys}
    out.update({f"{k}": row.get(k) for k in ("cut", "edge_ms", "edge_compute_ms", "edge_ms_predicted", "link_ms",
                                               "link_ms_predicted", "cloud_ms", "cloud_ms_predicted", "return_ms")})
    return out


def rel(m: float | None, p: float | None) -> str:
    if m is None or p in (None, 0):
        return "-"
    return f"{(m - p) / p:+.0%}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--links", nargs="*", type=float, default=list(LINKS_MBPS))
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay when netem is available")
    a = ap.parse_args()
    work = a.out / "split_inference_runtime"
    work.mkdir(parents=True, exist_ok=True)
    edge_hw, cloud_hw, cpu = hardware(work / "hw")
    link = Link()
    results: list[dict[str, Any]] = []
    try:
        for model in a.models:
            n_thr, n_lat = MODELS[model]
            for mbps in a.links:
                link.setup(mbps, a.delay_ms)
                d = work / f"{model}_{mbps:g}mbps"
                d.mkdir(exist_ok=True)
                print(f"[{model} @ {mbps:g} Mbit/s] plan ({link.mode})", flush=True)
                cal = calibrate(model, work / f"{model}.calibration.yaml")
                plan = make_plan(model, mbps, link.rtt_ms, edge_hw, cloud_hw, d / "plan.json", cal)
                print(f"[{model} @ {mbps:g} Mbit/s] emit", flush=True)
                rt = emit(d / "plan.json", d / "build", max(n_thr, n_lat))
                configs = rt["configs"]
                runs = [("plan", False), ("neurosurgeon", False)]
                if rt["model"].get("classification") and rt.get("cache", {}).get("partitions") and model == "digits-cnn":
                    cached = "plan" if configs["plan"]["partition"] in rt["cache"]["partitions"] else "all_cloud"
                    runs += [(cached, False), (cached, True)] if cached != "plan" else [("plan", True)]
                proc, addr = start_cloud(d / "build", link)
                try:
                    seen: dict[tuple[str, bool], dict[str, Any]] = {}
                    for config, cache in runs:
                        key = (configs[config]["partition"], cache)
                        if key in seen:
                            results.append({**seen[key], "config": config, "same_partition_as": seen[key]["config"]})
                            continue
                        print(f"[{model} @ {mbps:g} Mbit/s] run {config}{' +cache' if cache else ''}", flush=True)
                        thr = run_edge(d / "build", addr, link, d / f"{config}{'_cache' if cache else ''}_thr.json", config,
                                       n_thr, 3, cache)
                        lat = run_edge(d / "build", addr, link, d / f"{config}{'_cache' if cache else ''}_lat.json", config,
                                       n_lat, 1, cache)
                        r = {"model": model, "mbps": mbps, "config": config, "cache": cache, "link": link.label,
                             "load_average_1min": round(os.getloadavg()[0], 2),
                             "partition": key[0], "throughput_run": summary(thr), "latency_run": summary(lat),
                             "plan_s": round(plan["_plan_s"], 1), "plan_timing": plan["decisions"].get("timing", "")}
                        seen[key] = r
                        results.append(r)
                finally:
                    stop_process(proc)
    finally:
        link.teardown()
    report = {"cpu": cpu, "cores": os.cpu_count(), "edge_slowdown": EDGE_SLOWDOWN, "link_mode": link.mode, "results": results,
              "note": ("edge EMULATED (this CPU slowed 4x by padding each request to the plan's T_e); cloud = this CPU, "
                       "one thread; models with random weights report agreement with the unsplit model, not accuracy")}
    text = json.dumps(report, indent=2, sort_keys=True, default=float) + "\n"
    (a.out / "split_inference_runtime.json").write_text(text)
    print_table(results)
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    """The table quoted in docs/split-inference.md."""
    head = (f"{'model':<11}{'Mbit/s':>7} {'config':<13}{'cut':<28}{'thr pred':>9}{'thr meas':>9}{'Δ':>6}"
            f"{'lat pred':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'Δp50':>6}{'B/req':>9}  quality")
    print(head)
    print("-" * len(head))
    for r in results:
        t, l = r["throughput_run"], r["latency_run"]
        q = ""
        if t.get("accuracy") is not None:
            q = f"acc {t['accuracy']:.3f} (fp32 {t['accuracy_fp32_unsplit']:.3f})"
        elif t.get("agreement_with_fp32") is not None:
            q = f"agree {t['agreement_with_fp32']:.3f}"
        elif t.get("mean_cosine_to_fp32") is not None:
            q = f"cos {t['mean_cosine_to_fp32']:.4f}"
        if r["cache"]:
            q += f"; cache hits {t.get('cache_hit_rate') or 0:.2f} (acc {t.get('cache_accuracy') or 0:.3f})"
        name = r["config"] + ("+cache" if r["cache"] else "")
        cut = (t.get("cut") or "")[:27]
        print(f"{r['model']:<11}{r['mbps']:>7g} {name:<13}{cut:<28}{t['throughput_rps_predicted'] or 0:>9.3g}"
              f"{t['throughput_rps']:>9.3g}{rel(t['throughput_rps'], t['throughput_rps_predicted']):>6}"
              f"{l['latency_ms_predicted'] or 0:>9.4g}{l['latency_ms_p50']:>8.4g}{l['latency_ms_p90']:>8.4g}"
              f"{l['latency_ms_p99']:>8.4g}{rel(l['latency_ms_p50'], l['latency_ms_predicted']):>6}"
              f"{t['bytes_per_request']:>9.0f}  {q}")


if __name__ == "__main__":
    sys.exit(main())
