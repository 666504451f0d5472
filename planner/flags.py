"""Command-line flags as data: families declare them, the spine registers and parses them.

A `Flag` names its kind of value; `read_flags` turns the strings argparse collected into typed values
(bytes, bits/s, seconds, fractions, counts) with the unit rules of `planner.units`, range checks, and a
one-line error naming the flag and the accepted forms. argparse itself only collects strings
(`default=None`), so the spine knows which flags the user actually gave: a flag of another family is
an error, not silently ignored.

Example:
    >>> f = Flag("--rtt", "duration", "round-trip time of the link", default=0.02, minimum=0.0)
    >>> parse_value(f, "30ms")
    0.03
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from core.errors import PlannerError
from core.units import (
    DURATION_FORMS,
    RATE_FORMS,
    SIZE_FORMS,
    parse_bytes,
    parse_link,
    parse_percent,
    parse_rate_bits,
    parse_seconds,
)

KINDS = ("switch", "int", "float", "str", "path", "choice", "bytes", "bytes_or_share", "rate", "rate_range",
         "duration", "percent", "workload", "data", "graph")


@dataclass(frozen=True)
class Flag:
    """One flag: its name, kind of value, help, typed default and bounds (inclusive unless `*_exclusive`)."""

    name: str
    kind: str
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    metavar: str | None = None
    short: str | None = None          # e.g. "-o"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"flag {self.name}: unknown kind {self.kind}")

    @property
    def dest(self) -> str:
        """The attribute name argparse uses."""
        return self.name.lstrip("-").replace("-", "_")

    def forms(self) -> str:
        """The accepted forms, for help and errors."""
        return {"bytes": SIZE_FORMS, "bytes_or_share": f"{SIZE_FORMS}, or a share like 50%",
                "rate": RATE_FORMS, "rate_range": f"{RATE_FORMS}, or a range like 1mbps..100mbps",
                "duration": DURATION_FORMS, "percent": "a percentage like 1% or 0.5%",
                "int": "a whole number", "float": "a number",
                "workload": "SUITE:TASK[,TASK...][@LENGTH]:COUNT, e.g. ruler:niah,kv,vt@2k:32, or a .jsonl file",
                "data": "NAME[:KEY=VALUE,...], e.g. instruct:clients=10,alpha=0.3",
                "graph": "NAME[:KEY=VALUE,...], e.g. csbm:nodes=2000,homophily=0.8,clients=10"}.get(self.kind, "")


def _bounds_text(f: Flag, unit: str) -> str:
    parts = []
    if f.minimum is not None:
        parts.append(f"{'above' if f.minimum_exclusive else 'at least'} {f.minimum:g}{unit}")
    if f.maximum is not None:
        parts.append(f"{'below' if f.maximum_exclusive else 'at most'} {f.maximum:g}{unit}")
    return " and ".join(parts)


def _check_range(f: Flag, value: float, text: str, scale: float = 1.0, unit: str = "") -> None:
    """Bounds are stored in SI units; `scale`/`unit` render them in the unit users read (e.g. % for fractions)."""
    lo, hi = f.minimum, f.maximum
    bad = (lo is not None and (value < lo or (f.minimum_exclusive and value == lo))) or \
          (hi is not None and (value > hi or (f.maximum_exclusive and value == hi)))
    if bad:
        shown = Flag(f.name, f.kind, f.help, minimum=None if lo is None else lo * scale,
                     maximum=None if hi is None else hi * scale, minimum_exclusive=f.minimum_exclusive,
                     maximum_exclusive=f.maximum_exclusive)
        raise PlannerError(f"{f.name} {text} is out of range", f"pass a value {_bounds_text(shown, unit)}")


def parse_value(f: Flag, text: Any) -> Any:
    """The typed value of one flag (raises PlannerError naming the flag and the accepted forms)."""
    if f.kind == "switch":
        return bool(text)
    text = str(text)
    if f.kind == "str" or f.kind == "path":
        if not text.strip():
            raise PlannerError(f"{f.name} is empty", f"pass a value for {f.name}")
        return text
    if f.kind == "choice":
        if text not in f.choices:
            raise PlannerError(f"{f.name} '{text}' is not one of the choices", f"use one of: {', '.join(f.choices)}")
        return text
    if f.kind == "int":
        try:
            value = int(text, 10)
        except ValueError:
            raise PlannerError(f"{f.name} '{text}' is not a whole number", f"pass e.g. {f.name} {int(f.default or 1)}") from None
        _check_range(f, value, text)
        return value
    if f.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise PlannerError(f"{f.name} '{text}' is not a number", f"pass e.g. {f.name} 1.0") from None
        if not math.isfinite(value):
            raise PlannerError(f"{f.name} '{text}' is not a finite number", "pass a finite number")
        _check_range(f, value, text)
        return value
    if f.kind == "bytes":
        value = parse_bytes(text, f.name)
        _check_range(f, value, text, 1 / 2**30, " GiB")
        return value
    if f.kind == "bytes_or_share":
        if text.strip().endswith("%"):
            share = parse_percent(text, f.name)
            if not 0 <= share <= 1:
                raise PlannerError(f"{f.name} {text} is not a share between 0% and 100%", "pass e.g. 50% or a size like 12GiB")
            return ("share", share)
        return ("bytes", parse_bytes(text, f.name))
    if f.kind == "rate":
        value = parse_rate_bits(text, f.name)
        _check_range(f, value, text, 1e-6, " Mbit/s")
        return value
    if f.kind == "rate_range":
        rate, rng = parse_link(text, f.name)
        for v in ((rate,) if rng is None else rng):
            _check_range(f, v, text, 1e-6, " Mbit/s")
        return rate, rng
    if f.kind == "duration":
        value = parse_seconds(text, f.name)
        _check_range(f, value, text, 1e3, " ms")
        return value
    if f.kind == "percent":
        value = parse_percent(text, f.name)
        _check_range(f, value, text, 100.0, "%")
        return value
    if f.kind in ("workload", "data", "graph"):   # test beds (docs/testbeds.md): parsed and checked, not built
        from testbeds import specs

        return {"workload": specs.parse_workload, "data": specs.parse_data, "graph": specs.parse_graph}[f.kind](text, f.name)
    raise AssertionError(f.kind)


@dataclass
class FlagValues:
    """Typed values of every registered flag, and which ones the user gave."""

    values: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()          # flag names, e.g. "--rtt"

    def __getitem__(self, dest: str) -> Any:
        return self.values[dest]

    def get(self, dest: str, default: Any = None) -> Any:
        """The value of a flag by its dest name (`rtt` for `--rtt`)."""
        return self.values.get(dest, default)


def merge_flags(groups: Iterable[tuple[str, Iterable[Flag]]]) -> dict[str, tuple[Flag, tuple[str, ...]]]:
    """One declaration per flag name across families: {name: (flag, owners)}. Families may share a flag
    (e.g. `--clients`) only with the same kind and default; otherwise the registry is inconsistent (a bug)."""
    out: dict[str, tuple[Flag, tuple[str, ...]]] = {}
    for owner, flags in groups:
        for f in flags:
            if f.name in out:
                prev, owners = out[f.name]
                if (prev.kind, prev.default, prev.choices) != (f.kind, f.default, f.choices):
                    raise ValueError(f"flag {f.name} is declared differently by {owners} and {owner}")
                out[f.name] = (prev, owners + (owner,))
            else:
                out[f.name] = (f, (owner,))
    return out


def add_flags(group: Any, merged: Mapping[str, tuple[Flag, tuple[str, ...]]], show_owner: bool = True) -> None:
    """Register merged flags on an argparse group: strings in, default None (typed later by `read_flags`)."""
    for name, (f, owners) in merged.items():
        names = [f.short, name] if f.short else [name]
        help_text = f.help
        if f.kind not in ("switch", "int", "float", "str", "path", "choice") and f.default is None:
            help_text += f" ({f.forms()})"
        if show_owner:
            help_text += f" [{', '.join(owners)}]"
        help_text = help_text.replace("%", "%%")
        if f.kind == "switch":
            group.add_argument(*names, dest=f.dest, action="store_const", const=True, default=None, help=help_text)
        else:
            group.add_argument(*names, dest=f.dest, default=None, help=help_text, metavar=f.metavar or f.dest.upper())


def read_flags(args: argparse.Namespace, flags: Iterable[Flag]) -> FlagValues:
    """Typed values (defaults where not given) and the set of given flag names."""
    values: dict[str, Any] = {}
    given: set[str] = set()
    for f in flags:
        raw = getattr(args, f.dest, None)
        if raw is None:
            values[f.dest] = f.default
        else:
            given.add(f.name)
            values[f.dest] = parse_value(f, raw)
    return FlagValues(values, frozenset(given))
