"""Run an emitted split-inference artifact: the cloud role, the edge role, or both as separate processes.

    python -m runtime.split_inference.run build/ --role cloud --listen 127.0.0.1:50551
    python -m runtime.split_inference.run build/ --role edge --connect 127.0.0.1:50551 --json receipt.json
    python -m runtime.split_inference.run build/            # embedded default: a cloud child process on a
                                                            # free loopback port, this process the edge

The edge drives the artifact's request stream (the held-out digits for digits-cnn, seeded inputs for
random-weight models, `data/requests.safetensors` / runtime.yaml `requests`) and returns the receipt.
Errors for people end the process with one line and exit code 2; the cloud logs a bad frame and goes on.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from core.errors import EXIT_BAD_INPUT, PeerError, PlannerError
from runtime.receipt import Receipt
from runtime.split_inference.artifact import Artifact, load_artifact
from runtime.split_inference.pipeline import EdgeOptions, EdgeRunner
from runtime.split_inference.receipt import build_receipt
from runtime.split_inference.transport import CloudService, start_cloud_server

log = logging.getLogger(__name__)

READY_LINE = "split-inference cloud listening on "
STATS_LINE = "split-inference cloud stats "
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ the request stream
def seeded_inputs(specs: Sequence[dict[str, Any]], seed: int, count: int) -> list[tuple[torch.Tensor, ...]]:
    """`count` requests of seeded inputs: uniform [0, 1) floats (images), integers in [0, high) (token ids)."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(count):
        args = []
        for s in specs:
            dtype = getattr(torch, s["dtype"])
            shape = tuple(int(x) for x in s["shape"])
            if dtype.is_floating_point:
                args.append(torch.rand(shape, generator=g).to(dtype))
            else:
                args.append(torch.randint(0, int(s.get("high", 1000)), shape, generator=g, dtype=dtype))
        out.append(tuple(args))
    return out


@dataclass
class RequestStream:
    """The inputs of every request (batch 1 each), their labels and the unsplit model's summaries."""

    inputs: list[tuple[torch.Tensor, ...]]
    labels: torch.Tensor | None
    reference: torch.Tensor | None
    description: str


def request_stream(art: Artifact, count: int | None = None) -> RequestStream:
    """The artifact's request stream, cut to `count` requests (cycled when `count` exceeds it)."""
    from safetensors.torch import load_file

    req = art.config.get("requests") or {}
    specs = art.config["inputs"]
    data = load_file(str(art.root / req["file"])) if req.get("file") else {}
    if req.get("kind") == "file":
        n_avail = int(data["input_0"].shape[0])
        inputs = [tuple(data[f"input_{j}"][i:i + 1] for j in range(len(specs))) for i in range(n_avail)]
    else:
        n_avail = int(req.get("count", 32))
        inputs = seeded_inputs(specs, int(req.get("seed", 0)), n_avail)
    n = count or n_avail
    idx = [i % n_avail for i in range(n)]
    labels = data.get("labels")
    reference = data.get("reference")
    return RequestStream([inputs[i] for i in idx],
                         labels[idx] if labels is not None else None,
                         reference[idx] if reference is not None else None,
                         str(req.get("description", "")))


