"""Start one process per region around an in-process torchft lighthouse, watch them, collect their logs.

A region that dies (killed, crashed) stops the run: the others are terminated by pid and the caller gets
`RegionFailure` with one line naming the region and its exit status; a run past its time limit likewise.
Nothing waits forever.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional


class RegionFailure(RuntimeError):
    """A region process died or the run overran its time limit (one line)."""


def run_regions(job: dict[str, Any], time_limit_s: float = 600.0,
                on_start: Optional[Callable[[list[subprocess.Popen]], None]] = None,
                then: Optional[Callable[[list[list[dict[str, Any]]]], Optional[list[dict[str, Any]]]]] = None,
                ) -> list[list[dict[str, Any]]]:
    """Run `job` with job['regions'] processes; returns logs[run][region]. `job['runs']` (optional) lists
    per-configuration overrides run one after the other by the same processes. `then` (optional) is called
    with each batch's logs and returns the next batch of overrides for the same processes (None: stop), so a
    caller can decide later runs from earlier ones (the benchmark plans from a calibration run) without new
    processes; the logs returned are every batch's, in order.

    Every run gets its own lighthouse, as separate jobs would. With one lighthouse for all of them, the previous
    run's replicas still count as heartbeating for the lighthouse's heartbeat timeout (5 s) after they shut down,
    and its split-brain rule (more than half of the heartbeating replicas must join) holds the next run's first
    quorum until they expire: measured 4.8 s at the first sync of every run after the first."""
    os.environ.setdefault("RUST_LOG", "error")      # the lighthouse logs every quorum at info level
    from torchft._torchft import LighthouseServer

    m = int(job["regions"])
    lighthouses: list[Any] = []

    def own_lighthouses(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`runs` with a fresh lighthouse's address in each."""
        out = []
        for over in runs:
            lighthouses.append(LighthouseServer(bind="[::]:0", min_replicas=m, join_timeout_ms=100))
            out.append({**over, "lighthouse": lighthouses[-1].address()})
        return out

    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="geo-train-") as work:
            w = Path(work)
            job = {**job, "runs": own_lighthouses(job.get("runs") or [{}]),
                   **({"batch_dir": str(w)} if then else {})}
            (w / "job.json").write_text(json.dumps(job), encoding="utf-8")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RUST_LOG": "error",
                   "TORCHFT_LOG_LEVEL": "error"}
            root = Path(__file__).resolve().parents[2]
            for r in range(m):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "runtime.geo_train.region", str(w / "job.json"), str(r), str(w / f"region{r}.json")],
                    cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(w / f"region{r}.err", "w")))
            if on_start is not None:
                on_start(procs)
            t0 = time.monotonic()
            batch, out = 0, []
            while True:
                names = [w / (f"region{r}.json" if batch == 0 else f"region{r}.b{batch}.json") for r in range(m)]
                _wait(procs, w, t0, time_limit_s, lambda: all(n.exists() for n in names))
                per_region = [json.loads(n.read_text(encoding="utf-8")) for n in names]
                logs = [[per_region[r][i] for r in range(m)] for i in range(len(per_region[0]))]
                out += logs
                nxt = then(logs) if then else None
                if nxt is None:
                    break
                batch += 1
                tmp = w / f"batch{batch}.tmp"
                tmp.write_text(json.dumps(own_lighthouses(nxt)), encoding="utf-8")
                os.replace(tmp, w / f"batch{batch}.json")
            if then:
                (w / "stop").write_text("", encoding="utf-8")
            _wait(procs, w, t0, time_limit_s, lambda: all(p.poll() == 0 for p in procs))
            return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for lighthouse in lighthouses:
            lighthouse.shutdown()


def _wait(procs: list[subprocess.Popen], work: Path, t0: float, time_limit_s: float,
          done: Callable[[], bool]) -> None:
    """Poll until `done()`; RegionFailure (one line) when a region dies or the time limit passes first."""
    while True:
        codes = [p.poll() for p in procs]
        bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            r, c = bad[0]
            how = f"killed by signal {-c}" if c < 0 else f"exit status {c}"
            tail = _last_line(work / f"region{r}.err")
            raise RegionFailure(f"region {r} stopped ({how}){': ' + tail if tail and c > 0 else ''}; "
                                f"the other regions were stopped")
        if done():
            return
        if time.monotonic() - t0 > time_limit_s:
            raise RegionFailure(f"the run passed its {time_limit_s:g} s limit; every region was stopped")
        time.sleep(0.05)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
