"""The `--nodes` file: serving nodes with hardware profiles, which may hold drafters, which verifies, and links.

    nodes:
      - {name: hub, hardware: jetson_agx_orin_32gb, role: verifier}
      - {name: edge1, hardware: jetson_orin_nano_8gb, role: drafter}
      - {name: edge2, hardware: my_board.yaml, role: drafter}     # a measured profile file works too
    links:
      - {between: [hub, edge1], rate: 1gbps, delay: 1ms}
      - {between: [hub, edge2], rate: 100mbps, delay: 5ms}

The topology is a star around the verifier: every drafter node needs a link to it (rate and delay with units).
Bad input ends in one line naming the problem and the fix (PlannerError, exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import PlannerError, reason_of
from core.units import parse_rate_bits, parse_seconds


@dataclass(frozen=True)
class Node:
    """One node: name, hardware profile (resolved), role (verifier | drafter)."""

    name: str
    hardware: Any
    role: str


@dataclass(frozen=True)
class Topology:
    """The verifier, the drafter nodes (sorted by name) and each drafter node's link to the verifier."""

    verifier: Node
    drafters: tuple[Node, ...]
    rate_bps: dict[str, float]
    delay_s: dict[str, float]
    source: str


def load_nodes(path: str) -> Topology:
    """Parse and check a nodes file."""
    from planner.registry import resolve_hardware

    p = Path(path)
    where = f"--nodes {path}"
    if not p.is_file():
        raise PlannerError(f"{where}: the nodes file does not exist", "check the path (docs/spec-serve.md shows the layout)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"{where} is not readable YAML ({reason_of(exc)})", "fix the file (docs/spec-serve.md)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise PlannerError(f"{where} has no `nodes:` list", "list the nodes, e.g. `nodes: [{name: hub, hardware: "
                                                          "l4_24gb, role: verifier}, ...]`")
    nodes: dict[str, Node] = {}
    for i, n in enumerate(data["nodes"]):
        if not isinstance(n, dict) or not n.get("name") or not n.get("hardware"):
            raise PlannerError(f"{where}: node {i + 1} needs a name and a hardware profile",
                               "write e.g. {name: edge1, hardware: jetson_orin_nano_8gb, role: drafter}")
        name = str(n["name"])
        if name in nodes:
            raise PlannerError(f"{where}: node '{name}' is listed twice", "give every node its own name")
        role = str(n.get("role", "drafter"))
        if role not in ("verifier", "drafter"):
            raise PlannerError(f"{where}: node '{name}' has role '{role}'", "use role: verifier or role: drafter")
        hw = resolve_hardware(str(n["hardware"]), f"{where}, node {name}")
        nodes[name] = Node(name, hw, role)
    verifiers = [n for n in nodes.values() if n.role == "verifier"]
    if not verifiers:
        raise PlannerError(f"{where} names no verifier", "mark the node that holds the target model with role: verifier")
    if len(verifiers) > 1:
        raise PlannerError(f"{where} names {len(verifiers)} verifiers ({', '.join(v.name for v in verifiers)})",
                           "keep role: verifier on one node (CoSine has one verification server)")
    ver = verifiers[0]
    drafters = tuple(sorted((n for n in nodes.values() if n.role == "drafter"), key=lambda n: n.name))
    rate: dict[str, float] = {}
    delay: dict[str, float] = {}
    for j, link in enumerate(data.get("links") or []):
        if not isinstance(link, dict) or not isinstance(link.get("between"), list) or len(link["between"]) != 2:
            raise PlannerError(f"{where}: link {j + 1} needs `between: [A, B]`",
                               "write e.g. {between: [hub, edge1], rate: 1gbps, delay: 1ms}")
        a, b = (str(x) for x in link["between"])
        for x in (a, b):
            if x not in nodes:
                raise PlannerError(f"{where}: link {j + 1} names an unknown node '{x}'",
                                   f"use one of: {', '.join(sorted(nodes))}")
        if ver.name not in (a, b):
            continue            # drafter-to-drafter links are not used: fusion goes through the hub
        other = b if a == ver.name else a
        if "rate" not in link or "delay" not in link:
            raise PlannerError(f"{where}: link {a}-{b} needs a rate and a delay",
                               "write e.g. rate: 1gbps, delay: 1ms")
        rate[other] = parse_rate_bits(str(link["rate"]), f"{where}, link {a}-{b} rate")
        delay[other] = parse_seconds(str(link["delay"]), f"{where}, link {a}-{b} delay")
        if rate[other] <= 0:
            raise PlannerError(f"{where}: link {a}-{b} has rate 0", "give a positive rate, e.g. 100mbps")
    missing = [n.name for n in drafters if n.name not in rate]
    if missing:
        raise PlannerError(f"{where}: drafter node '{missing[0]}' is unreachable (no link to the verifier "
                           f"{ver.name})", f"add a link {{between: [{ver.name}, {missing[0]}], rate: 1gbps, delay: 1ms}}"
                                           " or drop the node")
    return Topology(ver, drafters, rate, delay, str(p))


def node_scale(hw: Any, host_bytes_per_s: float) -> float:
    """Emulated seconds per CPU second of this machine on `hw`: decoding a small LM is memory-bound, so the
    ratio of this machine's measured copy bandwidth to the node's effective bandwidth (EMULATION constant)."""
    bw = float(hw.memory_bandwidth_bytes_per_s) * float(getattr(hw, "efficiency_memory", 1.0) or 1.0)
    if bw <= 0:
        raise PlannerError(f"hardware {hw.name} has no memory bandwidth", "use a profile with memory_bandwidth_bytes_per_s")
    return host_bytes_per_s / bw