# ------------------------------------------------------------------ roles
def serve_cloud(path: Path, listen: str, ready_out: Any = None, emulate: bool = False,
                one_way_delay_s: float = 0.0, emulate_cpu: float | None = None) -> None:
    """Load the cloud halves and serve until SIGTERM/SIGINT; prints READY_LINE + HOST:PORT when listening, and
    STATS_LINE + a JSON object of CloudStats when it stops."""
    art = load_artifact(path, role="cloud")
    service = CloudService(art, emulate=emulate, one_way_delay_s=one_way_delay_s, emulate_cpu=emulate_cpu)
    server, port = start_cloud_server(service, listen)
    host = listen.rsplit(":", 1)[0]
    out = ready_out or sys.stdout
    out.write(f"{READY_LINE}{host}:{port}\n")
    out.flush()
    stop = {"now": False}

    def handle(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    try:
        while not stop["now"]:
            time.sleep(0.1)
    finally:
        server.stop(grace=0.5)
        out.write(STATS_LINE + json.dumps(vars(service.stats)) + "\n")
        out.flush()
        log.info("cloud: %d stream(s), %d request(s), %d bad frame(s)", service.stats.streams, service.stats.requests,
                 service.stats.errors)


def run_edge(path: Path, connect: str | None, opts: EdgeOptions, count: int | None = None,
             art: Artifact | None = None) -> Receipt:
    """Drive the request stream through the edge halves and the cloud at `connect`; returns the receipt."""
    art = art or load_artifact(path, role="edge")
    stream = request_stream(art, count)
    runner = EdgeRunner(art, connect, opts)
    result = runner.run(stream.inputs)
    return build_receipt(art, result, opts.config, opts.link_label, stream.labels, stream.reference)


def spawn_cloud(path: Path, listen: str = "127.0.0.1:0", wrap: Sequence[str] = (), timeout_s: float = 60.0,
                threads: int | None = None, emulate: bool = False, one_way_delay_s: float = 0.0,
                emulate_cpu: float | None = None) -> tuple[subprocess.Popen, str]:
    """Start `--role cloud` as a child process (optionally under `wrap`, e.g. `ip netns exec NS`); returns it
    and the address it listens on once it says so."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [*wrap, sys.executable, "-m", "runtime.split_inference.run", str(path), "--role", "cloud", "--listen", listen]
    if threads:
        cmd += ["--threads", str(threads)]
    if emulate:
        cmd += ["--emulate-cloud"]
    if emulate_cpu is not None:
        cmd += ["--emulate-cpu", repr(emulate_cpu)]
    if one_way_delay_s > 0:
        cmd += ["--emulate-delay", repr(one_way_delay_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() or "").strip().splitlines()
            raise PeerError(f"the cloud process exited before listening ({err[-1] if err else f'code {proc.returncode}'})",
                            "run it alone with --role cloud to see why")
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(READY_LINE):
                return proc, line[len(READY_LINE):].strip()
    proc.kill()
    raise PeerError(f"the cloud process did not start listening within {timeout_s:g} s", "run it alone with --role cloud")


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_local(path: Path, opts: EdgeOptions, count: int | None = None, cloud_threads: int | None = None) -> Receipt:
    """Embedded default: the cloud as a child process on a free loopback port, this process the edge."""
    art = load_artifact(path, role="edge")
    needs_cloud = any(not p.all_edge for p in art.partitions)
    if not needs_cloud:
        return run_edge(path, None, opts, count, art)
    proc, addr = spawn_cloud(path, threads=cloud_threads, one_way_delay_s=opts.one_way_delay_s)
    try:
        return run_edge(path, addr, opts, count, art)
    finally:
        stop_process(proc)


# ------------------------------------------------------------------ command line
def parser() -> argparse.ArgumentParser:
    """The runtime's own command line (the planner CLI's `run` forwards to the same functions)."""
    ap = argparse.ArgumentParser(prog="python -m runtime.split_inference.run", description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--role", choices=("cloud", "edge"), help="one side only (default: both, as two local processes)")
    ap.add_argument("--listen", default="127.0.0.1:50551", help="cloud: HOST:PORT to listen on")
    ap.add_argument("--connect", help="edge: the cloud's HOST:PORT")
    ap.add_argument("--config", default="plan", help="plan, or a baseline's name (e.g. neurosurgeon)")
    ap.add_argument("--requests", type=int, help="number of requests (default: the artifact's stream)")
    ap.add_argument("--max-in-flight", type=int, default=3, help="requests between edge and answer (pipeline depth)")
    ap.add_argument("--cache", choices=("on", "off"), help="semantic cache early return (default: runtime.yaml)")
    ap.add_argument("--adapt", choices=("on", "off"), help="plan-table switching (default: on when the plan has a table)")
    ap.add_argument("--switch-samples", type=int, help="consecutive samples before a table switch")
    ap.add_argument("--no-emulate", action="store_true", help="do not pad the edge stage to the edge profile's T_e")
    ap.add_argument("--emulate-slowdown", type=float,
                    help="edge: emulate a device this many times slower than this CPU as it runs now (pad each "
                         "request to its own measured compute plus factor - 1 times its CPU time) instead of padding to the plan's T_e")
    ap.add_argument("--emulate-cpu", type=float, metavar="K",
                    help="either role: emulate a dedicated device K times slower than this CPU's core: hold each "
                         "request's compute for K x its CPU time here (waits for a shared core not counted; labelled)")
    ap.add_argument("--emulate-cloud", action="store_true",
                    help="cloud: pad each request's cloud stage to the plan's T_c (emulates a slower cloud)")
    ap.add_argument("--emulate-delay", type=float, default=0.0,
                    help="one-way propagation delay (s) emulated in the transport on the messages this side receives "
                         "(both sides need it; labelled emulation, for kernels without netem)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds without an answer before giving up")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--reconnect-timeout", type=float, default=30.0)
    ap.add_argument("--threads", type=int, help="torch threads of this process")
    ap.add_argument("--link-label", default="", help="what carries the bytes, for the receipt")
    ap.add_argument("--json", type=Path, help="write the receipt JSON here")
    ap.add_argument("--debug", action="store_true")
    return ap


def options_from_args(a: argparse.Namespace) -> EdgeOptions:
    """EdgeOptions from parsed arguments."""
    if a.emulate_slowdown is not None and not a.emulate_slowdown >= 1.0:
        raise PlannerError(f"--emulate-slowdown {a.emulate_slowdown:g} would speed this CPU up",
                           "give a factor of at least 1")
    if a.emulate_cpu is not None and not a.emulate_cpu >= 1.0:
        raise PlannerError(f"--emulate-cpu {a.emulate_cpu:g} would speed this CPU up", "give a factor of at least 1")
    return EdgeOptions(config=a.config, max_in_flight=a.max_in_flight, emulate=not a.no_emulate,
                       emulate_slowdown=a.emulate_slowdown, emulate_cpu=a.emulate_cpu,
                       cache=None if a.cache is None else a.cache == "on",
                       adapt=None if a.adapt is None else a.adapt == "on", switch_samples=a.switch_samples,
                       timeout_s=a.timeout, connect_timeout_s=a.connect_timeout, reconnect_timeout_s=a.reconnect_timeout,
                       one_way_delay_s=a.emulate_delay,
                       link_label=a.link_label or ("gRPC over loopback (unshaped)" if a.role != "edge" else
                                                   f"gRPC to {a.connect}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING, format="%(levelname)s %(message)s")
    # one torch thread per process by default: the edge and the cloud are separate processes, and on a
    # shared 2-core machine two OpenMP threads per process made a digits-cnn forward 200x slower (40 ms
    # instead of 0.2 ms) from spin-waiting on a busy core
    torch.set_num_threads(a.threads or 1)
    try:
        if a.role == "cloud":
            if a.emulate_cpu is not None and not a.emulate_cpu >= 1.0:
                raise PlannerError(f"--emulate-cpu {a.emulate_cpu:g} would speed this CPU up", "give a factor of at least 1")
            serve_cloud(a.artifact, a.listen, emulate=a.emulate_cloud, one_way_delay_s=a.emulate_delay,
                        emulate_cpu=a.emulate_cpu)
            return 0
        opts = options_from_args(a)
        if a.role == "edge":
            if not a.connect:
                raise PlannerError("--role edge needs --connect HOST:PORT", "pass the cloud's address")
            receipt = run_edge(a.artifact, a.connect, opts, a.requests)
        else:
            receipt = run_local(a.artifact, opts, a.requests)
    except PlannerError as exc:
        if a.debug:
            raise
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return EXIT_BAD_INPUT
    text = receipt.to_json()
    if a.json:
        from core.atomic_io import write_text_atomic

        write_text_atomic(a.json, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
