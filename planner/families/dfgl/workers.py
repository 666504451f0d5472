"""The dfgl workers file: per worker a hardware profile, and a time-varying link-rate/latency matrix.

    workers:
      - {id: w0, hardware: raspberry_pi5_8gb}
      - {id: w1, hardware: jetson_orin_nano_8gb}
    links:
      rate: 20mbps            # every pair, unless overridden
      latency: 5ms
      pairs:                  # [a, b, rate, latency]; rate 0mbps = no link
        - [w0, w1, 2mbps, 40ms]
    events:                   # from round `round` on, a pair's link changes (links that degrade mid-run)
      - {round: 10, pair: [w0, w1], rate: 0.5mbps, latency: 80ms}

`gen:N[:SEED]` generates N workers with log-normal rates (5..50 mbps) and one link degrading mid-run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from core.errors import PlannerError, reason_of
from core.p2p_topology import is_connected
from core.units import parse_rate_bits, parse_seconds

GEN_HARDWARE = ("raspberry_pi5_8gb", "jetson_orin_nano_8gb", "phone_midrange_8gb", "cpu_server_xeon")


@dataclass(frozen=True)
class Workers:
    """Worker ids (file order), their hardware names and profiles, link rates (R, m, m) bits/s and latencies s."""

    source: str
    ids: tuple[str, ...]
    hardware: tuple[str, ...]
    profiles: tuple[Any, ...]
    rate_bps: np.ndarray
    latency_s: np.ndarray

    def fingerprint(self) -> str:
        """sha256 over ids, hardware and the link matrices."""
        blob = json.dumps({"ids": self.ids, "hw": self.hardware, "rate": self.rate_bps.round(3).tolist(),
                           "lat": self.latency_s.round(9).tolist()}, sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


def _bad(src: str, what: str, fix: str) -> PlannerError:
    return PlannerError(f"--workers {src}: {what}", fix)


def generate(n: int, seed: int, rounds: int) -> dict:
    """A generated workers mapping (the file layout) for `gen:N[:SEED]`."""
    rng = np.random.default_rng(seed)
    ids = [f"w{i}" for i in range(n)]
    pairs = []
    for a in range(n):
        for b in range(a + 1, n):
            rate = float(np.exp(rng.uniform(np.log(5), np.log(50))))
            pairs.append([ids[a], ids[b], f"{rate:.2f}mbps", f"{rng.uniform(2, 30):.1f}ms"])
    events = [{"round": rounds // 2, "pair": [ids[0], ids[1 % n]], "rate": "0.5mbps", "latency": "80ms"}] if n > 1 else []
    return {"workers": [{"id": w, "hardware": GEN_HARDWARE[i % len(GEN_HARDWARE)]} for i, w in enumerate(ids)],
            "links": {"rate": "20mbps", "latency": "5ms", "pairs": pairs}, "events": events}


def parse_workers(text: str, rounds: int, resolve: Callable[[str], Any]) -> Workers:
    """Read `--workers FILE|gen:N[:SEED]` into a Workers record for `rounds` rounds; one-line errors."""
    src = text
    if text.startswith("gen:"):
        parts = text[4:].split(":")
        try:
            n = int(parts[0])
            seed = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise _bad(src, "is not gen:N[:SEED]", "write e.g. --workers gen:8 or gen:8:1") from None
        if n < 2:
            raise _bad(src, "asks for fewer than 2 workers", "decentralised training needs at least 2 workers")
        data = generate(n, seed, rounds)
    else:
        path = Path(text)
        if not path.is_file():
            raise _bad(src, "the file does not exist", "check the path, or generate workers with --workers gen:8")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise _bad(src, f"is not readable YAML ({reason_of(exc)})", "fix the YAML syntax") from exc
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list) or len(data["workers"]) < 2:
        raise _bad(src, "needs a 'workers' list of at least 2 entries", "see docs/dfgl.md for the layout")
    ids, hw = [], []
    for i, w in enumerate(data["workers"]):
        if not isinstance(w, dict) or "id" not in w:
            raise _bad(src, f"worker #{i} has no id", "give every worker an 'id' and a 'hardware'")
        ids.append(str(w["id"]))
        hw.append(str(w.get("hardware", "cpu_server_xeon")))
    if len(set(ids)) != len(ids):
        raise _bad(src, "two workers share an id", "give every worker a distinct id")
    profiles = tuple(resolve(h) for h in hw)
    m, index = len(ids), {w: i for i, w in enumerate(ids)}
    links = data.get("links") or {}
    if not isinstance(links, dict):
        raise _bad(src, "'links' is not a mapping", "write links: {rate: 20mbps, latency: 5ms, pairs: [...]}")

    def rate(v: Any, where: str) -> float:
        return parse_rate_bits(str(v), f"--workers {src}: {where} rate")

    def lat(v: Any, where: str) -> float:
        return parse_seconds(str(v), f"--workers {src}: {where} latency")

    r0 = np.full((m, m), rate(links.get("rate", "20mbps"), "default"))
    l0 = np.full((m, m), lat(links.get("latency", "5ms"), "default"))

    def pair_index(pair: Any, where: str) -> tuple[int, int]:
        if not isinstance(pair, (list, tuple)) or len(pair) < 2 or str(pair[0]) not in index or str(pair[1]) not in index:
            raise _bad(src, f"{where} names an unknown worker pair {pair}", f"use ids from: {', '.join(ids[:8])}")
        a, b = index[str(pair[0])], index[str(pair[1])]
        if a == b:
            raise _bad(src, f"{where} links worker {ids[a]} to itself", "name two different workers")
        return a, b

    for n_, pr in enumerate(links.get("pairs") or []):
        a, b = pair_index(pr, f"links.pairs #{n_}")
        if len(pr) < 3:
            raise _bad(src, f"links.pairs #{n_} has no rate", "write [a, b, rate, latency], e.g. [w0, w1, 5mbps, 20ms]")
        r0[a, b] = r0[b, a] = rate(pr[2], f"link {ids[a]}-{ids[b]}")
        if len(pr) > 3:
            l0[a, b] = l0[b, a] = lat(pr[3], f"link {ids[a]}-{ids[b]}")
    np.fill_diagonal(r0, 0.0)
    np.fill_diagonal(l0, 0.0)
    rates = np.repeat(r0[None], rounds, axis=0)
    lats = np.repeat(l0[None], rounds, axis=0)
    for n_, ev in enumerate(data.get("events") or []):
        if not isinstance(ev, dict) or "round" not in ev or "pair" not in ev:
            raise _bad(src, f"events #{n_} needs 'round' and 'pair'", "write {round: 10, pair: [w0, w1], rate: 1mbps}")
        a, b = pair_index(ev["pair"], f"events #{n_}")
        k = int(ev["round"])
        if k < 0:
            raise _bad(src, f"events #{n_} has a negative round", "rounds count from 0")
        if "rate" in ev:
            rates[k:, a, b] = rates[k:, b, a] = rate(ev["rate"], f"event #{n_}")
        if "latency" in ev:
            lats[k:, a, b] = lats[k:, b, a] = lat(ev["latency"], f"event #{n_}")
    for k in range(rounds):
        if not is_connected((rates[k] > 0).astype(np.int8)):
            raise _bad(src, f"the links with a positive rate do not connect every worker in round {k}",
                       "give at least a spanning set of pairs a positive rate")
    return Workers(src, tuple(ids), tuple(hw), profiles, rates, lats)
